package nodesim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/copier"
	"warmpool.io/warmpool/volumes/engine"
)

// EngineDataPath is where the engine container mounts its cache hostPath.
const EngineDataPath = "/var/lib/dagger"

// AnnotationUncleanStop ("true") on an engine pod makes its stop a kill: on deletion the
// engine dies at once, without its preStop or graceful stop, as one killed by the OOM killer
// or a node failure would. Tests set it to check that such a cache is not saved.
const AnnotationUncleanStop = "nodesim.warmpool.io/unclean-stop"

// AnnotationEngineClient ("true") on a pod makes it a client of the engine on its node: one
// attached session from when it is Running until it ends or is gone. The engine's graceful
// stop waits for it, and dagger_connected_clients counts it.
const AnnotationEngineClient = "nodesim.warmpool.io/engine-client"

// engineMetricsEnv makes the real engine serve Prometheus metrics at its value; nodesim
// passes the engine's own loopback endpoint to hooks under this name.
const engineMetricsEnv = "_EXPERIMENTAL_DAGGER_METRICS_ADDR"

// podNodeIndex indexes pods by spec.nodeName, to count an engine's clients.
const podNodeIndex = "spec.nodeName"

// sigtermMinimum is the least time the kubelet leaves a container between SIGTERM and
// SIGKILL when its preStop used up the grace period (minimumGracePeriodInSeconds).
const sigtermMinimum = 2 * time.Second

// clientPoll is how often a stopping engine looks at its clients.
const clientPoll = 200 * time.Millisecond

// engineProc is a "running" engine: what its process holds.
type engineProc struct {
	key, uid, node, dir string
	contract            engine.Contract
	lock                *os.File
	bolts               []*bolt.DB
	metrics             *metricsServer
	// dagql is what the engine loaded, written back with clean_shutdown "1" at a graceful stop.
	dagql dagqlState
	// stopping: the pod's deletion started the termination sequence; cancel ends it early
	// (the pod force-deleted, the simulator stopped).
	stopping bool
	cancel   context.CancelFunc
	// ended: the process is gone; release ran.
	ended bool
}

// release is the process dying: the kernel drops its flocks, the lock file stays, the
// metrics endpoint goes. Idempotent.
func (e *engineProc) release() {
	if e.ended {
		return
	}
	e.ended = true
	if e.cancel != nil {
		e.cancel()
	}
	closeBoltDBs(e.bolts)
	if e.lock != nil {
		_ = unix.Flock(int(e.lock.Fd()), unix.LOCK_UN)
		_ = e.lock.Close()
	}
	e.metrics.close()
}

// exit is the engine's graceful stop once its clients are gone ((*Server).GracefulStop and
// main's deferred cleanup): persist the dagql cache (v0.21+: clean_shutdown "1", checkpointed),
// close the bolt DBs, then release and delete the lock file.
func (e *engineProc) exit() error {
	if e.contract.DagqlDB == engine.DagqlMeta {
		if err := writeDagql(e.dir, e.contract, e.dagql, false); err != nil {
			e.release()
			return fmt.Errorf("persisting the dagql cache: %w", err)
		}
	}
	lock := filepath.Join(e.dir, engine.LockFile)
	e.release()
	if err := os.Remove(lock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", lock, err)
	}
	return nil
}

// engine plays the Dagger engine of engine pods (app.kubernetes.io/name=dagger-engine), by the
// contract of the release in the pod's warmpool.io/engine-version label: kwok marks them
// Running, and nodesim runs their init containers, then does on disk what that release does
// at start; on deletion it plays the kubelet's termination (preStop, SIGTERM, SIGKILL at the
// end of the grace period) and the engine's graceful stop. kwok's pod-delete stage skips
// engine pods, so the deletion is confirmed here.
type engineSim struct{ *Sim }

// isEnginePod selects the pods this part plays: engine pods, and warmpool's hold pods
// (engine_hooks.go), whose termination is also the kubelet's and not kwok's.
func isEnginePod(o client.Object) bool {
	return o.GetLabels()[volumes.LabelEngineName] == volumes.EngineName || isHoldPod(o)
}

