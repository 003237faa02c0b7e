// Package nodesim plays, inside a local e2e cluster, the parts of the cache path that need a
// kubelet or a CSI driver, which kwok does not provide:
//
//   - a CSI provisioner and snapshot controller for the driver sim.warmpool.io: PVs are
//     directories under <root>/volumes, snapshots are directories under <root>/snapshots,
//     and the objects (PV with a claimRef, VolumeSnapshotContent, statuses) are the ones a
//     real external-provisioner and snapshot-controller write;
//   - the kubelet for cache pods (label warmpool.io/cache-op save|restore): it runs the REAL
//     warmpool binary with the container's args, mapping each volume mount to a directory
//     (node hostPaths under <root>/nodes/<node>), and writes the pod status a kubelet would;
//   - the Dagger engine for engine pods: a fresh or warm cache tree, the clean-shutdown
//     record in its SQLite database and the flock on its lock file while it runs.
//
// Everything it does is recorded as Events (Events, Count) so tests can assert what happened
// on the "nodes". It needs no kubelet, container runtime or root beyond what the copier needs.
package nodesim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"warmpool.io/warmpool/volumes/copier"
)

const (
	// Driver is the CSI driver name nodesim answers for (StorageClass provisioner and
	// VolumeSnapshotClass driver).
	Driver = "sim.warmpool.io"
	// ClassName is the StorageClass and VolumeSnapshotClass the cluster creates for it.
	ClassName = "warmpool-sim"
)

// Options configure Start.
type Options struct {
	// Config reaches the cluster's apiserver.
	Config *rest.Config
	// Root holds nodes/, volumes/, snapshots/ and logs/.
	Root string
	// WarmpoolBinary is the built warmpool command that cache pods run.
	WarmpoolBinary string
	// FixturesDir holds clean/ and unclean/, engine state dirs whose dagql-cache.db records
	// clean_shutdown 1 and 0 (volumes/copier/testdata/sqlite). Default: found from the
	// working directory's module root.
	FixturesDir string
	// Log receives one line per action and the manager's logs; nil discards them.
	Log io.Writer
}

// Sim is a running node simulator.
type Sim struct {
	root   string
	bin    string
	client client.Client
	logf   func(format string, args ...any)

	cleanDB, uncleanDB []byte

	// ctx ends at Stop.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan error
	// jobs tracks running cache processes, so Stop waits for them.
	jobs sync.WaitGroup

	mu      sync.Mutex
	events  []Event
	kubelet map[string]*cacheRun   // pod UID -> run
	engines map[string]*engineProc // namespace/name -> running engine
}

// EventKind names what happened.
type EventKind string

// What nodesim records.
const (
	VolumeProvisioned EventKind = "VolumeProvisioned" // Object: PV, Detail: source snapshot handle if any
	VolumeDeleted     EventKind = "VolumeDeleted"     // Object: PV
	SnapshotReady     EventKind = "SnapshotReady"     // Object: namespace/VolumeSnapshot, Detail: handle
	SnapshotDeleted   EventKind = "SnapshotDeleted"   // Object: namespace/VolumeSnapshot, Detail: handle
	CacheJobStarted   EventKind = "CacheJobStarted"   // Object: namespace/pod, Detail: op
	CacheJobStalled   EventKind = "CacheJobStalled"   // Object: namespace/pod, Detail: op (AnnotationStallCacheJobs)
	CacheJobFinished  EventKind = "CacheJobFinished"  // Object: namespace/pod, Detail: op and result, ExitCode
	EngineColdStart   EventKind = "EngineColdStart"   // Object: namespace/pod, Detail: why not warm
	EngineWarmStart   EventKind = "EngineWarmStart"   // Object: namespace/pod, Detail: "restored" if from a copy
	EngineStopped     EventKind = "EngineStopped"     // clean exit on pod deletion
	EngineKilled      EventKind = "EngineKilled"      // pod vanished without a graceful stop
)

// Event is one thing nodesim did.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Node     string
	Object   string
	Detail   string
	ExitCode int
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s", e.Time.Format("15:04:05.000"), e.Kind)
	if e.Node != "" {
		s += " node=" + e.Node
	}
	if e.Object != "" {
		s += " " + e.Object
	}
	if e.Kind == CacheJobFinished {
		s += fmt.Sprintf(" exit=%d", e.ExitCode)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Scheme has core Kubernetes and VolumeSnapshot v1 types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(snapshotv1.AddToScheme(s))
	return s
}

