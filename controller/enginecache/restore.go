package enginecache

import (
	"context"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// RestoreController restores the newest matching cache onto a new node before its engine starts
// (request name: the node). The pool's startup taint keeps the engine DaemonSet off the node;
// removing it is the last step whatever happened, so a node is never held for its cache beyond
// the restore's budget (restorebudget.go). The taint is the state: a node without it has
// nothing left to restore.
type RestoreController struct {
	base
	kick chan event.GenericEvent
	// waiting serializes the decisions to skip a restore for waiting jobs (restore_jobs.go).
	waiting waitingJobs
}

type restoreState struct {
	name     string
	node     *corev1.Node
	poolName string
	pool     *config.Pool
	pvc      *corev1.PersistentVolumeClaim
	job      *batchv1.Job
	verify   *batchv1.Job // the verify Job, once the node was released
	arch     string
	snapshot string
	// snap is the chosen snapshot while its volume is not made yet (nil after).
	snap *snapshotv1.VolumeSnapshot
	// restoreSize is the chosen snapshot's size, nil when unknown.
	restoreSize *resource.Quantity
	// deadline is when the restore's budget runs out (planBudget), zero before it is planned.
	deadline time.Time
}

// Reconcile runs the restore steps for one node until one must wait or the node was released.
func (c *RestoreController) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if c.current() == nil {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	s, err := c.load(ctx, req.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("node", s.name, "pool", s.poolName))
	if s.verifying() {
		return c.verifySteps().Run(ctx, s)
	}
	return c.restoreSteps().Run(ctx, s)
}

// restoreSteps copy the snapshot onto the node while its startup taint holds the engine off.
// Each step goes on (steps.Next) or ends the reconcile: to wait (steps.WaitFor, or steps.Stop
// until a watch event), or because the node was released or let go (steps.Stop).
func (c *RestoreController) restoreSteps() steps.List[restoreState] {
	return steps.List[restoreState]{
		{Name: "deliverReports", Run: c.deliverReports},
		{Name: "cleanUpReleased", Run: c.cleanUpReleased},
		{Name: "abandonDeleted", Run: c.abandonDeleted},
		{Name: "awaitNodeReady", Run: c.awaitNodeReady},
		{Name: "releaseUnserved", Run: c.releaseUnserved},
		{Name: "chooseSnapshot", Run: c.chooseSnapshot},
		{Name: "skipForWaitingJobs", Run: c.skipForWaitingJobs},
		{Name: "planBudget", Run: c.planBudget},
		{Name: "checkStorage", Run: c.checkStorage},
		{Name: "checkTimeout", Run: c.checkTimeout},
		{Name: "makeVolume", Run: c.makeVolume},
		{Name: "startCopy", Run: c.startCopy},
		{Name: "awaitCopy", Run: c.awaitCopy},
	}
}

func (c *RestoreController) load(ctx context.Context, name string) (*restoreState, error) {
	s := &restoreState{name: name}
	var err error
	if s.node, err = c.getNode(ctx, name, false); err != nil {
		return nil, err
	}
	if s.node != nil && (hasTaint(s.node, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect) || s.node.Annotations[AnnotationRestore] == restoreVerifying) {
		// Restoring or verifying: a cached Node that still shows the taint we just removed, or
		// the verification we just concluded, would run that step over (and report it twice),
		// so the state is read from the API server.
		if s.node, err = c.getNode(ctx, name, true); err != nil {
			return nil, err
		}
	}
	pvc, job := &corev1.PersistentVolumeClaim{}, &batchv1.Job{}
	if ok, err := c.get(ctx, volumes.RestoreName(name), pvc); err != nil {
		return nil, err
	} else if ok {
		s.pvc = pvc
	}
	if ok, err := c.get(ctx, volumes.RestoreName(name), job); err != nil {
		return nil, err
	} else if ok {
		s.job = job
	}
	verify := &batchv1.Job{}
	if ok, err := c.get(ctx, volumes.VerifyName(name), verify); err != nil {
		return nil, err
	} else if ok {
		s.verify = verify
	}
	if s.node != nil {
		s.poolName = s.node.Labels[volumes.LabelPool]
		s.pool = c.cachePool(s.poolName)
		s.arch = s.node.Labels[corev1.LabelArchStable]
		if s.arch == "" && s.pool != nil && len(s.pool.Architectures) == 1 {
			s.arch = s.pool.Architectures[0]
		}
	}
	return s, nil
}

// cleanUpReleased cleans up once the node no longer waits for a restore (or is gone).
func (c *RestoreController) cleanUpReleased(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.node != nil && hasTaint(s.node, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect) {
		return steps.Next, nil
	}
	if s.verify != nil {
		if err := c.remove(ctx, s.verify); err != nil {
			return steps.Stop, err
		}
	}
	return steps.Stop, c.cleanup(ctx, s)
}

// abandonDeleted stops the restore of a node that is being deleted before its engine ever ran:
// the copy would outlive it for nothing, and its pods would keep the drain waiting. The startup
// taint stays; the save controller marks the node skipped so its hold lets it go.
func (c *RestoreController) abandonDeleted(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.node.DeletionTimestamp == nil {
		return steps.Next, nil
	}
	if s.job == nil && s.pvc == nil {
		return steps.Stop, nil
	}
	log.FromContext(ctx).Info("node deleted while its cache was being restored: restore abandoned")
	return steps.Stop, c.cleanup(ctx, s)
}

// awaitNodeReady waits for the node to be Ready: before that no pod of ours would run on it.
func (c *RestoreController) awaitNodeReady(_ context.Context, s *restoreState) (steps.Exit, error) {
	if nodewatch.Ready(s.node) {
		return steps.Next, nil
	}
	return steps.Stop, nil // the Node's status update wakes us
}

// releaseUnserved releases a node whose pool no longer restores a cache (cache disabled, pool
// removed) or whose architecture is unknown: the taint would otherwise keep its engine off for
// good.
func (c *RestoreController) releaseUnserved(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.pool == nil {
		return steps.Stop, c.cold(ctx, s, ColdCacheDisabled, fmt.Sprintf("pool %q does not have the cache enabled", s.poolName))
	}
	if s.arch == "" {
		return steps.Stop, c.cold(ctx, s, ColdUnknownArch, "node has no "+corev1.LabelArchStable+" label")
	}
	return steps.Next, nil
}

// chooseSnapshot picks the newest ready snapshot of the node's pool, architecture and engine
// version; a restore under way keeps the one its volume was made from, or that its budget was
// planned for while it waits for the CSI driver (if that one is still good).
func (c *RestoreController) chooseSnapshot(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.pvc != nil && s.pvc.Spec.DataSource != nil {
		s.snapshot = s.pvc.Spec.DataSource.Name
		return steps.Next, nil
	}
	if c.opts.NoSnapshotAPI {
		return steps.Stop, c.cold(ctx, s, ColdNoSnapshotAPI, "the cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshot API: install the CSI snapshotter's CRDs and controller, then restart warmpool")
	}
	if planned := s.node.Annotations[annotationRestoreFrom]; planned != "" {
		snap := &snapshotv1.VolumeSnapshot{}
		ok, err := c.get(ctx, planned, snap)
		if err != nil {
			return steps.Stop, err
		}
		if ok && volumes.Good(snap) {
			s.snapshot, s.snap, s.restoreSize = snap.Name, snap, nil
			if snap.Status != nil {
				s.restoreSize = snap.Status.RestoreSize
			}
			return steps.Next, nil
		}
		// Deleted, quarantined or failed since: choose again; the budget's start stays.
	}
	key := volumes.SnapshotKey{Pool: s.pool.Name, Arch: s.arch, EngineVersion: s.pool.Engine.Version}
	list := &snapshotv1.VolumeSnapshotList{}
	if err := c.kube.List(ctx, list, client.InNamespace(c.namespace()), client.MatchingLabels{
		volumes.LabelPool: key.Pool, volumes.LabelArch: key.Arch, volumes.LabelEngineVersion: key.EngineVersion,
	}); err != nil {
		return steps.Stop, fmt.Errorf("listing snapshots of %+v, %w", key, err)
	}
	snap := volumes.ChooseSnapshot(list.Items, key)
	if snap == nil {
		return steps.Stop, c.cold(ctx, s, ColdNoSnapshot, fmt.Sprintf("no ready snapshot of pool %s, arch %s, engine %s", key.Pool, key.Arch, key.EngineVersion))
	}
	s.snapshot, s.snap, s.restoreSize = snap.Name, snap, nil
	if st := snap.Status; st != nil {
		s.restoreSize = st.RestoreSize
	}
	return steps.Next, nil
}

// left is the time before the restore's budget runs out (0 before it is planned).
func (c *RestoreController) left(s *restoreState) time.Duration {
	if s.deadline.IsZero() {
		return 0
	}
	return s.deadline.Sub(c.clk.Now())
}

// elapsed is the time since the restore volume was made, for the duration metric.
func (c *RestoreController) elapsed(s *restoreState) time.Duration {
	if s.pvc == nil {
		return 0
	}
	started := parseStamp(s.pvc.Annotations[AnnotationStarted])
	if started.IsZero() {
		return 0
	}
	return c.clk.Since(started)
}

// checkTimeout starts the node cold once the restore used up its budget.
func (c *RestoreController) checkTimeout(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if !s.deadline.IsZero() && c.left(s) <= 0 {
		return steps.Stop, c.cold(ctx, s, ColdTimeout, fmt.Sprintf("restore from %s did not finish within its budget (until %s: %s)",
			s.snapshot, stamp(s.deadline), s.node.Annotations[annotationRestoreBudget]))
	}
	return steps.Next, nil
}

// makeVolume makes the volume to copy from out of the chosen snapshot, in the pool's restore
// StorageClass (where volumeInitializationRate belongs: every restore volume has a snapshot).
func (c *RestoreController) makeVolume(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.pvc != nil {
		return steps.Next, nil
	}
	// Size the volume for the snapshot even if the pool's size shrank since.
	size := s.pool.Cache.Size.DeepCopy()
	if s.restoreSize != nil && s.restoreSize.Cmp(size) > 0 {
		size = s.restoreSize.DeepCopy()
	}
	pvc := volumes.RestorePVC(c.target(s.pool, s.name, s.arch), s.pool.Cache.RestoreStorageClassName, size, s.snapshot)
	pvc.Annotations[AnnotationStarted] = stamp(c.clk.Now())
	if err := c.create(ctx, pvc); err != nil {
		return steps.Stop, err
	}
	s.pvc = pvc
	return steps.Next, nil
}

// startCopy starts the restore Job, bounded by the time left.
func (c *RestoreController) startCopy(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.job != nil {
		return steps.Next, nil
	}
	t := c.target(s.pool, s.name, s.arch)
	t.RestoreID = restoreID(s.node, s.snapshot)
	job := volumes.RestoreJob(t, int64(c.left(s)/time.Second))
	if err := c.create(ctx, job); err != nil {
		return steps.Stop, err
	}
	s.job = job
	return steps.WaitFor(c.poll(s)), nil
}

// awaitCopy reads the Job's result and releases the node, warm or cold.
func (c *RestoreController) awaitCopy(ctx context.Context, s *restoreState) (steps.Exit, error) {
	r, done, err := c.jobResult(ctx, s.job)
	if err != nil {
		return steps.Stop, err
	}
	if !done {
		return steps.WaitFor(c.poll(s)), nil
	}
	switch r.Result {
	case volumes.ResultRestored:
		return steps.Stop, c.warm(ctx, s, r)
	case volumes.ResultNoCache:
		return steps.Stop, c.cold(ctx, s, ColdNoCache, "snapshot "+s.snapshot+" holds no complete cache: "+r.Reason)
	case volumes.ResultCorrupt:
		// A bad copy: no restore may use it again, and no save may clone it (a save takes its
		// volume to be as the manifest says).
		events, err := c.quarantine(ctx, s, s.snapshot, fmt.Sprintf(msgCorruptOnSnapshot, s.name, r.Reason), r.Reason)
		if err != nil {
			return steps.Stop, err
		}
		return steps.Stop, c.cold(ctx, s, ColdCorrupt, fmt.Sprintf("restore from %s: %s", s.snapshot, r.Reason), events...)
	}
	return steps.Stop, c.cold(ctx, s, ColdFailed, fmt.Sprintf("restore from %s %s: %s", s.snapshot, r.Result, r.Reason))
}

func (c *RestoreController) poll(s *restoreState) time.Duration {
	return min(pollInterval, max(c.left(s), time.Second))
}

// Register wires the restore controller to the pool's Nodes and its own Jobs, PVCs and pods.
func (c *RestoreController) Register(mgr ctrl.Manager) error {
	toNode := handler.EnqueueRequestsFromMapFunc(requestForNode)
	restoreOp := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		op := o.GetLabels()[volumes.LabelOp]
		return o.GetNamespace() == c.namespace() && (op == volumes.OpRestore || op == volumes.OpVerify) ||
			o.GetLabels()[volumes.LabelEngineName] == volumes.EngineName && c.servesPool(o) // the verify waits for the engine to be Ready
	}))
	return ctrl.NewControllerManagedBy(mgr).
		Named("cache-restore").
		WatchesRawSource(source.Channel(c.kick, handler.EnqueueRequestsFromMapFunc(c.servedNodes))).
		Watches(&corev1.Node{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(c.servesNode), nodewatch.Changed)).
		Watches(&batchv1.Job{}, toNode, restoreOp).
		Watches(&corev1.PersistentVolumeClaim{}, toNode, restoreOp).
		Watches(&corev1.Pod{}, toNode, restoreOp).
		// A restore waiting for its CSI driver goes on when the kubelet registers it (a CSINode
		// is named after its node), if the restore controller serves that node at all.
		Watches(&storagev1.CSINode{}, handler.EnqueueRequestsFromMapFunc(c.servedCSINode)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(counted.Reconciler("cache-restore", c))
}
