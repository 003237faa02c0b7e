// Package nodesim plays, inside a local e2e cluster, the parts of the cache path that need a
// kubelet or a CSI driver, which kwok does not provide:
//
//   - a CSI provisioner and snapshot controller for the driver sim.warmpool.io: PVs are
//     directories under <root>/volumes, snapshots are directories under <root>/snapshots,
//     and the objects (PV with a claimRef, VolumeSnapshotContent, statuses, finalizers) are
//     the ones a real external-provisioner and snapshot-controller write (csi.go). Any PVC,
//     save or restore, may be created from a VolumeSnapshot: refused, and left Pending, while
//     that snapshot does not exist, is not ready, or is being deleted before provisioning
//     began. A snapshot is cut at once (status.creationTime, readyToUse false; its source PVC
//     keeps pvc-as-source-protection) and becomes ready after an upload of the bytes changed
//     since the snapshot its volume was created from, as an EBS snapshot does;
//   - EBS volumes (ebs.go, fuse.go): every volume is served to the pods that mount it through
//     a FUSE loopback mount whose reads and writes pay a per-volume throughput cap and, for a
//     volume created from a snapshot, a latency on the first read of each block (lazy
//     loading), unless the class sets volumeInitializationRate (which EC2 refuses for a
//     volume without a snapshot: the claim stays Pending with ProvisioningFailed) or the
//     snapshot has Fast Snapshot Restore. docs/local-tier.md lists the knobs;
//   - the CSI node plugin's registration (csinode.go): each Ready node's CSINode lists the
//     driver CSIRegistrationDelay after it became Ready; until then no volume is provisioned
//     for it or mounted on it;
//   - the kubelet's admission for every pod (admission.go): a pod that does not fit its node
//     is rejected (Failed, OutOfcpu, OutOfmemory, OutOfpods, ...), as kubelet v1.35 does;
//   - the kubelet for cache pods (label warmpool.io/cache-op save|restore|verify): it runs the REAL
//     warmpool binary with the container's args, mapping each volume mount to a directory
//     (node hostPaths under <root>/nodes/<node>), as root with exactly the Linux capabilities
//     its securityContext grants under containerd (through setpriv; kubelet.go), and writes
//     the pod status a kubelet would;
//   - the Dagger engine for engine pods (engine.go, layout.go), by the contract of the release
//     in the pod's label warmpool.io/engine-version (volumes/engine; a version outside the
//     table is an EngineStartFailed event and no engine): the state dir that release leaves
//     (its bolt DBs, dagql-cache.db in its shape, overlay snapshots with trusted.overlay.opaque
//     and whiteouts, worker/workerid, secret-salt), its start-up verdict (keep, or wipe with
//     the release's reason), the flock on dagger-engine.lock while it runs, a loopback
//     Prometheus endpoint with the release's metrics (EngineMetricsAddr), and the kubelet's
//     side: init containers run for real before it starts (/warmpool is the warmpool binary,
//     emptyDirs are per-pod dirs), and on deletion the preStop hook run for real (an image
//     PATH without wget, curl or nc; _EXPERIMENTAL_DAGGER_METRICS_ADDR naming the endpoint),
//     then SIGTERM, upon which the engine waits for every attached client, and SIGKILL if
//     the grace period ends first (no clean record, the lock file left behind).
//
// Knobs tests set on the cluster's objects:
//
//   - AnnotationStallCacheJobs on a Node: its cache pods hang until killed;
//   - AnnotationDropCapabilities on a Node: its cache pods run without the capabilities it
//     names ("SYS_ADMIN": the copier then refuses, and no snapshot is made);
//   - AnnotationUncleanStop on an engine pod: its deletion kills the engine at once;
//   - AnnotationEngineClient on any pod on a node: while Running it is a client attached to
//     that node's engine, counted by dagger_connected_clients and waited for by its stop;
//   - AnnotationFailSnapshot on a VolumeSnapshot, or on the Node its source volume was attached
//     to: the snapshot is cut, then fails at the end of its upload (status.error set, never
//     ready), with the annotation's value as the error ("true" or "": a default message);
//   - Options.SnapshotUploadBytesPerSecond (default DefaultSnapshotUploadBytesPerSecond), or
//     the parameter ParameterUploadBytesPerSecond of a VolumeSnapshotClass for its snapshots:
//     the upload rate, so readyToUse comes changed-bytes/rate after the cut (ChangedBytes,
//     UploadTime); a negative Options value makes snapshots ready at their cut;
//   - Options.EBS, and the StorageClass parameters ParameterThroughput and
//     ParameterVolumeInitializationRate: the volume model; AnnotationFastSnapshotRestore on a
//     VolumeSnapshot: volumes made from it are loaded at once;
//   - Options.CSIRegistrationDelay, and AnnotationCSINodePlugin ("absent") on a Node: when
//     (whether) the driver registers there.
//
// Everything it does is recorded as Events (Events, Count) so tests can assert what happened
// on the "nodes". It needs no kubelet or container runtime; it needs root (the copier's
// capabilities, and mounting FUSE: Start fails, saying so, without /dev/fuse).
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
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
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
	// Log receives one line per action and the manager's logs; nil discards them.
	Log io.Writer
	// SnapshotUploadBytesPerSecond is how fast a cut snapshot uploads the bytes changed since
	// its volume's source snapshot (all of them for a volume made empty): readyToUse comes that
	// long after the cut. 0 means DefaultSnapshotUploadBytesPerSecond; negative, at the cut.
	SnapshotUploadBytesPerSecond float64
	// EBS is the volume model every cache pod's volume is served through (see EBSOptions).
	EBS EBSOptions
	// CSIRegistrationDelay is how long after a node is Ready its CSINode lists the driver,
	// as the EBS CSI node plugin registers seconds to a minute after the node: until then
	// volumes are neither provisioned for the node nor mounted on it. 0 means
	// DefaultCSIRegistrationDelay; negative, at once. AnnotationCSINodePlugin on a Node
	// keeps the driver off it.
	CSIRegistrationDelay time.Duration
}

