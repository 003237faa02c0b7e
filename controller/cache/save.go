package cache

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// Annotations on a save Job: the snapshot it will make (named from the node's UID, which is
// gone with the node), and the engine version whose cache it copies.
const (
	annotationSnapshot      = "warmpool.io/snapshot"
	annotationEngineVersion = "warmpool.io/engine-version"
	// annotationSpot on the guard marks a deadline cut short by a spot interruption notice.
	annotationSpot = "warmpool.io/spot-interruption"
	// annotationAwaitingRunners on the guard: since when the engine's stop waits for work pods
	// (set once, so the Event is recorded once).
	annotationAwaitingRunners = "warmpool.io/awaiting-runners"
	// annotationBaseFallback on the guard: the save volume's base snapshot could not be cloned
	// (why), so this save copies onto an empty volume. Set once, before the volume made from
	// the base is deleted: the save falls back once and never picks a base again.
	annotationBaseFallback = "warmpool.io/base-fallback"
	// annotationNodeUID on the guard: the UID of the Node it holds, which names the save's
	// report (its Events) even once the Node is gone.
	annotationNodeUID = "warmpool.io/node-uid"
	// annotationGuardReplaced on the guard: when a guard the kubelet refused or ended was
	// replaced by this one, and how many times (for the replacement's pace and its Event).
	annotationGuardReplaced     = "warmpool.io/guard-replaced"
	annotationGuardReplacements = "warmpool.io/guard-replacements"
)

// Karpenter's interruption controller (aws/karpenter-provider-aws v1.14,
// pkg/controllers/interruption) marks a NodeClaim it deletes for an EC2 spot interruption
// warning with nothing but this Event, on the NodeClaim and on its Node, published just before
// the deletion (events.SpotInterrupted); a spot NodeClaim deleted for any other reason has its
// whole termination grace period.
const reasonSpotInterrupted = "SpotInterrupted"

// ReasonGuardFailed: the kubelet refused or ended a guard pod (a Failed pod holds nothing); it
// was replaced.
const ReasonGuardFailed = "CacheGuardFailed"

// guardReplacePace is the least time between two replacements of a guard the kubelet keeps
// refusing (OutOfpods on a full node), so the controller does not spin on it.
const guardReplacePace = 5 * time.Second

