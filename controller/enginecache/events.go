package enginecache

import "warmpool.io/warmpool/volumes"

// Every Event the cache controllers record: its reason (stable, CamelCase, what users filter on
// and what `warmpool status` and the tests read) and its message format, with the Event's type
// and the object it is on. Node Events tell a node's cache story; a VolumeSnapshot's tell what
// happened to it; CacheGCFailed is on warmpool's ConfigMap. Events that report an outcome are
// recorded through a report (report.go), so they are created exactly once; the others through
// the manager's recorder.

// The save (SaveController).
const (
	// ReasonGuarded (Normal, Node): a guard pod holds the node until its save concludes.
	ReasonGuarded = "CacheGuarded"
	msgGuarded    = "holding the node with pod %s/%s to save its engine cache (%s)"

	// ReasonGuardFailed (Warning, Node): the kubelet refused or ended a guard pod (a Failed pod
	// holds nothing); it was replaced. Recorded for the first replacement of a hold only.
	ReasonGuardFailed = "CacheGuardFailed"
	msgGuardFailed    = "guard pod %s/%s failed (%s), so it held nothing: replaced it; the engine is stopped only once a guard runs"

	// ReasonAwaitingRunners (Normal, Node): the engine keeps running until the node's CI pods
	// are done.
	ReasonAwaitingRunners = "CacheAwaitingRunners"
	msgAwaitingRunners    = "waiting for %d pods to finish before stopping the engine (%s), until %s at the latest"

	// ReasonRunnersOutlived (Warning, Node): work pods still ran when the engine had to stop for
	// the save.
	ReasonRunnersOutlived = "CacheRunnersOutlived"
	msgRunnersOutlived    = "stopping the engine although %d pods still run on the node (%s): the save must start by %s; an engine stopped under a job may be killed before it exits cleanly"

	// ReasonEngineStopped (Normal, Node): the engine pod was evicted so it exits cleanly.
	ReasonEngineStopped = "CacheEngineStopped"
	msgEngineStopped    = "evicted engine pod %s/%s so it shuts down cleanly before the save"

	// ReasonSaveBaseLost (Warning, Node): the snapshot a save volume was cloned from could not
	// be cloned; the save copies onto an empty volume instead.
	ReasonSaveBaseLost = "CacheSaveBaseLost"
	msgSaveBaseLost    = "save volume not cloned: %s; copying the whole cache onto an empty volume instead (a full copy and a full snapshot)"

	// ReasonSaveVolumeResized (Normal, Node): the save measured a cache larger than its volume
	// and made a larger one.
	ReasonSaveVolumeResized = "CacheSaveVolumeResized"
	msgSaveVolumeResized    = "the cache (%s in %d inodes) does not fit the save volume of %s; making one of %s (raise the pool's cache.size to skip this step)"
)

// The save's outcomes (SaveController.report), one per save.
const (
	// ReasonSaved (Normal, Node and VolumeSnapshot): the snapshot was cut and the node released.
	ReasonSaved         = "CacheSaved"
	msgSaved            = "cache saved to VolumeSnapshot %s/%s (%s): %d bytes, %d files, copy %.0fs, save %s; snapshot cut, %s, upload continues"
	msgSavedOnSnapshot  = "saved from node %s (%s): %d bytes, %d files"
	msgSavedIncremental = "incremental, cloned from %s"
	msgSavedFull        = "a full copy onto an empty volume"

	// ReasonUnclean (Warning, Node): the engine did not shut down cleanly; nothing was saved.
	ReasonUnclean = "CacheUnclean"
	msgUnclean    = "engine cache not saved: the engine did not shut down cleanly (%s); a copy would restore cold"

	// ReasonSaveFailed (Warning, Node): the copy or the snapshot failed.
	ReasonSaveFailed = "CacheSaveFailed"
	msgSaveFailed    = "engine cache not saved: %s"

	// ReasonSaveTimedOut (Warning, Node): the node's deadline passed before the save concluded.
	ReasonSaveTimedOut = "CacheSaveTimedOut"
	msgSaveTimedOut    = "engine cache not saved: %s; released the node"

	// ReasonLost (Warning, Node): any other save that did not happen; the note starts with the
	// outcome (volumes.Lost*, outcomeStorage, ...).
	ReasonLost = "CacheLost"
	msgLost    = "engine cache not saved (%s): %s"
)