// DefaultSnapshotUploadBytesPerSecond is the default snapshot upload rate, scaled to test
// sizes: a few MiB of cache are ready in milliseconds, a 1 GiB full snapshot in 8 s. (An EBS
// snapshot of a few hundred GiB takes tens of minutes.)
const DefaultSnapshotUploadBytesPerSecond = 128 << 20

// AnnotationFailSnapshot on a VolumeSnapshot, or on the Node its source volume was attached
// to, makes the snapshot fail after its cut; the value is the error message.
const AnnotationFailSnapshot = "nodesim.warmpool.io/fail-snapshot"

// Sim is a running node simulator.
type Sim struct {
	root   string
	bin    string
	client client.Client
	// live reads the API server directly, for what a kubelet reads live (admission.go).
	live client.Reader
	// restConfig reaches the API server, for the hook processes that read it (the hold's).
	restConfig *rest.Config
	// uploadRate is Options.SnapshotUploadBytesPerSecond with its default applied.
	uploadRate float64
	logf       func(format string, args ...any)

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
	// engineSeen: pod UID -> "" once its init containers ran, or why its engine never starts.
	engineSeen map[string]string

	ebs      EBSOptions
	csiDelay time.Duration
	volMu    sync.Mutex
	volumes  map[string]*ebsVolume // volume handle -> its model and mount
	// volumeHistory: what deleted volumes served, for VolumeStats.
	volumeHistory map[string]VolumeStats
	// claims: namespace/name of a claim -> the volumes provisioned for it (VolumesOf).
	claims     map[string][]string
	provFailed map[string]bool // PVC UID + message: ProvisioningFailed already reported
	// admitted: node -> namespace/name -> pods admitted there (admission.go).
	admitted    map[string]map[string]*corev1.Pod
	admissionMu sync.Mutex
}

// EventKind names what happened.
type EventKind string

