package enginecache

import (
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/hold"
)

// Every annotation the cache controllers write to record progress on the objects themselves,
// by the object it is on. Nothing of the protocol is kept in memory: these, with the objects
// that exist, are its state, so a restarted controller resumes where they say. Times are
// RFC 3339, by the controller's clock (stamp, parseStamp).
//
// Written through package volumes, which the copier and the simulator share and so defines
// them: volumes.AnnotationBaseSnapshot (save PVC, Job and snapshot: the snapshot the save
// volume was cloned from), volumes.AnnotationBytes, AnnotationFiles and AnnotationDuration (a
// snapshot's copier figures), volumes.AnnotationQuarantineReason (volumes.Quarantine),
// volumes.AnnotationSnapshotFailed (a snapshot that failed after its cut) and
// volumes.AnnotationFastRestore (the zones fast snapshot restore is on in).

// On a Node: its save's outcome, and its restore's verification. The verification's are set in
// the patch that removes the startup taint, so it survives a controller restart and runs once.
const (
	// AnnotationSaveOutcome on a Node records that its save concluded (outcomeSaved,
	// outcomeUnclean, ..., outcomeSkipped*). Deletion is irreversible, so a concluded node is
	// never saved twice, even by a controller that restarted after cleaning up. It is also the
	// hold's release mark (package volumes/hold), hence one constant.
	AnnotationSaveOutcome = hold.AnnotationSaveOutcome

	// AnnotationRestore is the restore's verdict: restoreVerifying until the engine told,
	// then volumes.ResultWarm, volumes.ResultWiped or restoreUnverified.
	AnnotationRestore         = "warmpool.io/cache-restore-verdict"
	AnnotationRestoreSnapshot = "warmpool.io/cache-restore-snapshot"
	AnnotationRestoreID       = "warmpool.io/cache-restore-id"
	// AnnotationRestoreReleased is when the node was released to its engine.
	AnnotationRestoreReleased = "warmpool.io/cache-restore-released"

	restoreVerifying  = "verifying"
	restoreUnverified = "unverified"
)

// On a Node waiting for its restore: the plan its budget was computed for, so a restarted
// controller (or a config change) neither extends nor restarts it.
const (
	// annotationRestoreFrom is the snapshot the budget was planned for.
	annotationRestoreFrom = "warmpool.io/restore-from"
	// annotationRestoreStarted is when the restore's budget started: the first choice of a
	// snapshot that fits the budget, before the wait for the CSI driver.
	annotationRestoreStarted = "warmpool.io/restore-started"
	// annotationRestoreDeadline is when the budget runs out.
	annotationRestoreDeadline = "warmpool.io/restore-deadline"
	// annotationRestoreBudget says how the deadline was derived, for Events and people.
	annotationRestoreBudget = "warmpool.io/restore-budget"
)

// On a save's guard pod: what the save decided so far, carried over to a replacement guard.
const (
	// AnnotationDeadline on a guard pod is the save deadline it was computed with.
	AnnotationDeadline = "warmpool.io/deadline"
	// annotationSpot marks a deadline cut short by a spot interruption notice.
	annotationSpot = "warmpool.io/spot-interruption"
	// annotationNodeUID: the UID of the Node it holds, which names the save's report (its
	// Events) even once the Node is gone.
	annotationNodeUID = "warmpool.io/node-uid"
	// annotationAwaitingRunners: since when the engine's stop waits for work pods (set once, so
	// the Event is recorded once).
	annotationAwaitingRunners = "warmpool.io/awaiting-runners"
	// annotationBaseFallback: the save volume's base snapshot could not be cloned (why), so
	// this save copies onto an empty volume. Set once, before the volume made from the base is
	// deleted: the save falls back once and never picks a base again.
	annotationBaseFallback = "warmpool.io/base-fallback"
	// annotationSaveSize: the size of the save volume made to fit a cache that did not fit the
	// first one (set once: a cache that does not fit that either is not saved).
	annotationSaveSize = "warmpool.io/save-volume-size"
	// annotationGuardReplaced: when a guard the kubelet refused or ended was replaced by this
	// one, and how many times (for the replacement's pace and its Event).
	annotationGuardReplaced     = "warmpool.io/guard-replaced"
	annotationGuardReplacements = "warmpool.io/guard-replacements"
)

// On a save's guard pod and Job, and on the restore PVC.
const (
	// annotationEngineVersion (guard and save Job): the engine version whose cache is copied,
	// which may predate a config change of the version. The same key as the label that keys
	// the snapshot, so it is that constant.
	annotationEngineVersion = volumes.LabelEngineVersion
	// annotationSnapshot (save Job): the snapshot the save will make, named from the node's
	// UID, which is gone with the node.
	annotationSnapshot = "warmpool.io/snapshot"
	// AnnotationStarted on a save Job, save PVC or restore PVC is when the operation started,
	// for durations and the save volume's bind timeout.
	AnnotationStarted = "warmpool.io/started"
)

// On a Node or a VolumeSnapshot: a report not yet delivered (report.go). Each is written in the
// patch that records its decision and removed once the report is delivered.
const (
	// annotationSaveReport on a Node: the report of its save's outcome.
	annotationSaveReport = "warmpool.io/cache-save-report"
	// annotationRestoreReport on a Node: the report of its release (warm copy or cold start).
	annotationRestoreReport = "warmpool.io/cache-restore-report"
	// annotationVerifyReport on a Node: the report of its restore's verdict.
	annotationVerifyReport = "warmpool.io/cache-verify-report"
	// annotationSnapshotReport on a VolumeSnapshot: the report of its failure after the cut.
	annotationSnapshotReport = "warmpool.io/snapshot-failed-report"
)