// Start starts the simulator's controllers and returns once their caches have synced.
func Start(ctx context.Context, opts Options) (*Sim, error) {
	if opts.Config == nil || opts.Root == "" || opts.WarmpoolBinary == "" {
		return nil, errors.New("nodesim: Config, Root and WarmpoolBinary are required")
	}
	if opts.FixturesDir == "" {
		root, err := moduleRoot()
		if err != nil {
			return nil, fmt.Errorf("nodesim: locating fixtures: %w", err)
		}
		opts.FixturesDir = filepath.Join(root, "volumes", "copier", "testdata", "sqlite")
	}
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	s := &Sim{
		root:    opts.Root,
		bin:     opts.WarmpoolBinary,
		kubelet: map[string]*cacheRun{},
		engines: map[string]*engineProc{},
		done:    make(chan error, 1),
	}
	var logMu sync.Mutex
	s.logf = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(out, "nodesim: "+format+"\n", args...)
	}
	var err error
	if s.cleanDB, err = os.ReadFile(filepath.Join(opts.FixturesDir, "clean", copier.EngineStateDB)); err != nil {
		return nil, fmt.Errorf("nodesim: reading the clean engine fixture: %w", err)
	}
	if s.uncleanDB, err = os.ReadFile(filepath.Join(opts.FixturesDir, "unclean", copier.EngineStateDB)); err != nil {
		return nil, fmt.Errorf("nodesim: reading the unclean engine fixture: %w", err)
	}
	for _, d := range []string{"nodes", "volumes", "snapshots", "logs"} {
		if err := os.MkdirAll(filepath.Join(s.root, d), 0o755); err != nil {
			return nil, fmt.Errorf("nodesim: %w", err)
		}
	}

	logger := logr.Discard()
	if opts.Log != nil {
		logger = zap.New(zap.WriteTo(opts.Log))
	}
	skip := true
	mgr, err := ctrl.NewManager(opts.Config, ctrl.Options{
		Scheme:                 Scheme(),
		Logger:                 logger.WithName("nodesim"),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several clusters (and so simulators) may run in one test process.
		Controller: ctrlconfig.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		return nil, fmt.Errorf("nodesim: creating manager: %w", err)
	}
	s.client = mgr.GetClient()
	if err := s.register(mgr); err != nil {
		return nil, fmt.Errorf("nodesim: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.ctx, s.cancel = runCtx, cancel
	go func() { s.done <- mgr.Start(runCtx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		cancel()
		<-s.done
		return nil, errors.New("nodesim: informer caches did not sync")
	}
	s.logf("started (root %s)", s.root)
	return s, nil
}

// Stop stops the controllers, kills running cache processes and waits for them, and
// releases the engines' locks (as if every node lost power).
func (s *Sim) Stop() error {
	s.cancel()
	err := <-s.done
	s.jobs.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, e := range s.engines {
		e.release()
		delete(s.engines, key)
	}
	return err
}

// Root is the simulator's root directory.
func (s *Sim) Root() string { return s.root }

// NodePath is where a node's hostPath lives on this machine.
func (s *Sim) NodePath(node, hostPath string) string {
	return filepath.Join(s.root, "nodes", node, filepath.Clean("/"+hostPath))
}

// VolumePath is the directory behind a PV provisioned by nodesim (by its volume handle,
// which is the PV name).
func (s *Sim) VolumePath(handle string) string { return filepath.Join(s.root, "volumes", handle) }

// SnapshotPath is the directory behind a snapshot handle.
func (s *Sim) SnapshotPath(handle string) string {
	return filepath.Join(s.root, "snapshots", handle)
}

// Events returns everything recorded so far, oldest first.
func (s *Sim) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// Count counts the events of kind on node ("" for every node).
func (s *Sim) Count(kind EventKind, node string) int {
	n := 0
	for _, e := range s.Events() {
		if e.Kind == kind && (node == "" || e.Node == node) {
			n++
		}
	}
	return n
}

func (s *Sim) record(e Event) {
	e.Time = time.Now()
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	s.logf("%s", e)
}

// moduleRoot is the nearest directory at or above the working directory holding a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
