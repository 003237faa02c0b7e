package enginecache

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// How a restore ends: the node is released, warm (its cache copied into place, the engine
// still to say whether it kept it: verify.go) or cold (with the reason), its report recorded in
// the same patch that removes its startup taint.

// warm releases a node whose cache was copied into place. Whether it is really warm only the
// engine can tell, once it started on it: the node is marked for verification in the same
// patch that removes the taint, so a restarted controller picks the verification up.
func (c *RestoreController) warm(ctx context.Context, s *restoreState, r volumes.JobResult) error {
	now := c.clk.Now()
	took := c.elapsed(s)
	rep := &report{ID: restoreReportID(s), Log: "cache copied, engine starting", LogValues: []string{"snapshot", s.snapshot}}
	rep.observe("warmpool_cache_restore_duration_seconds", took.Seconds(), s.poolName)
	rep.event(nodeEvent(s.name, s.node.UID, corev1.EventTypeNormal, ReasonRestoreCopied, fmt.Sprintf(msgRestoreCopied,
		c.namespace(), s.snapshot, r.Bytes, r.Files, r.DurationSeconds, took.Round(time.Second))))
	return c.releaseReported(ctx, s, map[string]string{
		AnnotationRestore:         restoreVerifying,
		AnnotationRestoreSnapshot: s.snapshot,
		AnnotationRestoreID:       restoreID(s.node, s.snapshot),
		AnnotationRestoreReleased: stamp(now),
	}, rep)
}

// restoreReportID names a node's release: one per node (its taint is removed once).
func restoreReportID(s *restoreState) string { return "restore/" + string(s.node.UID) }

// releaseReported releases the node with its report recorded in the same patch, delivers the
// report, and cleans up: a controller that dies in between delivers it on its next look at
// the node (deliverReports). The step that calls it stops.
func (c *RestoreController) releaseReported(ctx context.Context, s *restoreState, annotations map[string]string, rep *report) error {
	if annotations == nil {
		annotations = map[string]string{}
	}
	setReport(annotations, annotationRestoreReport, rep)
	if err := c.release(ctx, s, annotations); err != nil {
		return err
	}
	if err := c.deliver(ctx, rep); err != nil {
		return err
	}
	if err := c.clearReport(ctx, s.node, annotationRestoreReport); err != nil {
		return err
	}
	return c.cleanup(ctx, s)
}

// cold releases a node without a restored cache, saying why.
func (c *RestoreController) cold(ctx context.Context, s *restoreState, reason, detail string, extra ...reportEvent) error {
	rep := &report{ID: restoreReportID(s), Log: "cold start", LogValues: []string{"reason", reason, "detail", detail}}
	for _, e := range extra {
		rep.event(e)
	}
	if s.job != nil {
		result := map[string]string{ColdFailed: volumes.ResultFailed, ColdTimeout: "timeout", ColdNoCache: volumes.ResultNoCache, ColdCorrupt: volumes.ResultCorrupt}[reason]
		if result != "" {
			rep.count("warmpool_cache_restores_total", s.poolName, result)
		}
	}
	rep.count("warmpool_cold_starts_total", s.poolName, reason)
	rep.event(nodeEvent(s.name, s.node.UID, corev1.EventTypeWarning, ReasonColdStart, fmt.Sprintf(msgColdStart, reason, detail)))
	return c.releaseReported(ctx, s, nil, rep)
}

// release removes the startup taint and sets annotations, and nothing else; the optimistic
// lock makes a concurrent taint change (Karpenter's, the kubelet's) fail this patch rather
// than be undone.
func (c *RestoreController) release(ctx context.Context, s *restoreState, annotations map[string]string) error {
	patch := client.MergeFromWithOptions(s.node.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if len(annotations) > 0 && s.node.Annotations == nil {
		s.node.Annotations = map[string]string{}
	}
	for k, v := range annotations {
		s.node.Annotations[k] = v
	}
	kept := s.node.Spec.Taints[:0:0]
	for _, t := range s.node.Spec.Taints {
		if t.Key != nodepools.StartupTaintKey {
			kept = append(kept, t)
		}
	}
	s.node.Spec.Taints = kept
	if err := c.kube.Patch(ctx, s.node, patch); err != nil {
		return fmt.Errorf("removing startup taint from node %s, %w", s.name, err)
	}
	return nil
}

func (c *RestoreController) cleanup(ctx context.Context, s *restoreState) error {
	if s.job != nil {
		if err := c.remove(ctx, s.job); err != nil {
			return err
		}
	}
	if s.pvc != nil {
		return c.remove(ctx, s.pvc)
	}
	return nil
}
