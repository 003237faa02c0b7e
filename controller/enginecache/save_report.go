package enginecache

import (
	"context"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/volumes"
)

// conclude records the outcome on the Node, with its report (the commit point: after it the
// save never runs again), delivers the report, and cleans up; the step that calls it stops.
// Without the Node, the save's guard, PVC and Job are the record: they are removed only after
// the report was delivered, so a restarted controller concludes again and delivers the same
// report (its Events exist by then, and nothing is counted twice).
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
		from := msgSavedFull
		if base := s.snapshot.Annotations[volumes.AnnotationBaseSnapshot]; base != "" {
			from = fmt.Sprintf(msgSavedIncremental, base)
		}
		released := "node released"
		if s.node == nil {
			released = "the node had gone already"
		}
		event(corev1.EventTypeNormal, ReasonSaved, fmt.Sprintf(msgSaved,
			s.snapshot.Namespace, s.snapshot.Name, from, res.Bytes, res.Files, res.DurationSeconds, took.Round(time.Second), released))
		r.event(objectEvent(s.snapshot, snapshotv1.SchemeGroupVersion.String(), "VolumeSnapshot", corev1.EventTypeNormal, ReasonSaved,
			fmt.Sprintf(msgSavedOnSnapshot, s.name, from, res.Bytes, res.Files)))
	case outcomeUnclean:
		event(corev1.EventTypeWarning, ReasonUnclean, fmt.Sprintf(msgUnclean, detail))
	case outcomeFailed:
		event(corev1.EventTypeWarning, ReasonSaveFailed, fmt.Sprintf(msgSaveFailed, detail))
	case volumes.LostTimeout:
		event(corev1.EventTypeWarning, ReasonSaveTimedOut, fmt.Sprintf(msgSaveTimedOut, detail))
	default:
		event(corev1.EventTypeWarning, ReasonLost, fmt.Sprintf(msgLost, outcome, detail))
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