// The restore and its verification (RestoreController).
const (
	// ReasonRestoreCopied (Normal, Node): the copy is in place and the engine starts on it.
	ReasonRestoreCopied = "CacheRestoreCopied"
	msgRestoreCopied    = "cache copied from VolumeSnapshot %s/%s: %d bytes, %d files, copy %.0fs, restore %s; the engine starts on it now and warmpool checks it kept it"

	// ReasonColdStart (Warning, Node): the engine starts without a restored cache; the note
	// starts with the cold start reason (Cold* below).
	ReasonColdStart   = "ColdStart"
	msgColdStart      = "engine starts without a restored cache (%s): %s"
	msgColdStartWiped = "engine starts without a restored cache (%s): it discarded the copy of %s/%s at start: %s"

	// ReasonRestored (Normal, Node): the engine started on the restored cache and kept it.
	ReasonRestored = "CacheRestored"
	msgRestored    = "cache restored from VolumeSnapshot %s/%s: the engine started on it and kept it"

	// ReasonRestoreUnverified (Warning, Node): the engine did not tell in time whether it kept
	// the cache.
	ReasonRestoreUnverified = "CacheRestoreUnverified"
	msgRestoreUnverified    = "cache copied from VolumeSnapshot %s/%s, but whether the engine kept it is unknown: %s"

	// ReasonQuarantined (Warning, VolumeSnapshot and Node): the engine discarded a restored
	// copy, or the restore found the snapshot's volume does not match its manifest; the
	// snapshot is never restored again, nor cloned for a save.
	ReasonQuarantined        = "CacheSnapshotQuarantined"
	msgQuarantinedOnSnapshot = "the engine on node %s discarded the cache restored from this snapshot (%s): it is never restored again"
	msgCorruptOnSnapshot     = "the restore on node %s found this snapshot's volume does not match its manifest (%s): it is never restored again, nor cloned for a save"
	msgQuarantined           = "quarantined VolumeSnapshot %s/%s: %s"
)

// Cold start reasons: the ColdStart Event's note and the warmpool_cold_starts_total label.
const (
	ColdNoSnapshot    = "no-snapshot"
	ColdFailed        = "restore-failed"
	ColdTimeout       = "restore-timeout"
	ColdNoCache       = volumes.ResultNoCache
	ColdCacheDisabled = "cache-disabled"
	ColdUnknownArch   = "unknown-arch"
	ColdNoSnapshotAPI = "no-snapshot-api"
	// ColdOverBudget: the newest snapshot cannot be restored within the pool's
	// cache.restore.maxWait at its cache.restore.throughput; the restore is not attempted.
	ColdOverBudget = "over-budget"
	// ColdStorage: the restore StorageClass or the VolumeSnapshotClass cannot work (missing,
	// in-tree, another driver); the restore is not attempted.
	ColdStorage = "storage-misconfigured"
	// ColdNodeDisk: the snapshot's cache does not fit on the node's NVMe.
	ColdNodeDisk = "snapshot-too-large-for-node"
	// ColdNoCSIDriver: the node's CSINode never listed the restore class's CSI driver within
	// the restore's budget, so no volume could be attached to it.
	ColdNoCSIDriver = "csi-driver-not-registered"
	// ColdCorrupt: the restore found the snapshot's volume does not match its manifest; the
	// snapshot is quarantined.
	ColdCorrupt = "snapshot-corrupt"
	// ColdWiped: the engine discarded the restored cache at start.
	ColdWiped = "engine-wiped"
	// ColdJobsWaiting: the pool had jobs waiting that its usable nodes could not take, so the
	// node skipped its restore (cache.restore.whenJobsWait cold): those jobs already waited for
	// its boot and would have waited for the copy too.
	ColdJobsWaiting = "jobs-waiting"
)

// Retention, uploads and fast snapshot restore (GCController).
const (
	// ReasonSnapshotFailed (Warning, VolumeSnapshot and, while it exists, its source Node): a
	// snapshot failed after its cut, when its node was already released. It is never restored.
	ReasonSnapshotFailed        = "CacheSnapshotFailed"
	msgSnapshotFailedOnSnapshot = "snapshot failed after its cut: %s; it is never restored, and the previous good snapshot of its key is kept"
	msgSnapshotFailed           = "the cache saved from this node is lost: VolumeSnapshot %s/%s failed after its cut: %s"

	// ReasonPruned (Normal, VolumeSnapshot): retention deleted the snapshot.
	ReasonPruned = "SnapshotPruned"
	msgPruned    = "deleted cache snapshot of pool %s, arch %s, engine %s: %s (keep %d, max age %s)"

	// ReasonGCFailed (Warning, ConfigMap): a garbage collection pass failed (it is retried).
	ReasonGCFailed = "CacheGCFailed"
	msgGCFailed    = "cache garbage collection: %v"

	// ReasonFastRestore (Normal, VolumeSnapshot): fast snapshot restore was switched on or off.
	ReasonFastRestore = "FastSnapshotRestore"
	msgFastRestore    = "fast snapshot restore %s for EBS snapshot %s in %s"
)

// reasonSpotInterrupted is an Event warmpool reads, not writes. Karpenter's interruption
// controller (aws/karpenter-provider-aws v1.14, pkg/controllers/interruption) marks a NodeClaim
// it deletes for an EC2 spot interruption warning with nothing but this Event, on the NodeClaim
// and on its Node, published just before the deletion (events.SpotInterrupted); a spot
// NodeClaim deleted for any other reason has its whole termination grace period.
const reasonSpotInterrupted = "SpotInterrupted"