// What nodesim records.
const (
	VolumeProvisioned EventKind = "VolumeProvisioned" // Object: PV, Detail: source snapshot handle if any
	VolumeDeleted     EventKind = "VolumeDeleted"     // Object: PV
	// VolumeProvisioningFailed: Object: namespace/PVC, Detail: the ProvisioningFailed Event's message
	VolumeProvisioningFailed EventKind = "VolumeProvisioningFailed"
	CSIDriverRegistered      EventKind = "CSIDriverRegistered" // Node: where the node plugin registered
	PodRejected              EventKind = "PodRejected"         // Object: namespace/pod, Detail: reason: message (kubelet admission)
	SnapshotCut              EventKind = "SnapshotCut"         // Object: namespace/VolumeSnapshot, Detail: handle and bytes to upload
	SnapshotReady            EventKind = "SnapshotReady"       // Object: namespace/VolumeSnapshot, Detail: handle
	SnapshotFailed           EventKind = "SnapshotFailed"      // Object: namespace/VolumeSnapshot, Detail: handle and error (AnnotationFailSnapshot)
	SnapshotDeleted          EventKind = "SnapshotDeleted"     // Object: namespace/VolumeSnapshot, Detail: handle
	CacheJobStarted          EventKind = "CacheJobStarted"     // Object: namespace/pod, Detail: op
	CacheJobStalled          EventKind = "CacheJobStalled"     // Object: namespace/pod, Detail: op (AnnotationStallCacheJobs)
	CacheJobFinished         EventKind = "CacheJobFinished"    // Object: namespace/pod, Detail: op and result, ExitCode
	EngineColdStart          EventKind = "EngineColdStart"     // Object: namespace/pod, Detail: "empty cache dir" or "wiped: <reason>"
	EngineWarmStart          EventKind = "EngineWarmStart"     // Object: namespace/pod, Detail: "restored" if from a copy, else "kept its cache"
	EngineWiped              EventKind = "EngineWiped"         // Object: namespace/pod, Detail: "<Wipe* reason>: <error>"; an EngineColdStart follows
	EngineStartFailed        EventKind = "EngineStartFailed"   // Object: namespace/pod, Detail: why no engine runs (unknown version, init container failed)
	EnginePreStop            EventKind = "EnginePreStop"       // Object: namespace/pod, Detail: how the hook ended, ExitCode
	EngineStopped            EventKind = "EngineStopped"       // clean exit on pod deletion: clients gone, state persisted, lock file deleted
	EngineKilled             EventKind = "EngineKilled"        // Detail: why (grace period ended with clients attached, pod gone, unclean stop requested)
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
	if e.Kind == CacheJobFinished || e.Kind == EnginePreStop {
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
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	s := &Sim{
		root:       opts.Root,
		bin:        opts.WarmpoolBinary,
		restConfig: opts.Config,
		kubelet:    map[string]*cacheRun{},
		engines:    map[string]*engineProc{},
		engineSeen: map[string]string{},
		done:       make(chan error, 1),
		uploadRate: opts.SnapshotUploadBytesPerSecond,
	}
	if s.uploadRate == 0 {
		s.uploadRate = DefaultSnapshotUploadBytesPerSecond
	}
	s.ebs = opts.EBS.withDefaults()
	s.volumes = map[string]*ebsVolume{}
	s.volumeHistory = map[string]VolumeStats{}
	s.claims = map[string][]string{}
	s.provFailed = map[string]bool{}
	s.admitted = map[string]map[string]*corev1.Pod{}
	s.csiDelay = opts.CSIRegistrationDelay
	if s.csiDelay == 0 {
		s.csiDelay = DefaultCSIRegistrationDelay
	}
	if err := checkFUSE(); err != nil {
		return nil, fmt.Errorf("nodesim: %w", err)
	}
	if err := unmountStale(filepath.Join(s.root, "mounts")); err != nil {
		return nil, fmt.Errorf("nodesim: %w", err)
	}
	var logMu sync.Mutex
	s.logf = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(out, "nodesim: "+format+"\n", args...)
	}
	for _, d := range []string{"nodes", "volumes", "snapshots", "logs", "pods", "mounts"} {
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
	s.live = mgr.GetAPIReader()
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
	// Every volume mount goes, whatever else failed: a FUSE mount outliving its server
	// answers ENOTCONN and keeps the work dir from being removed.
	err = errors.Join(err, s.releaseVolumes())
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
