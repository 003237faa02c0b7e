package enginecache

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/volumes"
)

// holdNode holds the node with a do-not-disrupt pod until the save concludes.
func (c *SaveController) holdNode(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.guard != nil || s.node == nil {
		return steps.Next, nil
	}
	// The cached Node may lag the outcome of a save that just concluded (and deleted its guard):
	// ask the API server before holding the node again.
	live, err := c.getNode(ctx, s.name, true)
	if err != nil {
		return steps.Stop, err
	}
	if live == nil || live.Annotations[AnnotationSaveOutcome] != "" {
		return steps.Stop, nil
	}
	var tolerations []corev1.Toleration
	if t := s.pool.Taint; t != nil {
		tolerations = append(tolerations, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: t.Effect})
	}
	guard := volumes.GuardPod(c.target(s.pool, s.name, s.node.Labels[corev1.LabelArchStable]), c.opts.GuardImage, tolerations)
	guard.Annotations[annotationNodeUID] = string(live.UID)
	created, err := c.createNew(ctx, guard)
	if err != nil {
		return steps.Stop, err
	}
	s.guard = guard
	if !created {
		// The guard exists and the cache has not seen it yet: this hold was reported when it
		// was created. Read it, so the steps below see its recorded deadline.
		if _, err := c.getFrom(ctx, c.live, guard.Name, s.guard); err != nil {
			return steps.Stop, err
		}
		return steps.Next, nil
	}
	why := "node is being deleted"
	if s.trigger() == volumes.TriggerTentative {
		why = "disruption " + s.claim.StatusConditions().Get(karpv1.ConditionTypeDisruptionReason).Reason
	}
	c.recorder.Eventf(s.node, corev1.EventTypeNormal, ReasonGuarded, msgGuarded, guard.Namespace, guard.Name, why)
	return steps.Next, nil
}

// awaitCommitment holds a tentatively disrupted node without touching its engine: the taint
// alone can still be withdrawn. The deletion (a watch event) wakes the save.
func (c *SaveController) awaitCommitment(_ context.Context, s *saveState) (steps.Exit, error) {
	if s.node != nil && s.trigger() != volumes.TriggerCommitted {
		return steps.Stop, nil
	}
	return steps.Next, nil
}

// checkDeadline bounds the save: past the deadline (minus the margin) the node goes without its
// cache; a save that has not started yet does not start without enough time.
func (c *SaveController) checkDeadline(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.node == nil {
		// The instance is gone: no deadline holds anything any more.
		return steps.Next, nil
	}
	d, err := c.deadline(ctx, s)
	if err != nil {
		return steps.Stop, err
	}
	s.deadline = d
	w := c.window()
	now := c.clk.Now()
	if w.Expired(now, d) {
		return steps.Stop, c.conclude(ctx, s, volumes.LostTimeout, fmt.Sprintf("deadline %s (margin %s) passed", stamp(d.At), w.Margin))
	}
	if s.job == nil {
		if ok, reason := w.CanStart(now, d); !ok {
			return steps.Stop, c.conclude(ctx, s, reason, fmt.Sprintf("%s left before the deadline %s, need %s", w.Left(now, d).Round(time.Second), stamp(d.At), w.Minimum))
		}
	}
	return steps.Next, nil
}

func (c *SaveController) window() volumes.Window {
	return volumes.Window{Margin: c.opts.SaveMargin, Minimum: c.opts.MinSaveTime}
}

// deadline is the one recorded on the guard, else computed from the NodeClaim and recorded.
func (c *SaveController) deadline(ctx context.Context, s *saveState) (volumes.Deadline, error) {
	recorded := volumes.Deadline{At: parseStamp(s.guard.Annotations[AnnotationDeadline]), SpotInterruption: s.guard.Annotations[annotationSpot] == "true"}
	if !recorded.At.IsZero() && (recorded.SpotInterruption || !c.mayBeInterrupted(s)) {
		return recorded, nil
	}
	// Karpenter publishes its interruption Event just before it deletes the NodeClaim, and
	// Events are sent asynchronously: the first look may come before it. Until the notice
	// window would have run out, look again (once per reconcile: the answer serves both the
	// recorded deadline and the one computed below).
	interrupted := false
	if c.mayBeInterrupted(s) {
		var err error
		if interrupted, err = c.spotInterrupted(ctx, s); err != nil {
			return volumes.Deadline{}, err
		}
		if !recorded.At.IsZero() && !interrupted {
			return recorded, nil
		}
	}
	in := volumes.DeadlineInput{Grace: s.pool.TerminationGracePeriod.Duration, Spot: interrupted}
	if cl := s.claim; cl != nil {
		in.TerminationTimestamp = cl.Annotations[karpv1.NodeClaimTerminationTimestampAnnotationKey]
		if cl.Spec.TerminationGracePeriod != nil {
			in.Grace = cl.Spec.TerminationGracePeriod.Duration
		}
		if cl.DeletionTimestamp != nil {
			in.Deleted = cl.DeletionTimestamp.Time
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
func (c *SaveController) replaceFailedGuard(ctx context.Context, s *saveState) (steps.Exit, error) {
	g := s.guard
	if g == nil || s.node == nil || g.Status.Phase != corev1.PodFailed {
		return steps.Next, nil
	}
	if since := c.clk.Since(parseStamp(g.Annotations[annotationGuardReplaced])); since < guardReplacePace {
		return steps.WaitFor(guardReplacePace - since), nil
	}
	why := strings.TrimSpace(g.Status.Reason + ": " + g.Status.Message)
	// Grace 0: the failed pod runs nothing, and its name must be free for the replacement.
	if err := c.kube.Delete(ctx, g, client.GracePeriodSeconds(0), client.Preconditions{UID: &g.UID}); client.IgnoreNotFound(err) != nil {
		return steps.Stop, fmt.Errorf("deleting failed guard %s, %w", g.Name, err)
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
		return steps.Stop, err
	}
	s.guard = replacement
	if n == 0 {
		c.recorder.Eventf(s.node, corev1.EventTypeWarning, ReasonGuardFailed, msgGuardFailed, g.Namespace, g.Name, why)
	}
	log.FromContext(ctx).Info("replaced a failed guard", "guard", g.Name, "why", why, "replacements", n+1)
	return steps.WaitFor(time.Second), nil
}

// awaitGuardRunning keeps the engine running, and the copy from starting, until the guard runs:
// a guard the kubelet has not started (or refused, above) holds nothing, and an engine stopped
// before the node is held could be gone with the node before its cache is copied. The guard's
// status change (a watch event) wakes the save.
func (c *SaveController) awaitGuardRunning(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.guard == nil || s.node == nil || s.job != nil || s.guard.Status.Phase == corev1.PodRunning {
		return steps.Next, nil
	}
	log.FromContext(ctx).V(1).Info("waiting for the guard to run", "guard", s.guard.Name, "phase", s.guard.Status.Phase)
	return steps.WaitFor(c.poll(s)), nil
}