// Save outcomes recorded in AnnotationSaveOutcome (and the save result metric label).
const (
	outcomeSaved   = volumes.ResultSaved
	outcomeUnclean = volumes.ResultUnclean
	outcomeFailed  = volumes.ResultFailed
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
	done     bool
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
	for _, step := range []func(context.Context, *saveState) (reconcile.Result, error){
		c.settled,
		c.withdrawn,
		c.ensureGuard,
		c.replaceFailedGuard,
		c.awaitCommitment,
		c.checkDeadline,
		c.awaitGuardRunning,
		c.awaitRunners,
		c.stopEngine,
		c.ensureVolume,
		c.checkBase,
		c.ensureCopy,
		c.awaitCopy,
		c.ensureSnapshot,
		c.awaitSnapshot,
	} {
		res, err := step(ctx, s)
		if err != nil || !res.IsZero() || s.done {
			return res, err
		}
	}
	return reconcile.Result{}, nil
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
	if s.pool == nil {
		return s, nil
	}
	if s.node != nil {
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

// settled cleans up after a save that concluded: the outcome is on the Node, or the Node is gone
// and nothing of the save runs any more.
func (c *SaveController) settled(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.node != nil && s.node.Annotations[AnnotationSaveOutcome] == "" {
		return reconcile.Result{}, nil
	}
	if s.node != nil {
		// The outcome was recorded with its report; a controller that died before delivering
		// it delivers it now, before the cleanup that would lose what it reads.
		if err := c.flushReport(ctx, s.node, annotationSaveReport); err != nil {
			return reconcile.Result{}, err
		}
	}
	if s.node == nil && (s.guard != nil || s.job != nil) {
		// The node vanished mid-save: what can finish without it still does (below).
		if s.pool == nil {
			s.done = true
			return reconcile.Result{}, c.cleanup(ctx, s)
		}
		return reconcile.Result{}, nil
	}
	s.done = true
	return reconcile.Result{}, c.cleanup(ctx, s)
}

// withdrawn lets go of a node that is not (or no longer) going away, or whose pool no longer
// saves its cache. Karpenter withdraws the disrupted taint when a disruption command fails.
func (c *SaveController) withdrawn(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.node == nil {
		return reconcile.Result{}, nil
	}
	// A node that still waits for its restore never ran its engine: there is nothing to save.
	restoring := hasTaint(s.node, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect)
	if s.pool != nil && s.trigger() != volumes.TriggerNone && !restoring {
		return reconcile.Result{}, nil
	}
	s.done = true
	if s.guard == nil && s.job == nil && s.pvc == nil {
		return reconcile.Result{}, nil
	}
	log.FromContext(ctx).Info("releasing node: no longer going away, or its pool no longer saves the cache")
	return reconcile.Result{}, c.cleanup(ctx, s)
}

// ensureGuard holds the node with a do-not-disrupt pod until the save concludes.
func (c *SaveController) ensureGuard(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.guard != nil || s.node == nil {
		return reconcile.Result{}, nil
	}
	// The cached Node may lag the outcome of a save that just concluded (and deleted its guard):
	// ask the API server before holding the node again.
	live, err := c.getNode(ctx, s.name, true)
	if err != nil {
		return reconcile.Result{}, err
	}
	if live == nil || live.Annotations[AnnotationSaveOutcome] != "" {
		s.done = true
		return reconcile.Result{}, nil
	}
	var tolerations []corev1.Toleration
	if t := s.pool.Taint; t != nil {
		tolerations = append(tolerations, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: t.Effect})
	}
	guard := volumes.GuardPod(c.target(s.pool, s.name, s.node.Labels[corev1.LabelArchStable]), c.opts.GuardImage, tolerations)
	guard.Annotations[annotationNodeUID] = string(live.UID)
	created, err := c.createNew(ctx, guard)
	if err != nil {
		return reconcile.Result{}, err
	}
	s.guard = guard
	if !created {
		// The guard exists and the cache has not seen it yet: this hold was reported when it
		// was created. Read it, so the steps below see its recorded deadline.
		if _, err := c.getFrom(ctx, c.live, guard.Name, s.guard); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil
	}
	why := "node is being deleted"
	if s.trigger() == volumes.TriggerTentative {
		why = "disruption " + s.claim.StatusConditions().Get(karpv1.ConditionTypeDisruptionReason).Reason
	}
	c.recorder.Eventf(s.node, corev1.EventTypeNormal, ReasonGuarded, "holding the node with pod %s/%s to save its engine cache (%s)", guard.Namespace, guard.Name, why)
	return reconcile.Result{}, nil
}

// awaitCommitment holds a tentatively disrupted node without touching its engine: the taint
// alone can still be withdrawn. The deletion (a watch event) wakes the save.
func (c *SaveController) awaitCommitment(_ context.Context, s *saveState) (reconcile.Result, error) {
	if s.node != nil && s.trigger() != volumes.TriggerCommitted {
		s.done = true
	}
	return reconcile.Result{}, nil
}

// checkDeadline bounds the save: past the deadline (minus the margin) the node goes without its
// cache; a save that has not started yet does not start without enough time.
func (c *SaveController) checkDeadline(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.node == nil {
		// The instance is gone: no deadline holds anything any more.
		return reconcile.Result{}, nil
	}
	d, err := c.deadline(ctx, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	s.deadline = d
	w := c.window()
	now := c.clk.Now()
	if w.Expired(now, d) {
		return reconcile.Result{}, c.conclude(ctx, s, volumes.LostTimeout, fmt.Sprintf("deadline %s (margin %s) passed", stamp(d.At), w.Margin))
	}
	if s.job == nil {
		if ok, reason := w.CanStart(now, d); !ok {
			return reconcile.Result{}, c.conclude(ctx, s, reason, fmt.Sprintf("%s left before the deadline %s, need %s", w.Left(now, d).Round(time.Second), stamp(d.At), w.Minimum))
		}
	}
	return reconcile.Result{}, nil
}

func (c *SaveController) window() volumes.Window {
	return volumes.Window{Margin: c.opts.SaveMargin, Minimum: c.opts.MinSaveTime}
}

// deadline is the one recorded on the guard, else computed from the NodeClaim and recorded.
func (c *SaveController) deadline(ctx context.Context, s *saveState) (volumes.Deadline, error) {
	if at := parseStamp(s.guard.Annotations[AnnotationDeadline]); !at.IsZero() {
		d := volumes.Deadline{At: at, SpotInterruption: s.guard.Annotations[annotationSpot] == "true"}
		// Karpenter publishes its interruption Event just before it deletes the NodeClaim, and
		// Events are sent asynchronously: the first look may come before it. Until the notice
		// window would have run out, look again.
		if d.SpotInterruption || !c.mayBeInterrupted(s) {
			return d, nil
		}
		interrupted, err := c.spotInterrupted(ctx, s)
		if err != nil || !interrupted {
			return d, err
		}
	}
	in := volumes.DeadlineInput{Grace: s.pool.TerminationGracePeriod.Duration}
	if cl := s.claim; cl != nil {
		in.TerminationTimestamp = cl.Annotations[karpv1.NodeClaimTerminationTimestampAnnotationKey]
		if cl.Spec.TerminationGracePeriod != nil {
			in.Grace = cl.Spec.TerminationGracePeriod.Duration
		}
		if cl.DeletionTimestamp != nil {
			in.Deleted = cl.DeletionTimestamp.Time
			if c.mayBeInterrupted(s) {
				interrupted, err := c.spotInterrupted(ctx, s)
				if err != nil {
					return volumes.Deadline{}, err
				}
				in.Spot = interrupted
			}
		}
	}
	if in.Deleted.IsZero() && s.node.DeletionTimestamp != nil {
		in.Deleted = s.node.DeletionTimestamp.Time
	}
	d, err := volumes.NodeDeadline(in)
	if err != nil {
		log.FromContext(ctx).Error(err, "using deletion time plus grace period instead")
	}
	patch := client.MergeFrom(s.guard.DeepCopy())
	if s.guard.Annotations == nil {
		s.guard.Annotations = map[string]string{}
	}
	s.guard.Annotations[AnnotationDeadline] = stamp(d.At)
	if d.SpotInterruption {
		s.guard.Annotations[annotationSpot] = "true"
	}
	if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
		return d, fmt.Errorf("recording deadline on guard %s, %w", s.guard.Name, err)
	}
	if d.SpotInterruption {
		log.FromContext(ctx).Info("spot interruption: the save must end within the notice window", "deadline", stamp(d.At))
	}
	return d, nil
}

// mayBeInterrupted says whether the node may be a spot instance Karpenter deleted on an
// interruption warning whose Event has not been seen yet: a spot NodeClaim being deleted, whose
// notice window would not have ended.
func (c *SaveController) mayBeInterrupted(s *saveState) bool {
	cl := s.claim
	if cl == nil || cl.DeletionTimestamp == nil || cl.Labels[karpv1.CapacityTypeLabelKey] != karpv1.CapacityTypeSpot {
		return false
	}
	return c.clk.Now().Before(cl.DeletionTimestamp.Add(volumes.SpotNoticeWindow))
}

// spotInterrupted says whether Karpenter's interruption controller published its
// SpotInterrupted Event for the node's NodeClaim or Node. It is read from the API server (the
// manager caches no Events): a list of the few Events of that reason in the namespace the
// recorder puts a cluster-scoped object's Events in.
func (c *SaveController) spotInterrupted(ctx context.Context, s *saveState) (bool, error) {
	events := &corev1.EventList{}
	if err := c.live.List(ctx, events, client.InNamespace(metav1.NamespaceDefault), client.MatchingFields{"reason": reasonSpotInterrupted}); err != nil {
		return false, fmt.Errorf("listing %s events, %w", reasonSpotInterrupted, err)
	}
	for _, e := range events.Items {
		switch uid := e.InvolvedObject.UID; {
		case s.claim != nil && uid == s.claim.UID, s.node != nil && uid == s.node.UID:
			return true, nil
		}
	}
	return false, nil
}

// replaceFailedGuard replaces a guard that no longer holds anything: the kubelet refused it
// (OutOfpods on a full node, or another admission failure) or ended it (a node-pressure
// eviction), and Karpenter's drain ignores a Failed pod. The replacement carries what the
// failed one recorded (deadline, engine version, base fallback), so the save goes on where it
// was. A guard refused again is replaced at most every guardReplacePace; the first
// replacement of a hold is an Event, later ones are logged.
func (c *SaveController) replaceFailedGuard(ctx context.Context, s *saveState) (reconcile.Result, error) {
	g := s.guard
	if g == nil || s.node == nil || g.Status.Phase != corev1.PodFailed {
		return reconcile.Result{}, nil
	}
	if since := c.clk.Since(parseStamp(g.Annotations[annotationGuardReplaced])); since < guardReplacePace {
		return reconcile.Result{RequeueAfter: guardReplacePace - since}, nil
	}
	why := strings.TrimSpace(g.Status.Reason + ": " + g.Status.Message)
	// Grace 0: the failed pod runs nothing, and its name must be free for the replacement.
	if err := c.kube.Delete(ctx, g, client.GracePeriodSeconds(0), client.Preconditions{UID: &g.UID}); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, fmt.Errorf("deleting failed guard %s, %w", g.Name, err)
	}
	replacement := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Namespace: g.Namespace, Name: g.Name, Labels: g.Labels, Annotations: map[string]string{},
	}, Spec: *g.Spec.DeepCopy()}
	for k, v := range g.Annotations {
		replacement.Annotations[k] = v
	}
	n, _ := strconv.Atoi(g.Annotations[annotationGuardReplacements])
	replacement.Annotations[annotationGuardReplacements] = strconv.Itoa(n + 1)
	replacement.Annotations[annotationGuardReplaced] = stamp(c.clk.Now())
	if _, err := c.createNew(ctx, replacement); err != nil {
		return reconcile.Result{}, err
	}
	s.guard = replacement
	if n == 0 {
		c.recorder.Eventf(s.node, corev1.EventTypeWarning, ReasonGuardFailed,
			"guard pod %s/%s failed (%s), so it held nothing: replaced it; the engine is stopped only once a guard runs", g.Namespace, g.Name, why)
	}
	log.FromContext(ctx).Info("replaced a failed guard", "guard", g.Name, "why", why, "replacements", n+1)
	return reconcile.Result{RequeueAfter: time.Second}, nil
}

