package volumes

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
)

// Trigger is how sure it is that a node is going away.
type Trigger int

const (
	// TriggerNone: nothing says the node goes (or a disruption was withdrawn).
	TriggerNone Trigger = iota
	// TriggerTentative: Karpenter tainted the node disrupted and gave a disruption reason, but
	// has not deleted anything yet. It withdraws the taint if the command fails, so this only
	// justifies holding the node, not stopping its engine.
	TriggerTentative
	// TriggerCommitted: the Node or its NodeClaim is being deleted; nothing reverts that.
	TriggerCommitted
)

// NodeSignals are what the save trigger reads from a Node and its NodeClaim.
type NodeSignals struct {
	NodeDeleting      bool
	NodeClaimDeleting bool
	// DisruptedTaint is karpenter.sh/disrupted:NoSchedule on the Node.
	DisruptedTaint bool
	// DisruptionReason is the NodeClaim's DisruptionReason condition being True.
	DisruptionReason bool
}

// SaveTrigger decides whether a node is going away.
func SaveTrigger(s NodeSignals) Trigger {
	switch {
	case s.NodeDeleting || s.NodeClaimDeleting:
		return TriggerCommitted
	case s.DisruptedTaint && s.DisruptionReason:
		return TriggerTentative
	}
	return TriggerNone
}

// EngineStoppable says whether the engine pod may be evicted now: only once deletion is
// committed, and only once the node carries the disrupted taint, which the engine DaemonSet does
// not tolerate: before that the DaemonSet controller would put a fresh engine straight back.
func EngineStoppable(s NodeSignals) bool {
	return SaveTrigger(s) == TriggerCommitted && s.DisruptedTaint
}

// SpotNoticeWindow is how long EC2 gives between a spot interruption notice and the instance's
// termination.
const SpotNoticeWindow = 2 * time.Minute

// DeadlineInput is what bounds a node's remaining life.
type DeadlineInput struct {
	// TerminationTimestamp is the NodeClaim annotation karpenter.sh/nodeclaim-termination-timestamp
	// (RFC 3339), set by Karpenter once the NodeClaim is deleted: the moment its drain stops
	// waiting for anything.
	TerminationTimestamp string
	// Deleted is the NodeClaim's (else the Node's) deletionTimestamp; zero if neither is deleting.
	Deleted time.Time
	// Grace is the NodeClaim's terminationGracePeriod, else the pool's.
	Grace time.Duration
	// Spot is a spot instance deleted without a disruption reason before it expired: what an
	// interruption notice looks like to the cluster (Karpenter's interruption controller deletes
	// the NodeClaim and sets no condition). The instance goes SpotNoticeWindow after that.
	Spot bool
}

// Deadline is when a node goes whatever happens.
type Deadline struct {
	At time.Time
	// SpotInterruption is set when the deadline is the spot notice window.
	SpotInterruption bool
}

// NodeDeadline computes a deleting node's deadline: the termination timestamp when Karpenter
// wrote one, else deletion plus grace; a spot interruption cuts it to the notice window. A
// malformed annotation is reported and the fallback used, so the node is still bounded.
func NodeDeadline(in DeadlineInput) (Deadline, error) {
	var d Deadline
	var err error
	if in.TerminationTimestamp != "" {
		t, perr := time.Parse(time.RFC3339, in.TerminationTimestamp)
		if perr == nil {
			d.At = t
		} else {
			err = fmt.Errorf("parsing nodeclaim termination timestamp %q, %w", in.TerminationTimestamp, perr)
		}
	}
	if d.At.IsZero() && !in.Deleted.IsZero() {
		d.At = in.Deleted.Add(in.Grace)
	}
	if in.Spot && !in.Deleted.IsZero() {
		if spot := in.Deleted.Add(SpotNoticeWindow); d.At.IsZero() || spot.Before(d.At) {
			d = Deadline{At: spot, SpotInterruption: true}
		}
	}
	return d, err
}

