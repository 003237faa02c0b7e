// Package cluster starts a real local Kubernetes control plane (etcd, kube-apiserver,
// kube-scheduler, kube-controller-manager), the kwok node/pod simulator and Karpenter's KWOK
// provider as processes on 127.0.0.1, for end-to-end tests and demos.
//
// Binaries come from <repo>/bin (hack/build-tools.sh). Each cluster picks free ports, so
// several can run at once; every process it starts dies with the test binary.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/nodesim"
)

// startTimeout bounds how long one component may take to become healthy. Generous: the
// machine may be busy compiling.
const startTimeout = 3 * time.Minute

// Options configures Start. The zero value is a full cluster with default instance types.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok and
	// karpenter-kwok. Default: <repo root>/bin, the repo root being the nearest go.mod upward.
	BinDir string
	// WorkDir holds kubeconfig, instance-types.json, kwok.yaml and logs/<component>.log.
	// Default: a new temp dir, which Stop leaves in place so the logs can be read.
	WorkDir string
	// InstanceTypes offered by Karpenter's KWOK provider. Default: DefaultInstanceTypes().
	InstanceTypes []InstanceType
	// Log receives progress lines ("kube-scheduler ready in 1.2s"); nil discards them.
	Log io.Writer
	// WithoutKarpenter starts the control plane, scheduler, controller manager and kwok only.
	WithoutKarpenter bool
	// KarpenterEnv adds or overrides Karpenter's environment, e.g. FEATURE_GATES or
	// BATCH_IDLE_DURATION (see sigs.k8s.io/karpenter pkg/operator/options).
	KarpenterEnv map[string]string
	// WarmpoolBinary is the warmpool command nodesim runs for cache pods. Default: built from
	// ./cmd/warmpool into the work dir while the control plane starts.
	WarmpoolBinary string
	// Nodesim tunes the node simulator's models (EBS volumes, snapshot uploads, CSI node
	// registration); Config, Root, WarmpoolBinary and Log are set by the cluster. The zero
	// value is nodesim's defaults, scaled to test sizes.
	Nodesim nodesim.Options
}

// Cluster is a running local cluster. Stop it when done.
type Cluster struct {
	Kubeconfig string        // path of an admin (system:masters) kubeconfig
	Config     *rest.Config  // the same admin identity
	Client     client.Client // uses Scheme()
	WorkDir    string
	// Nodesim plays the kubelet for cache pods, the CSI driver of the warmpool-sim classes
	// and the Dagger engine (see package nodesim).
	Nodesim *nodesim.Sim
	// Warmpool is the warmpool binary built for (or given to) this cluster; tests that run
	// the real controller process use it too.
	Warmpool string

	log     func(format string, args ...any)
	env     *envtest.Environment
	envLogs []*os.File
	procs   []*process
	pids    map[string]int
	reaper  *reaper

	mu      sync.Mutex
	stopped bool
	stopErr error
}

// Scheme has core Kubernetes, apiextensions, Karpenter v1, Karpenter AWS v1, Karpenter KWOK
// v1alpha1 and VolumeSnapshot v1 types.
func Scheme() *runtime.Scheme {
	// warmpool's own scheme, so tests read objects exactly as the controller does, plus the
	// CRD types the cluster installs.
	s, err := operator.Scheme()
	utilruntime.Must(err)
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

// Start starts every part and returns once all are ready. ctx bounds the start-up only; the
// processes run until Stop. On failure it stops whatever it started and returns an error
// naming the part and its log file.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	began := time.Now()
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	c := &Cluster{
		WorkDir: opts.WorkDir,
		pids:    map[string]int{},
	}
	var logMu sync.Mutex // components report readiness concurrently
	c.log = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	if err := c.start(ctx, opts); err != nil {
		if stopErr := c.Stop(); stopErr != nil {
			err = fmt.Errorf("%w (stopping what had started: %v)", err, stopErr)
		}
		return nil, err
	}
	c.log("cluster ready in %s (work dir %s)", since(began), c.WorkDir)
	return c, nil
}

func (o *Options) setDefaults() error {
	if o.BinDir == "" {
		root, err := RepoRoot()
		if err != nil {
			return fmt.Errorf("finding bin dir: %w", err)
		}
		o.BinDir = filepath.Join(root, "bin")
	}
	bins := []string{Etcd, KubeAPIServer, KubeScheduler, KubeControllerManager, "kwok"}
	if !o.WithoutKarpenter {
		bins = append(bins, "karpenter-kwok")
	}
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return fmt.Errorf("missing %s in %s (build it with hack/build-tools.sh): %w", b, o.BinDir, err)
		}
	}
	if o.WorkDir == "" {
		dir, err := os.MkdirTemp("", "warmpool-cluster-")
		if err != nil {
			return fmt.Errorf("creating work dir: %w", err)
		}
		o.WorkDir = dir
	}
	if err := os.MkdirAll(filepath.Join(o.WorkDir, "logs"), 0o755); err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	if len(o.InstanceTypes) == 0 {
		o.InstanceTypes = DefaultInstanceTypes()
	}
	return nil
}