// awaitGuardRunning keeps the engine running, and the copy from starting, until the guard runs:
// a guard the kubelet has not started (or refused, above) holds nothing, and an engine stopped
// before the node is held could be gone with the node before its cache is copied. The guard's
// status change (a watch event) wakes the save.
func (c *SaveController) awaitGuardRunning(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.guard == nil || s.node == nil || s.job != nil || s.guard.Status.Phase == corev1.PodRunning {
		return reconcile.Result{}, nil
	}
	log.FromContext(ctx).V(1).Info("waiting for the guard to run", "guard", s.guard.Name, "phase", s.guard.Status.Phase)
	return reconcile.Result{RequeueAfter: c.poll(s)}, nil
}

// awaitRunners keeps the engine running while CI work on the node may still use it. No engine
// release bounds its graceful stop while a client is attached (v0.21+ waits for every client;
// before, the gRPC stop ahead of the capped one does), so an engine stopped under a running job
// either outlives its grace period and is SIGKILLed, which wipes the cache, or cuts the job off.
// Karpenter evicts these pods first (DaemonSet pods go last), so the wait is normally short; it
// is bounded by the latest moment the engine can still stop and leave time for a copy. Past
// that the engine is stopped anyway and the outcome (unclean, most likely) is reported.
func (c *SaveController) awaitRunners(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.job != nil || s.pvc != nil || s.node == nil || !volumes.EngineStoppable(s.signals) {
		return reconcile.Result{}, nil
	}
	engines, err := c.enginePods(ctx, s.pool, s.name)
	if err != nil || len(engines) == 0 {
		return reconcile.Result{}, err
	}
	for _, p := range engines {
		if p.DeletionTimestamp != nil {
			return reconcile.Result{}, nil // already told to stop: waiting now changes nothing
		}
	}
	pods := &corev1.PodList{}
	// Read live with the API server's own spec.nodeName selector: this runs only for nodes
	// being saved, and needs no pod index in the cache.
	if err := c.live.List(ctx, pods, client.MatchingFields{"spec.nodeName": s.name}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing pods on node %s, %w", s.name, err)
	}
	var busy []string
	for i := range pods.Items {
		if isWork(&pods.Items[i]) && !slices.ContainsFunc(engines, func(e *corev1.Pod) bool { return e.UID == pods.Items[i].UID }) {
			busy = append(busy, pods.Items[i].Namespace+"/"+pods.Items[i].Name)
		}
	}
	if len(busy) == 0 {
		return reconcile.Result{}, nil
	}
	now := c.clk.Now()
	by := c.window().EngineStopBy(s.deadline, engineStopReserve(s.pool))
	if !now.Before(by) {
		c.recorder.Eventf(s.node, corev1.EventTypeWarning, ReasonRunnersOutlived,
			"stopping the engine although %d pods still run on the node (%s): the save must start by %s; an engine stopped under a job may be killed before it exits cleanly",
			len(busy), strings.Join(firstN(busy, 3), ", "), stamp(by))
		return reconcile.Result{}, nil
	}
	if s.guard.Annotations[annotationAwaitingRunners] == "" {
		patch := client.MergeFrom(s.guard.DeepCopy())
		s.guard.Annotations[annotationAwaitingRunners] = stamp(now)
		if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("recording the wait for runners on guard %s, %w", s.guard.Name, err)
		}
		c.recorder.Eventf(s.node, corev1.EventTypeNormal, ReasonAwaitingRunners,
			"waiting for %d pods to finish before stopping the engine (%s), until %s at the latest", len(busy), strings.Join(firstN(busy, 3), ", "), stamp(by))
	}
	log.FromContext(ctx).V(1).Info("waiting for work pods before stopping the engine", "pods", busy, "until", by)
	return reconcile.Result{RequeueAfter: min(runnerPoll, max(by.Sub(now), time.Second))}, nil
}