func (e engineSim) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.String()
	pod := &corev1.Pod{}
	err := e.client.Get(ctx, req.NamespacedName, pod)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	e.mu.Lock()
	proc := e.engines[key]
	if proc != nil && (err != nil || string(pod.UID) != proc.uid) {
		// Gone without a graceful stop (force-deleted, its node removed): the container dies
		// with it, so no clean-shutdown record, and the lock file stays.
		proc.release()
		delete(e.engines, key)
		e.mu.Unlock()
		e.record(Event{Kind: EngineKilled, Node: proc.node, Object: key, Detail: "pod gone before the engine stopped"})
		proc = nil
	} else {
		e.mu.Unlock()
	}
	if err != nil || pod.Spec.NodeName == "" || !isEnginePod(pod) {
		return reconcile.Result{}, nil
	}
	if isHoldPod(pod) {
		return e.holdPod(ctx, pod)
	}

	if pod.DeletionTimestamp != nil {
		if proc == nil {
			return reconcile.Result{}, e.confirmDeletion(ctx, pod)
		}
		e.mu.Lock()
		starting := !proc.stopping
		proc.stopping = true
		stopCtx, cancel := context.WithCancel(e.ctx)
		if starting {
			proc.cancel = cancel
		}
		e.mu.Unlock()
		if starting {
			e.jobs.Add(1)
			go func() {
				defer e.jobs.Done()
				defer cancel()
				e.terminate(stopCtx, proc, pod.DeepCopy())
			}()
		} else {
			cancel()
		}
		return reconcile.Result{}, nil
	}
	if proc != nil || pod.Status.Phase != corev1.PodRunning {
		return reconcile.Result{}, nil
	}
	e.mu.Lock()
	failed, seen := e.engineSeen[string(pod.UID)]
	e.mu.Unlock()
	if seen && failed != "" {
		return reconcile.Result{}, nil // recorded once; the pod stays without an engine
	}
	fail := func(why string) (reconcile.Result, error) {
		e.mu.Lock()
		e.engineSeen[string(pod.UID)] = why
		e.mu.Unlock()
		e.record(Event{Kind: EngineStartFailed, Node: pod.Spec.NodeName, Object: key, Detail: why})
		return reconcile.Result{}, nil
	}
	c, err := engine.ForVersion(pod.Labels[volumes.LabelEngineVersion])
	if err != nil {
		return fail(fmt.Sprintf("label %s: %v", volumes.LabelEngineVersion, err))
	}
	hostPath := engineHostPath(pod)
	if hostPath == "" {
		return fail(fmt.Sprintf("no hostPath mounted at %s", EngineDataPath))
	}
	if !seen {
		if err := e.runInitContainers(ctx, pod); err != nil {
			return fail(err.Error())
		}
		e.mu.Lock()
		e.engineSeen[string(pod.UID)] = ""
		e.mu.Unlock()
	}
	return e.start(key, pod, c, e.NodePath(pod.Spec.NodeName, hostPath))
}

func (e engineSim) confirmDeletion(ctx context.Context, pod *corev1.Pod) error {
	err := e.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("confirming deletion of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// start does what the release does when it starts on dir (cmd/engine/main.go, then
// engine/server/server.go): take the lock, open the bolt DBs, decide whether the cache it finds
// is kept (decideStart), wipe what the verdict says, then run: clean_shutdown "0" (v0.21+),
// the bolt DBs and the lock held, a metrics endpoint. A cache with nothing in it gets what
// the builds of its lifetime would leave, so a later save has something to copy.
func (e engineSim) start(key string, pod *corev1.Pod, c engine.Contract, dir string) (reconcile.Result, error) {
	node := pod.Spec.NodeName
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return reconcile.Result{}, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, engine.LockFile), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		// The real engine exits with "another instance running?" and is restarted.
		lock.Close()
		e.logf("%s: could not lock %s, another instance running?", key, lock.Name())
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	proc := &engineProc{key: key, uid: string(pod.UID), node: node, dir: dir, contract: c, lock: lock}
	v, st, err := openCache(proc)
	if err != nil {
		proc.release()
		return reconcile.Result{}, fmt.Errorf("starting the engine of %s on %s: %w", key, dir, err)
	}
	e.logf("%s: engine %s (contract %s) on %s", key, pod.Labels[volumes.LabelEngineVersion], c.Name, dir)
	if line := v.logLine(c); line != "" {
		logPath := e.podLog(pod, "engine")
		if err := os.WriteFile(logPath, []byte(line+"\n"), 0o644); err != nil {
			e.logf("%s: writing %s: %v", key, logPath, err)
		}
		e.logf("%s: engine log: %s", key, line)
	}
	g := engineGauges{
		clients:        func() int { return e.engineClients(node) },
		corruptDBReset: v.corruptDBReset,
	}
	if !v.wiped() {
		g.localEntries = st.snapshots
		// Before v0.21 the dagql cache lives in memory and starts empty on every start;
		// from v0.21 the persisted results are imported.
		if c.DagqlDB == engine.DagqlMeta {
			g.dagqlEntries = st.dagql.entries
		}
	}
	if proc.metrics, err = startMetrics(c, g); err != nil {
		proc.release()
		return reconcile.Result{}, err
	}
	e.mu.Lock()
	e.engines[key] = proc
	e.mu.Unlock()
	switch {
	case v.wiped():
		e.record(Event{Kind: EngineWiped, Node: node, Object: key, Detail: v.reason + ": " + v.detail})
		e.record(Event{Kind: EngineColdStart, Node: node, Object: key, Detail: "wiped: " + v.reason})
	case st.snapshots == 0:
		e.record(Event{Kind: EngineColdStart, Node: node, Object: key, Detail: "empty cache dir"})
	default:
		detail := "kept its cache"
		if _, err := copier.ReadManifest(dir); err == nil {
			detail = "restored"
		}
		e.record(Event{Kind: EngineWarmStart, Node: node, Object: key, Detail: detail})
	}
	// The readiness probe (`dagger core version`) succeeds only now that the engine serves,
	// i.e. after it decided to keep or wipe its cache: kwok's stage left the pod not Ready.
	if err := e.markReady(pod); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// markReady plays the engine pod's first successful readiness probe.
func (e engineSim) markReady(pod *corev1.Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := metav1.Now()
	return e.patchStatus(ctx, pod, func(st *corev1.PodStatus) {
		setConditions(st, now, true, corev1.PodReady, corev1.ContainersReady)
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].Ready = true
		}
	})
}

