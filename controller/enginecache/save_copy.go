package enginecache

import (
	"context"
	"fmt"
	"strconv"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/volumes"
)

// startCopy starts the save Job, bounded by the time left.
func (c *SaveController) startCopy(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.job != nil {
		return steps.Next, nil
	}
	if s.node == nil {
		return steps.Stop, c.conclude(ctx, s, volumes.LostNodeGone, "the node went before the copy started")
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
		return steps.Stop, err
	}
	s.job = job
	return steps.WaitFor(c.poll(s)), nil
}

// awaitCopy reads the Job's result: only a saved cache goes on to a snapshot.
func (c *SaveController) awaitCopy(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.snapshot != nil {
		return steps.Next, nil
	}
	r, done, err := c.jobResult(ctx, s.job)
	if err != nil {
		return steps.Stop, err
	}
	if !done {
		if s.node == nil {
			return steps.Stop, c.conclude(ctx, s, volumes.LostNodeGone, "the node went before the copy finished")
		}
		return steps.WaitFor(c.poll(s)), nil
	}
	switch r.Result {
	case volumes.ResultSaved:
		s.result = r
		return steps.Next, nil
	case volumes.ResultUnclean:
		return steps.Stop, c.conclude(ctx, s, outcomeUnclean, r.Reason)
	}
	if jobOutOfTime(s.job, c.clk.Now()) {
		// The Job's activeDeadlineSeconds is the time left, rounded down, counted from its own
		// start: the Job controller may stop the copy a moment before checkDeadline would. A
		// copy stopped for running out of time is a timeout, not a broken save.
		return steps.Stop, c.conclude(ctx, s, volumes.LostTimeout, fmt.Sprintf("save job %s ran out of time before the deadline %s: %s", s.job.Name, stamp(s.deadline.At), r.Reason))
	}
	return steps.Stop, c.conclude(ctx, s, outcomeFailed, fmt.Sprintf("%s: %s", r.Result, r.Reason))
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

// cutSnapshot asks for the snapshot of the saved volume (the CSI snapshotter cuts it).
func (c *SaveController) cutSnapshot(ctx context.Context, s *saveState) (steps.Exit, error) {
	if s.snapshot != nil {
		return steps.Next, nil
	}
	t := c.saveTarget(s)
	if s.result.Architecture != "" {
		t.Arch = s.result.Architecture
	}
	snap := volumes.Snapshot(t, s.job.Annotations[annotationSnapshot], s.pool.Cache.SnapshotClassName, s.job.Annotations[volumes.AnnotationBaseSnapshot], s.result)
	if snap.Name == "" {
		return steps.Stop, c.conclude(ctx, s, outcomeFailed, "save job "+s.job.Name+" names no snapshot")
	}
	if err := c.create(ctx, snap); err != nil {
		return steps.Stop, err
	}
	s.snapshot = snap
	return steps.WaitFor(c.poll(s)), nil
}

// awaitCut waits for the snapshot to be cut (status.creationTime set); the save is then
// done and the node released. An EBS snapshot is point-in-time from its creation: the upload to
// S3 that readyToUse waits for needs neither the node nor (for EBS) the volume, so holding the
// node for it would only cost time and a disruption budget slot. Whether the upload succeeds
// is the GC controller's to watch (watchUploads), from the snapshot alone.
func (c *SaveController) awaitCut(ctx context.Context, s *saveState) (steps.Exit, error) {
	if !volumes.Cut(s.snapshot) {
		if st := s.snapshot.Status; st != nil && st.Error != nil && st.Error.Message != nil {
			log.FromContext(ctx).Info("snapshot reports an error before its cut, waiting for the snapshotter to retry", "snapshot", s.snapshot.Name, "error", *st.Error.Message)
		}
		if s.node == nil && s.guard != nil {
			// A detached volume can still be snapshotted, so the cut is awaited without the
			// node; but no longer than the deadline the guard recorded.
			if at := parseStamp(s.guard.Annotations[AnnotationDeadline]); !at.IsZero() && !c.clk.Now().Before(at) {
				return steps.Stop, c.conclude(ctx, s, volumes.LostNodeGone, fmt.Sprintf("the node went and snapshot %s was not cut by the deadline %s", s.snapshot.Name, stamp(at)))
			}
		}
		return steps.WaitFor(c.poll(s)), nil
	}
	return steps.Stop, c.conclude(ctx, s, outcomeSaved, "")
}

// resultOf reads the copier's figures back from a snapshot's annotations.
func resultOf(snap *snapshotv1.VolumeSnapshot) volumes.JobResult {
	r := volumes.JobResult{Result: volumes.ResultSaved}
	r.Bytes, _ = strconv.ParseInt(snap.Annotations[volumes.AnnotationBytes], 10, 64)
	r.Files, _ = strconv.ParseInt(snap.Annotations[volumes.AnnotationFiles], 10, 64)
	r.DurationSeconds, _ = strconv.ParseFloat(snap.Annotations[volumes.AnnotationDuration], 64)
	return r
}