// engineStopReserve is the time the engine's own stop needs once no client is attached (prune,
// persist its cache, close the bolt DBs, syncfs), plus SIGTERM delivery: warmpool reserves it,
// the engine enforces nothing.
func engineStopReserve(p *config.Pool) time.Duration {
	return time.Duration(p.Engine.StopSecondsOrDefault()+config.EngineExitSeconds) * time.Second
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// stopEngine evicts the node's engine pod so its preStop and graceful exit write the clean
// shutdown marker, and waits until it is gone. Karpenter would not evict it while the guard
// holds the drain (DaemonSet pods go in a later drain group), and the DaemonSet controller does
// not put it back because it does not tolerate the disrupted taint.
func (c *SaveController) stopEngine(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.job != nil || s.pvc != nil {
		return reconcile.Result{}, nil
	}
	if s.node == nil {
		return reconcile.Result{}, c.conclude(ctx, s, volumes.LostNodeGone, "the node went before its engine stopped")
	}
	if !volumes.EngineStoppable(s.signals) {
		// Karpenter taints the node as soon as its finalizer runs.
		return reconcile.Result{RequeueAfter: c.poll(s)}, nil
	}
	engines, err := c.enginePods(ctx, s.pool, s.name)
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(engines) == 0 {
		return reconcile.Result{}, nil
	}
	if v := engines[0].Labels[volumes.LabelEngineVersion]; v != "" && s.guard.Annotations[annotationEngineVersion] != v {
		// The cache is the running engine's, which may predate a config change of the version.
		patch := client.MergeFrom(s.guard.DeepCopy())
		s.guard.Annotations[annotationEngineVersion] = v
		if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("recording engine version on guard %s, %w", s.guard.Name, err)
		}
	}
	for _, p := range engines {
		if p.DeletionTimestamp != nil {
			continue
		}
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
		if err := c.kube.SubResource("eviction").Create(ctx, p, ev); err != nil {
			if apierrors.IsTooManyRequests(err) {
				log.FromContext(ctx).Info("engine eviction blocked by a disruption budget, retrying", "pod", p.Name)
				continue
			}
			if !apierrors.IsNotFound(err) {
				return reconcile.Result{}, fmt.Errorf("evicting engine pod %s/%s, %w", p.Namespace, p.Name, err)
			}
		}
		c.recorder.Eventf(s.node, corev1.EventTypeNormal, ReasonEngineStopped, "evicted engine pod %s/%s so it shuts down cleanly before the save", p.Namespace, p.Name)
	}
	return reconcile.Result{RequeueAfter: c.poll(s)}, nil
}