// openCache is the engine's start on its locked state dir; it leaves proc holding the bolt
// DBs and the dagql state it runs with. It returns the verdict and what was found.
func openCache(proc *engineProc) (startVerdict, diskState, error) {
	dir, c := proc.dir, proc.contract
	bolts, boltErr := openBoltDBs(dir, c)
	st := probeDisk(dir, c)
	st.boltErr = boltErr
	v := decideStart(c, st)
	dagql := st.dagql
	switch v.scope {
	case wipeLocalState, wipeRoot:
		closeBoltDBs(bolts)
		bolts = nil
		if err := wipe(dir, v.scope); err != nil {
			return v, st, fmt.Errorf("wiping (%s): %w", v.reason, err)
		}
		var err error
		if bolts, err = openBoltDBs(dir, c); err != nil {
			return v, st, fmt.Errorf("initializing boltdbs after reset: %w", err)
		}
	case resetDagqlDB:
		if err := wipe(dir, v.scope); err != nil {
			return v, st, fmt.Errorf("removing the dagql cache db: %w", err)
		}
		dagql = dagqlState{}
	}
	proc.bolts = bolts
	if err := ensureSecretSalt(dir); err != nil {
		return v, st, err
	}
	if v.wiped() || countSnapshots(dir) == 0 {
		// Nothing kept (a first start, or a wipe): write what the engine's builds would.
		snaps, err := writeWorker(dir, proc.node)
		if err != nil {
			return v, st, fmt.Errorf("writing the worker state: %w", err)
		}
		if err := fillBoltDBs(bolts, snaps, proc.node); err != nil {
			return v, st, err
		}
		dagql = freshDagql(c, snaps)
		if err := writeDagql(dir, c, dagql, true); err != nil {
			return v, st, err
		}
	} else if c.DagqlDB == engine.DagqlMeta {
		// A kept cache: the engine upserts schema_version and clean_shutdown "0".
		if err := writeDagql(dir, c, dagql, true); err != nil {
			return v, st, err
		}
	} else if c.DagqlDB == engine.DagqlCalls && (!dagql.present || v.scope == resetDagqlDB) {
		// NewCache creates the database and its schema.
		if err := writeDagql(dir, c, dagqlState{}, true); err != nil {
			return v, st, err
		}
	}
	proc.dagql = dagql
	return v, st, nil
}

// EngineMetricsAddr is the host:port of the metrics endpoint of the engine running for the
// pod namespace/pod ("" if none runs).
func (s *Sim) EngineMetricsAddr(namespace, pod string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.engines[namespace+"/"+pod]; p != nil && !p.ended && p.metrics != nil {
		return p.metrics.addr
	}
	return ""
}

// engineHostPath is the hostPath behind the engine container's /var/lib/dagger.
func engineHostPath(pod *corev1.Pod) string {
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if filepath.Clean(m.MountPath) != EngineDataPath {
				continue
			}
			for _, v := range pod.Spec.Volumes {
				if v.Name == m.Name && v.HostPath != nil {
					return v.HostPath.Path
				}
			}
		}
	}
	return ""
}