// Window is the time budget of a save.
type Window struct {
	// Margin is kept free before the deadline, to release the guard and report before
	// Karpenter deletes the pods itself.
	Margin time.Duration
	// Minimum is the least time a save is started with; below it the node goes cold at once.
	Minimum time.Duration
}

// Left is the usable time before the deadline (negative once past deadline minus margin).
func (w Window) Left(now time.Time, d Deadline) time.Duration {
	return d.At.Add(-w.Margin).Sub(now)
}

// Expired says the save must stop now.
func (w Window) Expired(now time.Time, d Deadline) bool { return w.Left(now, d) <= 0 }

// Lost reasons: why a node's cache was not saved at all.
const (
	LostTimeout          = "timeout"
	LostSpotInterruption = "spot-interruption"
	LostNoTime           = "no-time"
	LostNodeGone         = "node-gone"
)

// CanStart says whether a save may start now, and if not, why the cache is lost.
func (w Window) CanStart(now time.Time, d Deadline) (bool, string) {
	if w.Left(now, d) >= w.Minimum {
		return true, ""
	}
	if d.SpotInterruption {
		return false, LostSpotInterruption
	}
	return false, LostNoTime
}

// ActiveDeadlineSeconds bounds a Job by the time left, at least one second.
func (w Window) ActiveDeadlineSeconds(now time.Time, d Deadline) int64 {
	return max(int64(w.Left(now, d)/time.Second), 1)
}

// PodResult reads a finished cache pod's result from its copier container's termination
// message. done is false while the container has not terminated. A container that terminated
// without a readable result (OOM-killed, deadline exceeded) is a failure, named by its exit code;
// the exit codes of unclean, no-cache, wiped, no-space and corrupt still say what they mean.
func PodResult(pod *corev1.Pod) (r JobResult, done bool) {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != CopierContainer || cs.State.Terminated == nil {
			continue
		}
		t := cs.State.Terminated
		if parsed, err := ParseJobResult(t.Message); err == nil {
			return parsed, true
		}
		switch t.ExitCode {
		case ExitUnclean:
			return JobResult{Result: ResultUnclean, Reason: "exit code 3"}, true
		case ExitNoCache:
			return JobResult{Result: ResultNoCache, Reason: "exit code 4"}, true
		case ExitWiped:
			return JobResult{Result: ResultWiped, Reason: "exit code 5"}, true
		case ExitNoSpace:
			return JobResult{Result: ResultNoSpace, Reason: "exit code 6"}, true
		case ExitCorrupt:
			return JobResult{Result: ResultCorrupt, Reason: "exit code 7"}, true
		}
		reason := fmt.Sprintf("exit code %d", t.ExitCode)
		if t.Reason != "" {
			reason += " (" + t.Reason + ")"
		}
		return JobResult{Result: ResultFailed, Reason: reason}, true
	}
	if pod.Status.Phase == corev1.PodFailed {
		// Evicted or rejected by the kubelet before the container ran.
		return JobResult{Result: ResultFailed, Reason: "pod failed: " + pod.Status.Reason}, true
	}
	return JobResult{}, false
}

// SnapshotKey is what a cache is keyed by: only a node of the same pool, architecture and engine
// version may restore it.
type SnapshotKey struct {
	Pool, Arch, EngineVersion string
}

// KeyOf reads a snapshot's key from its labels.
func KeyOf(s *snapshotv1.VolumeSnapshot) SnapshotKey {
	return SnapshotKey{Pool: s.Labels[LabelPool], Arch: s.Labels[LabelArch], EngineVersion: s.Labels[LabelEngineVersion]}
}

// Ready says a snapshot can be restored from.
func Ready(s *snapshotv1.VolumeSnapshot) bool {
	return s.DeletionTimestamp == nil && s.Status != nil && s.Status.ReadyToUse != nil && *s.Status.ReadyToUse
}

// Cut says the storage system has taken the snapshot (status.creationTime is set). An EBS
// snapshot is point-in-time from then on: the volume may be detached and deleted, and the node
// it was saved from released, while the upload to S3 goes on until readyToUse.
func Cut(s *snapshotv1.VolumeSnapshot) bool {
	return s.Status != nil && s.Status.CreationTime != nil
}

// Failed says a snapshot was marked failed after its cut (AnnotationSnapshotFailed, any value).
func Failed(s *snapshotv1.VolumeSnapshot) bool {
	_, ok := s.Annotations[AnnotationSnapshotFailed]
	return ok
}

// Good says a snapshot may be restored (and cloned for the next save of its key): ready,
// neither quarantined nor marked failed.
func Good(s *snapshotv1.VolumeSnapshot) bool {
	return Ready(s) && !Quarantined(s) && !Failed(s)
}

// UploadFailure judges a snapshot after its cut: it failed when the snapshotter reports an
// error on it while it is not ready, or when it is still not ready readyTimeout after the cut.
// It returns the reason, "" while the snapshot is fine or still uploading within its time, and
// for snapshots that are ready, not cut yet (the save that cuts it bounds that wait), being
// deleted or already marked. An error is final here although the snapshotter may retry and
// clear it: warmpool fails closed, the older good snapshot of the key stays, and retention
// deletes the failed one.
func UploadFailure(s *snapshotv1.VolumeSnapshot, now time.Time, readyTimeout time.Duration) string {
	if s.DeletionTimestamp != nil || Ready(s) || !Cut(s) || Failed(s) {
		return ""
	}
	if e := s.Status.Error; e != nil {
		msg := "no message"
		if e.Message != nil && *e.Message != "" {
			msg = *e.Message
		}
		return "the snapshotter reports an error after the cut: " + msg
	}
	if waited := now.Sub(s.Status.CreationTime.Time); waited >= readyTimeout {
		return fmt.Sprintf("not ready %s after its cut (bound %s)", waited.Truncate(time.Second), readyTimeout)
	}
	return ""
}

// Created is when a snapshot was taken: the snapshotter's creation time, else the object's.
func Created(s *snapshotv1.VolumeSnapshot) time.Time {
	if s.Status != nil && s.Status.CreationTime != nil {
		return s.Status.CreationTime.Time
	}
	return s.CreationTimestamp.Time
}

// SnapshotBytes is what a restore of snap reads: the copier's own count of the cache's bytes
// (AnnotationBytes, written by the save), else the snapshot's restoreSize. restoreSize is the
// size of the volume it was cut from (the EBS CSI driver reports the volume's size), an upper
// bound: a lazily loaded volume reads only the blocks the copy touches. ok is false when
// neither is known; source names which one it is.
func SnapshotBytes(snap *snapshotv1.VolumeSnapshot) (bytes int64, source string, ok bool) {
	if n, err := strconv.ParseInt(snap.Annotations[AnnotationBytes], 10, 64); err == nil && n > 0 {
		return n, "bytes of cache", true
	}
	if st := snap.Status; st != nil && st.RestoreSize != nil && st.RestoreSize.Sign() > 0 {
		return st.RestoreSize.Value(), "restoreSize", true
	}
	return 0, "", false
}

// ChooseSnapshot picks the newest good snapshot of key (ready, not quarantined, not failed), or
// nil. A quarantined snapshot is one an engine already discarded after a restore; every engine
// of the key would do the same, so the next node gets the older good one (or starts cold). A
// snapshot still uploading after its cut is not ready, so the older good one is chosen until it
// is. Saves choose their base snapshot with it too.
func ChooseSnapshot(snaps []snapshotv1.VolumeSnapshot, key SnapshotKey) *snapshotv1.VolumeSnapshot {
	var candidates []*snapshotv1.VolumeSnapshot
	for i := range snaps {
		if KeyOf(&snaps[i]) == key && Good(&snaps[i]) {
			candidates = append(candidates, &snaps[i])
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	sortNewestFirst(candidates)
	return candidates[0]
}

// sortNewestFirst orders by creation time, newest first; the name breaks ties so the order is
// the same on every call.
func sortNewestFirst(s []*snapshotv1.VolumeSnapshot) {
	sort.SliceStable(s, func(i, j int) bool {
		ti, tj := Created(s[i]), Created(s[j])
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return s[i].Name > s[j].Name
	})
}