// ensureVolume creates the PVC the cache is copied onto: cloned from the newest good snapshot
// of the same key when there is one (the copy then writes only what changed since, and the EBS
// snapshot uploads only the changed blocks), else empty. A save that already fell back
// (annotationBaseFallback) starts empty. Before it is made, its storage is checked
// (checkSaveStorage); a volume the cache turned out not to fit is made anew to fit (checkFit).
func (c *SaveController) ensureVolume(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.pvc != nil {
		if res, moved, err := c.checkFit(ctx, s); moved || err != nil {
			return res, err
		}
		return reconcile.Result{}, nil
	}
	if s.job != nil || s.snapshot != nil {
		return reconcile.Result{}, c.conclude(ctx, s, outcomeFailed, "the save volume was deleted mid-save")
	}
	// The volume a fallback deleted may still be going (its finalizers wait for the pod of the
	// Job deleted with it): a create would find it and take it for the new one.
	old := &corev1.PersistentVolumeClaim{}
	if err := c.live.Get(ctx, types.NamespacedName{Namespace: c.namespace(), Name: volumes.SaveName(s.name)}, old); err == nil {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	} else if !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("reading save volume %s, %w", volumes.SaveName(s.name), err)
	}
	if ok, err := c.checkSaveStorage(ctx, s); !ok || err != nil {
		return reconcile.Result{}, err
	}
	t := c.saveTarget(s)
	var base *snapshotv1.VolumeSnapshot
	if s.guard.Annotations[annotationBaseFallback] == "" {
		var err error
		if base, err = c.baseSnapshot(ctx, t); err != nil {
			return reconcile.Result{}, err
		}
	}
	baseName := ""
	if base != nil {
		baseName = base.Name
	}
	pvc := volumes.SavePVC(t, s.pool.Cache.StorageClassName, c.saveVolumeSize(s, base), baseName)
	pvc.Annotations[AnnotationStarted] = stamp(c.clk.Now())
	if err := c.create(ctx, pvc); err != nil {
		return reconcile.Result{}, err
	}
	s.pvc = pvc
	if base != nil {
		log.FromContext(ctx).Info("save volume cloned from the previous snapshot", "base", base.Name)
	}
	return reconcile.Result{}, nil
}

// baseSnapshot is the snapshot a save of t clones: the one a restore of that key would choose.
func (c *SaveController) baseSnapshot(ctx context.Context, t volumes.Target) (*snapshotv1.VolumeSnapshot, error) {
	key := volumes.SnapshotKey{Pool: t.Pool, Arch: t.Arch, EngineVersion: t.EngineVersion}
	if key.Arch == "" || key.EngineVersion == "" {
		return nil, nil
	}
	list := &snapshotv1.VolumeSnapshotList{}
	if err := c.kube.List(ctx, list, client.InNamespace(c.namespace()), client.MatchingLabels{
		volumes.LabelPool: key.Pool, volumes.LabelArch: key.Arch, volumes.LabelEngineVersion: key.EngineVersion,
	}); err != nil {
		return nil, fmt.Errorf("listing snapshots of %+v, %w", key, err)
	}
	return volumes.ChooseSnapshot(list.Items, key), nil
}

