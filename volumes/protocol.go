// Package volumes holds the names, labels and result format shared by the three
// parties of the cache protocol: the controller that plans saves and restores
// (controller/enginecache), the Jobs that run the copier on a node (warmpool cache
// save|restore), and anything that plays a node's part in tests (e2e/nodesim).
// Keeping them in one place is what lets a restarted controller find the objects
// an earlier one made.
package volumes

import (
	"encoding/json"
	"fmt"
)

// Labels on every object of the cache protocol (guard pods, Jobs, PVCs, VolumeSnapshots).
const (
	// LabelPool is the warmpool pool the object serves (same key as nodepools.LabelPool).
	LabelPool = "warmpool.io/pool"
	// LabelArch and LabelEngineVersion key snapshots: a cache is restored only onto a node of
	// the same architecture running the same engine version, since another engine may wipe it.
	LabelArch          = "warmpool.io/arch"
	LabelEngineVersion = "warmpool.io/engine-version"
	// LabelSourceNode names the node a snapshot was saved from.
	LabelSourceNode = "warmpool.io/source-node"
	// LabelNode names the node a guard pod, Job or PVC is working for.
	LabelNode = "warmpool.io/node"
	// LabelOp says which part of the protocol an object belongs to: OpGuard, OpSave, OpRestore,
	// OpVerify.
	LabelOp = "warmpool.io/cache-op"
	// LabelQuarantined marks a VolumeSnapshot that a restore proved the engine does not keep
	// (its verify came back ResultWiped): restores never choose it and retention does not count
	// it as a good snapshot. Its presence is what counts (see Quarantined); removing it releases
	// the snapshot.
	LabelQuarantined = "warmpool.io/quarantined"
)

// Values of LabelOp.
const (
	OpGuard   = "guard"
	OpSave    = "save"
	OpRestore = "restore"
	// OpVerify: the Job that asks the restored cache, once the engine is Ready, whether the
	// engine kept it (warmpool cache verify).
	OpVerify = "verify"
)

// Annotations on a saved VolumeSnapshot, set from the save Job's result.
const (
	AnnotationBytes    = "warmpool.io/bytes"
	AnnotationFiles    = "warmpool.io/files"
	AnnotationDuration = "warmpool.io/duration-seconds"
	// AnnotationQuarantineReason says why a snapshot carries LabelQuarantined (the verify
	// result's reason, e.g. "the engine discarded the restored cache at start: ...").
	AnnotationQuarantineReason = "warmpool.io/quarantine-reason"
	// AnnotationBaseSnapshot names the snapshot a save volume was cloned from (on the save PVC,
	// its Job and the snapshot it makes); absent for a full save onto an empty volume.
	AnnotationBaseSnapshot = "warmpool.io/base-snapshot"
	// AnnotationSnapshotFailed marks a snapshot that failed after its cut (the snapshotter
	// reported an error, or it never became ready in time), with the reason. Its presence is
	// what counts (see Failed): such a snapshot is never restored nor cloned for a save, even
	// if it turns ready later, and retention does not count it as a good one.
	AnnotationSnapshotFailed = "warmpool.io/snapshot-failed"
)

// Engine pod labels, set by the generated engine DaemonSet; the cache controller finds a
// node's engine pod by them.
const (
	LabelEngineName  = "app.kubernetes.io/name"
	EngineName       = "dagger-engine"
	EngineContainer  = "engine"
	CopierContainer  = "copier"
	CacheMountPath   = "/cache"  // save: the engine's hostPath
	HostMountPath    = "/host"   // restore: the parent of the engine's hostPath
	VolumeMountPath  = "/volume" // the PVC
	DefaultResultLog = "/dev/termination-log"
)

// Exit codes of `warmpool cache save|restore|verify`.
const (
	ExitOK      = 0 // saved, restored, or warm (verify)
	ExitFailed  = 1 // failed; for verify: the verdict is unknown (the cache dir could not be read)
	ExitUsage   = 2
	ExitUnclean = 3 // save refused: no clean-shutdown marker, or the engine lock is held
	ExitNoCache = 4 // restore: the volume holds no manifest (never restore it)
	ExitWiped   = 5 // verify: the engine did not keep the restored cache (ResultWiped)
	ExitNoSpace = 6 // save refused before copying: the cache does not fit the volume (ResultNoSpace)
	ExitCorrupt = 7 // restore refused: the volume does not match its manifest (ResultCorrupt)
)

// Result values of a cache Job.
const (
	ResultSaved    = "saved"
	ResultRestored = "restored"
	ResultUnclean  = "unclean"
	ResultNoCache  = "no-cache"
	ResultFailed   = "failed"
	// ResultWarm (verify): the restore marker is in place with this restore's ID, so the engine
	// started on the restored cache and kept it. Only this makes a restore warm.
	ResultWarm = "warm"
	// ResultWiped (verify): the marker is gone or names another restore, so the engine (or
	// something else) replaced the restored cache; the reason says what was found.
	ResultWiped = "wiped"
	// ResultNoSpace (save): the cache, measured before the copy, does not fit the save volume;
	// nothing was copied. Bytes and Files are the cache's allocated bytes and inodes.
	ResultNoSpace = "no-space"
	// ResultCorrupt (restore): the volume does not hold what its manifest says (an entry
	// missing, or of another type, size, time or checksum); nothing was restored. The snapshot
	// it was made from is bad: warmpool quarantines it, so that no restore uses it again and
	// no incremental save clones it (a save takes its volume to be as the manifest says).
	ResultCorrupt = "corrupt"
)

// JobResult is what a cache Job writes to its termination message (a small JSON
// document, well under the kubelet's 4 KiB limit) so the controller learns the outcome
// from the pod status alone.
type JobResult struct {
	Result          string  `json:"result"`
	Reason          string  `json:"reason,omitempty"`
	Bytes           int64   `json:"bytes"`
	Files           int64   `json:"files"`
	DurationSeconds float64 `json:"durationSeconds"`
	EngineVersion   string  `json:"engineVersion,omitempty"`
	Architecture    string  `json:"architecture,omitempty"`
}

// ParseJobResult reads a termination message written by a cache Job.
func ParseJobResult(msg string) (JobResult, error) {
	var r JobResult
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return JobResult{}, fmt.Errorf("parsing cache job result %q: %w", msg, err)
	}
	if r.Result == "" {
		return JobResult{}, fmt.Errorf("cache job result %q has no result field", msg)
	}
	return r, nil
}
