package enginecache

import (
	"context"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
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
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// guardReplacePace is the least time between two replacements of a guard the kubelet keeps
// refusing (OutOfpods on a full node), so the controller does not spin on it.
const guardReplacePace = 5 * time.Second

// Save outcomes recorded in AnnotationSaveOutcome (and the save result metric label).
const (
	outcomeSaved   = volumes.ResultSaved
	outcomeUnclean = volumes.ResultUnclean
	outcomeFailed  = volumes.ResultFailed

	// The node went without a save: its pool no longer saves the cache (removed from the
	// config, or the cache turned off), or it was deleted before its restore let the engine run.
	outcomeSkippedCacheOff  = "skipped-cache-off"
	outcomeSkippedRestoring = "skipped-restoring"
)

// SaveController saves the engine cache of a node that is going away (request name: the node).
//
// The protocol is an ordered list of idempotent steps; each looks at what exists (the guard pod,
// the engine pod, the save PVC, Job and VolumeSnapshot, the Node's outcome annotation) and
// either moves on or stops: to wait, or because the save concluded. Nothing is kept in memory,
// so a restarted controller resumes exactly where the objects say.
type SaveController struct {
	base
	kick chan event.GenericEvent
}

// saveState is what one reconcile of a node reads.
type saveState struct {
	name     string
	node     *corev1.Node // nil once the Node is gone
	claim    *karpv1.NodeClaim
	poolName string
	pool     *config.Pool // nil unless the pool has the cache enabled
	signals  volumes.NodeSignals
	guard    *corev1.Pod
	pvc      *corev1.PersistentVolumeClaim
	job      *batchv1.Job
	snapshot *snapshotv1.VolumeSnapshot
	deadline volumes.Deadline
	result   volumes.JobResult
}

func (s *saveState) trigger() volumes.Trigger { return volumes.SaveTrigger(s.signals) }

// Reconcile runs the save steps for one node until one must wait or the save concluded.
func (c *SaveController) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if c.current() == nil {
		// No config in force yet: which pools have the cache is unknown, and releasing a guard
		// now would lose a save that is running.
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	s, err := c.load(ctx, req.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("node", s.name, "pool", s.poolName))
	return c.saveSteps().Run(ctx, s)
}

// saveSteps are the save protocol, in order. Each step either goes on (steps.Next) or ends the
// reconcile: to wait (steps.WaitFor, or steps.Stop until a watch event), or because the save
// concluded or let go of the node (steps.Stop).
func (c *SaveController) saveSteps() steps.List[saveState] {
	return steps.List[saveState]{
		{Name: "cleanUpConcluded", Run: c.cleanUpConcluded},
		{Name: "releaseWithdrawn", Run: c.releaseWithdrawn},
		{Name: "holdNode", Run: c.holdNode},
		{Name: "replaceFailedGuard", Run: c.replaceFailedGuard},
		{Name: "awaitCommitment", Run: c.awaitCommitment},
		{Name: "checkDeadline", Run: c.checkDeadline},
		{Name: "awaitGuardRunning", Run: c.awaitGuardRunning},
		{Name: "awaitRunners", Run: c.awaitRunners},
		{Name: "stopEngine", Run: c.stopEngine},
		{Name: "makeVolume", Run: c.makeVolume},
		{Name: "checkBase", Run: c.checkBase},
		{Name: "startCopy", Run: c.startCopy},
		{Name: "awaitCopy", Run: c.awaitCopy},
		{Name: "cutSnapshot", Run: c.cutSnapshot},
		{Name: "awaitCut", Run: c.awaitCut},
	}
}

func (c *SaveController) load(ctx context.Context, name string) (*saveState, error) {
	s := &saveState{name: name}
	if err := c.loadObjects(ctx, s, c.kube); err != nil {
		return nil, err
	}
	if s.guard != nil || s.pvc != nil || s.job != nil {
		// A save is under way: read what it decides on from the API server. A cached Node that
		// lags its outcome annotation, or a cached Job that lags its deletion, would otherwise
		// run a concluded save again.
		if err := c.loadObjects(ctx, s, c.live); err != nil {
			return nil, err
		}
	}
	switch {
	case s.node != nil:
		s.poolName = s.node.Labels[volumes.LabelPool]
	case s.guard != nil:
		s.poolName = s.guard.Labels[volumes.LabelPool]
	case s.job != nil:
		s.poolName = s.job.Labels[volumes.LabelPool]
	case s.pvc != nil:
		s.poolName = s.pvc.Labels[volumes.LabelPool]
	}
	s.pool = c.cachePool(s.poolName)
	// The signals are read for a deleting node of a pool that no longer saves too: it still gets
	// its release mark (releaseWithdrawn). The hold reads the Node's deletion, so nothing else
	// matters.
	if s.node != nil && (s.pool != nil || s.node.DeletionTimestamp != nil) {
		var err error
		if s.claim, err = c.nodeClaimOf(ctx, s.poolName, name); err != nil {
			return nil, err
		}
		s.signals = volumes.NodeSignals{
			NodeDeleting:   s.node.DeletionTimestamp != nil,
			DisruptedTaint: hasTaint(s.node, karpv1.DisruptedTaintKey, corev1.TaintEffectNoSchedule),
		}
		if s.claim != nil {
			s.signals.NodeClaimDeleting = s.claim.DeletionTimestamp != nil
			s.signals.DisruptionReason = s.claim.StatusConditions().Get(karpv1.ConditionTypeDisruptionReason).IsTrue()
		}
	}
	if s.pool == nil {
		return s, nil
	}
	// The snapshot is read even once the Node is gone: a node that went after its snapshot was
	// cut was saved, and must be reported so (its Job names the snapshot).
	if snap := c.snapshotName(s); snap != "" {
		vs := &snapshotv1.VolumeSnapshot{}
		ok, err := c.get(ctx, snap, vs)
		if err != nil {
			return nil, err
		}
		if ok {
			s.snapshot = vs
		}
	}
	return s, nil
}

// loadObjects reads the Node and the save's guard, PVC and Job from r.
func (c *SaveController) loadObjects(ctx context.Context, s *saveState, r client.Reader) error {
	var err error
	if s.node, err = c.getNode(ctx, s.name, r == c.live); err != nil {
		return err
	}
	s.guard, s.pvc, s.job = nil, nil, nil
	guard, pvc, job := &corev1.Pod{}, &corev1.PersistentVolumeClaim{}, &batchv1.Job{}
	for _, o := range []struct {
		name string
		obj  client.Object
		set  func()
	}{
		{volumes.GuardName(s.name), guard, func() { s.guard = guard }},
		{volumes.SaveName(s.name), pvc, func() { s.pvc = pvc }},
		{volumes.SaveName(s.name), job, func() { s.job = job }},
	} {
		ok, err := c.getFrom(ctx, r, o.name, o.obj)
		if err != nil {
			return err
		}
		if ok {
			o.set()
		}
	}
	return nil
}

// snapshotName is the snapshot this save makes: recorded on the Job, else derived from the node.
func (c *SaveController) snapshotName(s *saveState) string {
	if s.job != nil && s.job.Annotations[annotationSnapshot] != "" {
		return s.job.Annotations[annotationSnapshot]
	}
	if s.node != nil && s.pool != nil {
		return volumes.SnapshotName(s.pool.Name, s.name, string(s.node.UID))
	}
	return ""
}

// cleanUpConcluded cleans up after a save that concluded: the outcome is on the Node, or the
// Node is gone and nothing of the save runs any more.
func (c *SaveController) cleanUpConcluded(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.node != nil && s.node.Annotations[AnnotationSaveOutcome] == "" {
		return steps.Next, nil
	}
	if s.node != nil {
		// The outcome was recorded with its report; a controller that died before delivering
		// it delivers it now, before the cleanup that would lose what it reads.
		if err := c.flushReport(ctx, s.node, annotationSaveReport); err != nil {
			return steps.Stop, err
		}
	}
	if s.node == nil && (s.guard != nil || s.job != nil) {
		// The node vanished mid-save: what can finish without it still does (below).
		if s.pool == nil {
			return steps.Stop, c.cleanup(ctx, s)
		}
		return steps.Next, nil
	}
	return steps.Stop, c.cleanup(ctx, s)
}

// releaseWithdrawn lets go of a node that is not (or no longer) going away, or whose pool no
// longer saves its cache. Karpenter withdraws the disrupted taint when a disruption command
// fails.
func (c *SaveController) releaseWithdrawn(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.node == nil {
		return steps.Next, nil
	}
	// A node that still waits for its restore never ran its engine: there is nothing to save.
	restoring := hasTaint(s.node, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect)
	if s.pool != nil && s.trigger() != volumes.TriggerNone && !restoring {
		return steps.Next, nil
	}
	// From here on the save is over: the node is let go of whatever happens below.
	if s.trigger() == volumes.TriggerCommitted && s.node.Annotations[AnnotationSaveOutcome] == "" {
		// The node goes without a save (its pool no longer saves, or it never ran its engine):
		// the hold on it waits for a save outcome, and without one would keep the node for
		// its whole termination grace period.
		why := outcomeSkippedCacheOff
		if restoring {
			why = outcomeSkippedRestoring
		}
		if err := c.markSkipped(ctx, s, why); err != nil {
			return steps.Stop, err
		}
	}
	if s.guard == nil && s.job == nil && s.pvc == nil {
		return steps.Stop, nil
	}
	log.FromContext(ctx).Info("releasing node: no longer going away, or its pool no longer saves the cache")
	return steps.Stop, c.cleanup(ctx, s)
}

// markSkipped records on a deleting node that no save will be made, which releases its hold.
// It is not a lost cache (nothing is reported): the pool stopped saving, or the node never ran
// its engine.
func (c *SaveController) markSkipped(ctx context.Context, s *saveState, why string) error {
	patch := client.MergeFrom(s.node.DeepCopy())
	if s.node.Annotations == nil {
		s.node.Annotations = map[string]string{}
	}
	s.node.Annotations[AnnotationSaveOutcome] = why
	if err := c.kube.Patch(ctx, s.node, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("recording on node %s that its cache is not saved, %w", s.name, err)
	}
	log.FromContext(ctx).Info("node goes without a save, its hold is released", "outcome", why)
	return nil
}

// poll is how long to wait before looking again without an event: the poll interval, or less
// when the deadline comes first.
func (c *SaveController) poll(s *saveState) time.Duration {
	if s.deadline.At.IsZero() {
		return pollInterval
	}
	return min(pollInterval, max(c.window().Left(c.clk.Now(), s.deadline), time.Second))
}

// Register wires the save controller: a node's save is looked at again whenever the Node, its
// NodeClaim, its engine pod or any object of its save changes.
func (c *SaveController) Register(mgr ctrl.Manager) error {
	toNode := handler.EnqueueRequestsFromMapFunc(requestForNode)
	ours := func(op ...string) builder.WatchesOption {
		return builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			if o.GetNamespace() != c.namespace() {
				return false
			}
			for _, v := range op {
				if o.GetLabels()[volumes.LabelOp] == v {
					return true
				}
			}
			return false
		}))
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("cache-save").
		WatchesRawSource(source.Channel(c.kick, handler.EnqueueRequestsFromMapFunc(c.servedNodes))).
		Watches(&corev1.Node{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(c.servesNode), nodewatch.Changed)).
		Watches(&karpv1.NodeClaim{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(c.servesNodeClaim))).
		Watches(&corev1.Pod{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			l := o.GetLabels()
			return l[volumes.LabelEngineName] == volumes.EngineName && c.servesPool(o) ||
				o.GetNamespace() == c.namespace() && (l[volumes.LabelOp] == volumes.OpGuard || l[volumes.LabelOp] == volumes.OpSave)
		}))).
		Watches(&batchv1.Job{}, toNode, ours(volumes.OpSave)).
		Watches(&corev1.PersistentVolumeClaim{}, toNode, ours(volumes.OpSave)).
		Watches(&snapshotv1.VolumeSnapshot{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == c.namespace() && o.GetLabels()[volumes.LabelSourceNode] != ""
		}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(counted.Reconciler("cache-save", c))
}