// checkBase falls back, once, to an empty volume when the snapshot the save volume is cloned
// from cannot be cloned: it was deleted (the provisioner fails "error getting snapshot"), or is
// being deleted before the provisioner protected it (external-provisioner refuses "snapshot ...
// is being deleted" unless its own volumesnapshot-as-source-protection finalizer is on it), or
// the volume stayed Pending past SaveVolumeBindTimeout. Either way the PVC would stay Pending
// and the copy never start, holding the node until the deadline for nothing. The Job (whose pod
// cannot have run without the volume) and the PVC are deleted; ensureVolume makes an empty one.
func (c *SaveController) checkBase(ctx context.Context, s *saveState) (reconcile.Result, error) {
	base := volumes.SnapshotSourceOf(s.pvc)
	if base == "" || s.node == nil || s.snapshot != nil || s.pvc.Status.Phase == corev1.ClaimBound || s.pvc.Spec.VolumeName != "" {
		// Without its node the save cannot copy anything any more: awaitCopy concludes it.
		return reconcile.Result{}, nil
	}
	if s.guard.Annotations[annotationBaseFallback] != "" {
		// Decided and reported already (a crash came before the deletions below).
		return c.dropVolume(ctx, s)
	}
	why := ""
	snap := &snapshotv1.VolumeSnapshot{}
	err := c.live.Get(ctx, types.NamespacedName{Namespace: c.namespace(), Name: base}, snap)
	switch {
	case apierrors.IsNotFound(err):
		why = fmt.Sprintf("its base snapshot %s was deleted before the volume was provisioned", base)
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("reading base snapshot %s, %w", base, err)
	case snap.DeletionTimestamp != nil && !slices.Contains(snap.Finalizers, provisionerSourceProtection):
		why = fmt.Sprintf("its base snapshot %s is being deleted and the provisioner had not started cloning it", base)
	}
	if why == "" {
		started := parseStamp(s.pvc.Annotations[AnnotationStarted])
		if started.IsZero() {
			started = s.pvc.CreationTimestamp.Time
		}
		pending := c.clk.Since(started)
		if pending < c.opts.SaveVolumeBindTimeout {
			return reconcile.Result{}, nil
		}
		why = fmt.Sprintf("the volume cloned from %s was still Pending after %s", base, pending.Round(time.Second))
	}
	patch := client.MergeFrom(s.guard.DeepCopy())
	s.guard.Annotations[annotationBaseFallback] = why
	if err := c.kube.Patch(ctx, s.guard, patch); err != nil {
		return reconcile.Result{}, fmt.Errorf("recording the base fallback on guard %s, %w", s.guard.Name, err)
	}
	c.recorder.Eventf(nodeRef(s.name, s.node), corev1.EventTypeWarning, ReasonSaveBaseLost,
		"save volume not cloned: %s; copying the whole cache onto an empty volume instead (a full copy and a full snapshot)", why)
	log.FromContext(ctx).Info("falling back to an empty save volume", "reason", why)
	return c.dropVolume(ctx, s)
}

// dropVolume deletes the save's Job and volume, for ensureVolume to make the volume anew.
func (c *SaveController) dropVolume(ctx context.Context, s *saveState) (reconcile.Result, error) {
	for _, o := range []client.Object{s.job, s.pvc} {
		if o != nil {
			if err := c.remove(ctx, o); err != nil {
				return reconcile.Result{}, err
			}
		}
	}
	s.job, s.pvc = nil, nil
	return reconcile.Result{RequeueAfter: time.Second}, nil
}

// saveTarget is the node's target with the engine version of the cache being saved.
func (c *SaveController) saveTarget(s *saveState) volumes.Target {
	arch := ""
	if s.node != nil {
		arch = s.node.Labels[corev1.LabelArchStable]
	}
	t := c.target(s.pool, s.name, arch)
	if s.guard != nil && s.guard.Annotations[annotationEngineVersion] != "" {
		t.EngineVersion = s.guard.Annotations[annotationEngineVersion]
	}
	if s.job != nil && s.job.Annotations[annotationEngineVersion] != "" {
		t.EngineVersion = s.job.Annotations[annotationEngineVersion]
	}
	return t
}

// ensureCopy starts the save Job, bounded by the time left.
func (c *SaveController) ensureCopy(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.job != nil {
		return reconcile.Result{}, nil
	}
	if s.node == nil {
		return reconcile.Result{}, c.conclude(ctx, s, volumes.LostNodeGone, "the node went before the copy started")
	}
	now := c.clk.Now()
	t := c.saveTarget(s)
	job := volumes.SaveJob(t, c.window().ActiveDeadlineSeconds(now, s.deadline))
	job.Annotations = map[string]string{
		AnnotationStarted:       stamp(now),
		annotationSnapshot:      volumes.SnapshotName(s.pool.Name, s.name, string(s.node.UID)),
		annotationEngineVersion: t.EngineVersion,
	}
	if base := volumes.SnapshotSourceOf(s.pvc); base != "" {
		job.Annotations[volumes.AnnotationBaseSnapshot] = base
	}
	if err := c.create(ctx, job); err != nil {
		return reconcile.Result{}, err
	}
	s.job = job
	return reconcile.Result{RequeueAfter: c.poll(s)}, nil
}

// awaitCopy reads the Job's result: only a saved cache goes on to a snapshot.
func (c *SaveController) awaitCopy(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.snapshot != nil {
		return reconcile.Result{}, nil
	}
	r, done, err := c.jobResult(ctx, s.job)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		if s.node == nil {
			return reconcile.Result{}, c.conclude(ctx, s, volumes.LostNodeGone, "the node went before the copy finished")
		}
		return reconcile.Result{RequeueAfter: c.poll(s)}, nil
	}
	switch r.Result {
	case volumes.ResultSaved:
		s.result = r
		return reconcile.Result{}, nil
	case volumes.ResultUnclean:
		return reconcile.Result{}, c.conclude(ctx, s, outcomeUnclean, r.Reason)
	}
	if jobOutOfTime(s.job, c.clk.Now()) {
		// The Job's activeDeadlineSeconds is the time left, rounded down, counted from its own
		// start: the Job controller may stop the copy a moment before checkDeadline would. A
		// copy stopped for running out of time is a timeout, not a broken save.
		return reconcile.Result{}, c.conclude(ctx, s, volumes.LostTimeout, fmt.Sprintf("save job %s ran out of time before the deadline %s: %s", s.job.Name, stamp(s.deadline.At), r.Reason))
	}
	return reconcile.Result{}, c.conclude(ctx, s, outcomeFailed, fmt.Sprintf("%s: %s", r.Result, r.Reason))
}