func (c *Cluster) start(ctx context.Context, opts Options) error {
	warmpoolBin := c.buildWarmpool(ctx, opts.WarmpoolBinary)
	defer warmpoolBin() // never leave the build running
	var err error
	if c.reaper, err = startReaper(); err != nil {
		return err
	}
	if err := c.startControlPlane(opts.BinDir); err != nil {
		return err
	}

	instanceTypes := filepath.Join(c.WorkDir, "instance-types.json")
	if err := writeInstanceTypes(instanceTypes, opts.InstanceTypes); err != nil {
		return err
	}
	kwokConfig := filepath.Join(c.WorkDir, "kwok.yaml")
	if err := writeKWOKConfig(kwokConfig); err != nil {
		return err
	}

	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	components := []component{
		kubeScheduler(opts.BinDir, c.WorkDir, c.Kubeconfig, ports[0]),
		kubeControllerManager(opts.BinDir, c.WorkDir, c.Kubeconfig, ports[1]),
		kwokController(opts.BinDir, c.WorkDir, c.Kubeconfig, kwokConfig, ports[2]),
	}
	if !opts.WithoutKarpenter {
		components = append(components,
			karpenter(opts.BinDir, c.WorkDir, c.Kubeconfig, instanceTypes, ports[3], ports[4], opts.KarpenterEnv))
	}
	if err := c.startComponents(ctx, components); err != nil {
		return err
	}
	bin, err := warmpoolBin()
	if err != nil {
		return err
	}
	c.Warmpool = bin
	return c.startNodesim(ctx, bin, opts.Nodesim)
}

// startComponents starts all components at once, then waits for each to become healthy.
func (c *Cluster) startComponents(ctx context.Context, components []component) error {
	began := time.Now()
	started := make([]*process, 0, len(components))
	for _, comp := range components {
		p, err := startProcess(comp.name, comp.bin, comp.args, comp.env, filepath.Join(c.WorkDir, "logs"))
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.pids[comp.name] = p.pid()
		if err := c.reaper.watch(p.pid()); err != nil {
			return fmt.Errorf("registering %s with the reaper: %w", comp.name, err)
		}
		started = append(started, p)
	}
	errs := make([]error, len(components))
	var wg sync.WaitGroup
	for i, comp := range components {
		wg.Go(func() {
			if err := waitHealthy(ctx, started[i], comp.health, startTimeout); err != nil {
				errs[i] = fmt.Errorf("%s: %w (log: %s)%s", comp.name, err, started[i].logPath, logTail(started[i].logPath, 15))
				return
			}
			c.log("%s ready in %s", comp.name, since(began))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stop stops every process the cluster started: first its own children (SIGTERM to each
// process group, SIGKILL after a grace period), then envtest's kube-apiserver and etcd.
// It is idempotent and safe to call on a partially started cluster.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.stopErr
	}
	c.stopped = true

	var errs []error
	if c.Nodesim != nil {
		// First: it kills the cache processes it runs and needs the apiserver to stop cleanly.
		if err := c.Nodesim.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping nodesim: %w", err))
		}
	}
	if c.reaper != nil {
		errs = append(errs, c.reaper.disarm())
	}
	stopErrs := make([]error, len(c.procs))
	var wg sync.WaitGroup
	for i, p := range c.procs {
		wg.Go(func() { stopErrs[i] = p.stop() })
	}
	wg.Wait()
	errs = append(errs, stopErrs...)

	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping etcd+kube-apiserver: %w", err))
		}
		// envtest sends SIGKILL on its stop timeout but does not wait; make sure they are gone.
		for _, name := range []string{KubeAPIServer, Etcd} {
			if pid, ok := c.pids[name]; ok {
				errs = append(errs, killAndWait(name, pid))
			}
		}
	}
	for _, f := range c.envLogs {
		_ = f.Close()
	}
	c.stopErr = errors.Join(errs...)
	return c.stopErr
}

// Logs returns the path of a component's log file (see the component name constants).
func (c *Cluster) Logs(component string) string {
	return filepath.Join(c.WorkDir, "logs", component+".log")
}

// PIDs returns the PID of every process the cluster started, by component name.
func (c *Cluster) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.pids))
	for k, v := range c.pids {
		out[k] = v
	}
	return out
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }
