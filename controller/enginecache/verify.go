package enginecache

import (
	"context"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// DefaultVerifyTimeout bounds the wait for the engine to become Ready on a restored cache and
// tell whether it kept it. A large cache takes a while to open, but an engine that is not Ready
// after this long is not waited for: the restore is reported unverified.
const DefaultVerifyTimeout = 15 * time.Minute

// restoreID names one restore of one snapshot onto one node (a node UID is never reused).
func restoreID(n *corev1.Node, snapshot string) string {
	return snapshot + "@" + string(n.UID)
}

// verifying says the node was released on a restored cache whose verdict is still due.
func (s *restoreState) verifying() bool {
	return s.node != nil && s.node.Annotations[AnnotationRestore] == restoreVerifying &&
		!hasTaint(s.node, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect)
}

// verifySteps ask the engine, once it runs on the restored cache, whether it kept it.
func (c *RestoreController) verifySteps() steps.List[restoreState] {
	return steps.List[restoreState]{
		{Name: "deliverReports", Run: c.deliverReports},
		{Name: "awaitEngineReady", Run: c.awaitEngineReady},
		{Name: "startVerify", Run: c.startVerify},
		{Name: "awaitVerify", Run: c.awaitVerify},
	}
}

// verifyLeft is the time before the verification gives up.
func (c *RestoreController) verifyLeft(s *restoreState) time.Duration {
	released := parseStamp(s.node.Annotations[AnnotationRestoreReleased])
	if released.IsZero() {
		return 0
	}
	return released.Add(c.opts.VerifyTimeout).Sub(c.clk.Now())
}

// awaitEngineReady waits for the node's engine pod to be Ready: the engine decides to keep or
// wipe its cache before it serves, and it is Ready only once it serves.
func (c *RestoreController) awaitEngineReady(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.verify != nil {
		return steps.Next, nil
	}
	if s.pool == nil {
		return steps.Stop, c.concludeVerify(ctx, s, restoreUnverified, fmt.Sprintf("pool %q no longer has the cache enabled", s.poolName))
	}
	engines, err := c.enginePods(ctx, s.pool, s.name)
	if err != nil {
		return steps.Stop, err
	}
	for _, p := range engines {
		if podReady(p) {
			return steps.Next, nil
		}
	}
	left := c.verifyLeft(s)
	if left <= 0 {
		return steps.Stop, c.concludeVerify(ctx, s, restoreUnverified, fmt.Sprintf("the engine was not Ready within %s of the restore", c.opts.VerifyTimeout))
	}
	return steps.WaitFor(min(pollInterval, left)), nil
}

// startVerify starts the Job that reads the restore marker the engine would have wiped.
func (c *RestoreController) startVerify(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.verify != nil {
		return steps.Next, nil
	}
	left := c.verifyLeft(s)
	if left <= 0 {
		return steps.Stop, c.concludeVerify(ctx, s, restoreUnverified, fmt.Sprintf("no time left to verify within %s of the restore", c.opts.VerifyTimeout))
	}
	job := volumes.VerifyJob(c.target(s.pool, s.name, s.arch), s.node.Annotations[AnnotationRestoreID], int64(left/time.Second))
	if err := c.create(ctx, job); err != nil {
		return steps.Stop, err
	}
	s.verify = job
	return steps.WaitFor(min(pollInterval, max(left, time.Second))), nil
}

// awaitVerify reads the verdict: warm, or wiped (the snapshot is then quarantined).
func (c *RestoreController) awaitVerify(ctx context.Context, s *restoreState) (steps.Exit, error) {
	r, done, err := c.jobResult(ctx, s.verify)
	if err != nil {
		return steps.Stop, err
	}
	if !done {
		if left := c.verifyLeft(s); left <= -pollInterval {
			// The Job's own deadline should have ended it by now; do not wait on a lost pod.
			return steps.Stop, c.concludeVerify(ctx, s, restoreUnverified, "the verify Job did not finish in time")
		}
		return steps.WaitFor(pollInterval), nil
	}
	switch r.Result {
	case volumes.ResultWarm:
		return steps.Stop, c.concludeVerify(ctx, s, volumes.ResultWarm, "")
	case volumes.ResultWiped:
		events, err := c.quarantine(ctx, s, s.node.Annotations[AnnotationRestoreSnapshot], fmt.Sprintf(msgQuarantinedOnSnapshot, s.name, r.Reason), r.Reason)
		if err != nil {
			return steps.Stop, err
		}
		return steps.Stop, c.concludeVerify(ctx, s, volumes.ResultWiped, r.Reason, events...)
	}
	return steps.Stop, c.concludeVerify(ctx, s, restoreUnverified, fmt.Sprintf("verify %s: %s", r.Result, r.Reason))
}

// quarantine marks the snapshot name that the engine discarded, or whose volume does not
// match its manifest, so no node restores it again, no save clones it, and retention keeps
// the previous good one; onSnapshot is the Event on it. Its Events are returned for the
// report of the outcome: a snapshot quarantined by a controller that died before the report
// is reported with it.
func (c *RestoreController) quarantine(ctx context.Context, s *restoreState, name, onSnapshot, reason string) ([]reportEvent, error) {
	snap := &snapshotv1.VolumeSnapshot{}
	ok, err := c.get(ctx, name, snap)
	if err != nil || !ok {
		return nil, err
	}
	if !volumes.Quarantined(snap) {
		patch := client.MergeFrom(snap.DeepCopy())
		volumes.Quarantine(snap, fmt.Sprintf("node %s: %s", s.name, reason))
		if err := c.kube.Patch(ctx, snap, patch); err != nil {
			return nil, fmt.Errorf("quarantining snapshot %s, %w", name, err)
		}
	}
	return []reportEvent{
		objectEvent(snap, snapshotv1.SchemeGroupVersion.String(), "VolumeSnapshot", corev1.EventTypeWarning, ReasonQuarantined, onSnapshot),
		nodeEvent(s.name, s.node.UID, corev1.EventTypeWarning, ReasonQuarantined, fmt.Sprintf(msgQuarantined, c.namespace(), name, reason)),
	}, nil
}

// concludeVerify records the verdict on the Node with its report (after which the
// verification never runs again), delivers the report, and removes the verify Job; the step that
// calls it stops. extra are more Events of the report (the quarantine's).
func (c *RestoreController) concludeVerify(ctx context.Context, s *restoreState, verdict, detail string, extra ...reportEvent) error {
	r := c.verifyReport(s, verdict, detail, extra)
	patch := client.MergeFrom(s.node.DeepCopy())
	s.node.Annotations[AnnotationRestore] = verdict
	setReport(s.node.Annotations, annotationVerifyReport, r)
	if err := c.kube.Patch(ctx, s.node, patch); err != nil {
		return fmt.Errorf("recording restore verdict on node %s, %w", s.name, err)
	}
	if err := c.deliver(ctx, r); err != nil {
		return err
	}
	if err := c.clearReport(ctx, s.node, annotationVerifyReport); err != nil {
		return err
	}
	if s.verify != nil {
		return c.remove(ctx, s.verify)
	}
	return nil
}

// verifyReport is what a restore's verdict tells. It is named by the restore it judges.
func (c *RestoreController) verifyReport(s *restoreState, verdict, detail string, extra []reportEvent) *report {
	snap := s.node.Annotations[AnnotationRestoreSnapshot]
	id := s.node.Annotations[AnnotationRestoreID]
	if id == "" {
		id = restoreID(s.node, snap)
	}
	r := &report{ID: "verify/" + id, Log: "restore verified", LogValues: []string{"verdict", verdict, "snapshot", snap, "detail", detail}}
	event := func(eventType, reason, message string) {
		r.event(nodeEvent(s.name, s.node.UID, eventType, reason, message))
	}
	r.count("warmpool_cache_restores_total", s.poolName, verdict)
	switch verdict {
	case volumes.ResultWarm:
		event(corev1.EventTypeNormal, ReasonRestored, fmt.Sprintf(msgRestored, c.namespace(), snap))
	case volumes.ResultWiped:
		r.count("warmpool_cold_starts_total", s.poolName, ColdWiped)
		event(corev1.EventTypeWarning, ReasonColdStart, fmt.Sprintf(msgColdStartWiped, ColdWiped, c.namespace(), snap, detail))
	default:
		event(corev1.EventTypeWarning, ReasonRestoreUnverified, fmt.Sprintf(msgRestoreUnverified, c.namespace(), snap, detail))
	}
	r.Events = append(r.Events, extra...)
	return r
}

// deliverReports delivers the reports a controller that died after a restore's decision left on
// the Node: the release's (warm copy or cold start) and the verdict's. It is the first step of
// both the restore and the verification, so a report is delivered before anything else happens
// to the node.
func (c *RestoreController) deliverReports(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.node == nil {
		return steps.Next, nil
	}
	for _, key := range []string{annotationRestoreReport, annotationVerifyReport} {
		if err := c.flushReport(ctx, s.node, key); err != nil {
			return steps.Stop, err
		}
	}
	return steps.Next, nil
}

// podReady says whether a pod's Ready condition is true.
func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