// jobOutOfTime tells whether the Job was, or was about to be, stopped by its active deadline.
func jobOutOfTime(job *batchv1.Job, now time.Time) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue && c.Reason == batchv1.JobReasonDeadlineExceeded {
			return true
		}
	}
	if job.Status.StartTime == nil || job.Spec.ActiveDeadlineSeconds == nil {
		return false
	}
	return !now.Before(job.Status.StartTime.Add(time.Duration(*job.Spec.ActiveDeadlineSeconds) * time.Second))
}

// ensureSnapshot snapshots the saved volume.
func (c *SaveController) ensureSnapshot(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if s.snapshot != nil {
		return reconcile.Result{}, nil
	}
	t := c.saveTarget(s)
	if s.result.Architecture != "" {
		t.Arch = s.result.Architecture
	}
	snap := volumes.Snapshot(t, s.job.Annotations[annotationSnapshot], s.pool.Cache.SnapshotClassName, s.job.Annotations[volumes.AnnotationBaseSnapshot], s.result)
	if snap.Name == "" {
		return reconcile.Result{}, c.conclude(ctx, s, outcomeFailed, "save job "+s.job.Name+" names no snapshot")
	}
	if err := c.create(ctx, snap); err != nil {
		return reconcile.Result{}, err
	}
	s.snapshot = snap
	return reconcile.Result{RequeueAfter: c.poll(s)}, nil
}

// awaitSnapshot waits for the snapshot to be cut (status.creationTime set); the save is then
// done and the node released. An EBS snapshot is point-in-time from its creation: the upload to
// S3 that readyToUse waits for needs neither the node nor (for EBS) the volume, so holding the
// node for it would only cost time and a disruption budget slot. Whether the upload succeeds
// is the GC controller's to watch (watchUploads), from the snapshot alone.
func (c *SaveController) awaitSnapshot(ctx context.Context, s *saveState) (reconcile.Result, error) {
	if !volumes.Cut(s.snapshot) {
		if st := s.snapshot.Status; st != nil && st.Error != nil && st.Error.Message != nil {
			log.FromContext(ctx).Info("snapshot reports an error before its cut, waiting for the snapshotter to retry", "snapshot", s.snapshot.Name, "error", *st.Error.Message)
		}
		if s.node == nil && s.guard != nil {
			// A detached volume can still be snapshotted, so the cut is awaited without the
			// node; but no longer than the deadline the guard recorded.
			if at := parseStamp(s.guard.Annotations[AnnotationDeadline]); !at.IsZero() && !c.clk.Now().Before(at) {
				return reconcile.Result{}, c.conclude(ctx, s, volumes.LostNodeGone, fmt.Sprintf("the node went and snapshot %s was not cut by the deadline %s", s.snapshot.Name, stamp(at)))
			}
		}
		return reconcile.Result{RequeueAfter: c.poll(s)}, nil
	}
	return reconcile.Result{}, c.conclude(ctx, s, outcomeSaved, "")
}

// poll is how long to wait before looking again without an event: the poll interval, or less
// when the deadline comes first.
func (c *SaveController) poll(s *saveState) time.Duration {
	if s.deadline.At.IsZero() {
		return pollInterval
	}
	return min(pollInterval, max(c.window().Left(c.clk.Now(), s.deadline), time.Second))
}

// conclude records the outcome on the Node, with its report (the commit point: after it the
// save never runs again), delivers the report, and cleans up. Without the Node, the save's
// guard, PVC and Job are the record: they are removed only after the report was delivered, so a
// restarted controller concludes again and delivers the same report (its Events exist by then,
// and nothing is counted twice).
func (c *SaveController) conclude(ctx context.Context, s *saveState, outcome, detail string) error {
	r := c.report(s, outcome, detail)
	if s.node != nil {
		patch := client.MergeFrom(s.node.DeepCopy())
		if s.node.Annotations == nil {
			s.node.Annotations = map[string]string{}
		}
		s.node.Annotations[AnnotationSaveOutcome] = outcome
		setReport(s.node.Annotations, annotationSaveReport, r)
		if err := c.kube.Patch(ctx, s.node, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("recording save outcome on node %s, %w", s.name, err)
		}
	}
	if err := c.deliver(ctx, r); err != nil {
		return err
	}
	if s.node != nil {
		if err := c.clearReport(ctx, s.node, annotationSaveReport); err != nil {
			return err
		}
	}
	s.done = true
	return c.cleanup(ctx, s)
}

// saveReportID names a node's save: by its Node's UID (kept on the guard for when the Node is
// gone), else by its snapshot's name, which is derived from that UID.
func saveReportID(s *saveState) string {
	switch {
	case s.node != nil:
		return "save/" + string(s.node.UID)
	case s.guard != nil && s.guard.Annotations[annotationNodeUID] != "":
		return "save/" + s.guard.Annotations[annotationNodeUID]
	case s.job != nil && s.job.Annotations[annotationSnapshot] != "":
		return "save/" + s.job.Annotations[annotationSnapshot]
	}
	return "save/" + s.name
}

// report is what the save's outcome tells: its Events and metrics.
func (c *SaveController) report(s *saveState, outcome, detail string) *report {
	pool := s.poolName
	r := &report{ID: saveReportID(s), Log: "cache save concluded", LogValues: []string{"outcome", outcome, "detail", detail}}
	var uid types.UID
	if s.node != nil {
		uid = s.node.UID
	} else if s.guard != nil {
		uid = types.UID(s.guard.Annotations[annotationNodeUID])
	}
	event := func(eventType, reason, message string) { r.event(nodeEvent(s.name, uid, eventType, reason, message)) }
	if s.job != nil {
		r.count("warmpool_cache_saves_total", pool, outcome)
	}
	if outcome != outcomeSaved {
		r.count("warmpool_cache_lost_total", pool, outcome)
	}
	switch outcome {
	case outcomeSaved:
		// The snapshot carries the copier's figures: the reconcile that sees it ready may be a
		// later one (or another process) than the one that read the Job.
		res, took := resultOf(s.snapshot), time.Duration(0)
		if s.job != nil {
			if started := parseStamp(s.job.Annotations[AnnotationStarted]); !started.IsZero() {
				took = c.clk.Since(started)
				r.observe("warmpool_cache_save_duration_seconds", took.Seconds(), pool)
			}
		}
		r.observe("warmpool_cache_save_bytes", float64(res.Bytes), pool)
		from := "a full copy onto an empty volume"
		if base := s.snapshot.Annotations[volumes.AnnotationBaseSnapshot]; base != "" {
			from = "incremental, cloned from " + base
		}
		released := "node released"
		if s.node == nil {
			released = "the node had gone already"
		}
		event(corev1.EventTypeNormal, ReasonSaved, fmt.Sprintf("cache saved to VolumeSnapshot %s/%s (%s): %d bytes, %d files, copy %.0fs, save %s; snapshot cut, %s, upload continues",
			s.snapshot.Namespace, s.snapshot.Name, from, res.Bytes, res.Files, res.DurationSeconds, took.Round(time.Second), released))
		r.event(objectEvent(s.snapshot, snapshotv1.SchemeGroupVersion.String(), "VolumeSnapshot", corev1.EventTypeNormal, ReasonSaved,
			fmt.Sprintf("saved from node %s (%s): %d bytes, %d files", s.name, from, res.Bytes, res.Files)))
	case outcomeUnclean:
		event(corev1.EventTypeWarning, ReasonUnclean, fmt.Sprintf("engine cache not saved: the engine did not shut down cleanly (%s); a copy would restore cold", detail))
	case outcomeFailed:
		event(corev1.EventTypeWarning, ReasonSaveFailed, "engine cache not saved: "+detail)
	case volumes.LostTimeout:
		event(corev1.EventTypeWarning, ReasonSaveTimedOut, fmt.Sprintf("engine cache not saved: %s; released the node", detail))
	default:
		event(corev1.EventTypeWarning, ReasonLost, fmt.Sprintf("engine cache not saved (%s): %s", outcome, detail))
	}
	return r
}

// cleanup deletes the save's Job, its PVC and the guard, which lets Karpenter's drain finish.
// The PVC goes even while its snapshot uploads: the CSI snapshot-controller keeps its
// snapshot.storage.kubernetes.io/pvc-as-source-protection finalizer on it until the snapshot is
// ready, and EBS needs the volume only until the cut. A snapshot that was never cut serves
// nothing once the save concluded (without its source it would never be cut: the
// snapshot-controller refuses to protect a PVC being deleted), so it goes too; a cut one stays,
// and the GC controller watches its upload.
func (c *SaveController) cleanup(ctx context.Context, s *saveState) error {
	if s.job != nil {
		if err := c.remove(ctx, s.job); err != nil {
			return err
		}
	}
	if s.snapshot != nil && !volumes.Cut(s.snapshot) {
		if err := c.remove(ctx, s.snapshot); err != nil {
			return err
		}
	}
	if s.pvc != nil {
		if err := c.remove(ctx, s.pvc); err != nil {
			return err
		}
	}
	if s.guard != nil {
		if err := c.remove(ctx, s.guard); err != nil {
			return err
		}
	}
	return nil
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
		WatchesRawSource(source.Channel(c.kick, handler.EnqueueRequestsFromMapFunc(c.allPoolNodes))).
		Watches(&corev1.Node{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[volumes.LabelPool] != ""
		}), nodewatch.Changed)).
		Watches(&karpv1.NodeClaim{}, toNode).
		Watches(&corev1.Pod{}, toNode, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			l := o.GetLabels()
			return l[volumes.LabelEngineName] == volumes.EngineName ||
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

// resultOf reads the copier's figures back from a snapshot's annotations.
func resultOf(snap *snapshotv1.VolumeSnapshot) volumes.JobResult {
	r := volumes.JobResult{Result: volumes.ResultSaved}
	r.Bytes, _ = strconv.ParseInt(snap.Annotations[volumes.AnnotationBytes], 10, 64)
	r.Files, _ = strconv.ParseInt(snap.Annotations[volumes.AnnotationFiles], 10, 64)
	r.DurationSeconds, _ = strconv.ParseFloat(snap.Annotations[volumes.AnnotationDuration], 64)
	return r
}
