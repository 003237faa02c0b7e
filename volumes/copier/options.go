package copier

import (
	"errors"
	"fmt"
	"time"
)

// Options tune a copy. The zero value is a full, unthrottled copy with
// DefaultReadConcurrency workers.
type Options struct {
	// Workers copying files in parallel, and so the reads kept in flight;
	// default DefaultReadConcurrency (or 2×NumCPU if that is more). A copy
	// waits on its source far more than it computes: sized to the CPUs, it
	// would leave a volume lazily loaded from an EBS snapshot, where every
	// first read of a block waits on S3, at a fraction of its throughput
	// (AWS initializes such volumes with fio at a deep queue for the same
	// reason). Large files are also read in parallel ranges (RangeReads).
	Workers int

	// RangeReads is how many ranges of one large file are copied at once,
	// so that the few large layer blobs of a cache keep reads in flight too
	// (default DefaultRangeReads; 1 copies every file front to back). Files
	// whose checksum is recorded are always read in order.
	RangeReads int

	// WalkDirs is how many source directories are listed at once (default
	// DefaultWalkDirs; 1 walks one directory at a time). The manifest is
	// the same whatever it is.
	WalkDirs int

	// Recorded in the manifest: restores must match engine version and
	// architecture, since a different engine may wipe the cache.
	EngineVersion string
	Architecture  string
	SourceNode    string

	// ChecksumGlobs add to DefaultChecksumGlobs. A glob without a slash
	// matches a file's base name; one with a slash matches its relative
	// path (path.Match syntax).
	ChecksumGlobs []string

	// Previous, if set, is the manifest of the copy already at dst (read it
	// with ReadManifest before calling Copy: Copy removes it). dst is taken
	// to be as it describes: its directories are not listed and the files
	// left alone are not looked at (see dstListing; a restore refuses a tree
	// that differs from its manifest). A file is left alone only when
	// Baseline vouches that the source still holds the bytes its Previous
	// entry's Origin names, and the entry's size, mtime, mode and owner
	// match.
	Previous *Manifest
	// Baseline says what the source holds (see Baseline); without it, or
	// without Previous, every file is copied.
	Baseline *Baseline

	// Progress, if set, is called from one goroutine at most every
	// ProgressInterval (default 5s), and once more at the end with
	// Progress.Final set.
	Progress         func(Progress)
	ProgressInterval time.Duration

	// BytesPerSecond caps the data copy rate across all workers; 0 means
	// unlimited. Throttling protects a node's disk (and an EBS volume's
	// throughput budget) shared with other workloads.
	BytesPerSecond int64

	// hooks inject faults in tests; nil in production.
	hooks *hooks
}

// Progress is a snapshot of a running copy.
type Progress struct {
	// BytesDone counts bytes copied plus bytes of files skipped as
	// unchanged, so it reaches BytesTotal at the end.
	BytesDone  int64
	BytesTotal int64
	FilesDone  int64
	FilesTotal int64
	// ScanDone is set once the whole source tree has been listed; until
	// then the totals grow.
	ScanDone bool
	Elapsed  time.Duration
	// BytesPerSecond is the average rate of data actually copied.
	BytesPerSecond float64
	Final          bool
}

// Stats describe what a copy did, as opposed to what the tree holds (Totals).
type Stats struct {
	CopiedFiles  int64 `json:"copiedFiles"`
	CopiedBytes  int64 `json:"copiedBytes"`
	SkippedFiles int64 `json:"skippedFiles"`
	SkippedBytes int64 `json:"skippedBytes"`
	// Deleted counts dst entries removed because they are gone from src or
	// changed type there (a removed directory counts with its contents).
	Deleted int64 `json:"deleted"`
	// SkippedSpecial counts sockets (meaningless without their process)
	// and device nodes or FIFOs that could not be created (not root).
	SkippedSpecial int64 `json:"skippedSpecial"`
	// OwnershipNotPreserved counts chown calls refused with EPERM when not
	// running as root; root failures are errors.
	OwnershipNotPreserved int64 `json:"ownershipNotPreserved"`
	// XattrsNotPreserved counts LSM labels (security.* other than
	// security.capability) the destination refused; any other refused
	// attribute fails the copy (see copyXattrs).
	XattrsNotPreserved int64 `json:"xattrsNotPreserved"`
	// Phases is where the copy's Duration went.
	Phases Phases `json:"phases"`
}

// Phases time the parts of a copy, one after the other (nanoseconds on the wire). What is
// left of Duration is the start (capability and destination checks) and the manifest.
type Phases struct {
	// Files is the walk and the copy of every file, symlink and special, which overlap:
	// files are copied as the walk finds them.
	Files time.Duration `json:"filesNs"`
	// Links is giving hardlink secondaries their names.
	Links time.Duration `json:"linksNs"`
	// Dirs is applying directory metadata (owner, xattrs, mode, times).
	Dirs time.Duration `json:"dirsNs"`
	// Sync is the final syncfs: what the background syncs left to write back.
	Sync time.Duration `json:"syncNs"`
}

// String lists the phases for a log line.
func (p Phases) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("files %s, hardlinks %s, directories %s, sync %s", r(p.Files), r(p.Links), r(p.Dirs), r(p.Sync))
}

const (
	// DefaultReadConcurrency is the default number of files copied at once.
	// Measured with nodesim's EBS model (a lazily loaded volume at 5 ms per
	// first read of a 512 KiB block): 4 workers restore a cache at about
	// 25 MiB/s, 64 at the volume's cap.
	DefaultReadConcurrency = 64
	// DefaultRangeReads is the default number of ranges of one large file
	// copied at once.
	DefaultRangeReads = 8
	// DefaultWalkDirs is the default number of directories listed at once.
	// An unchanged file costs an incremental save its listing, a round trip
	// through a FUSE mount; walked one directory at a time (and each file's
	// copy looked at, as before dstListing), 22k unchanged files cost an
	// incremental save over nodesim's loopback more than the 5% of them that
	// changed.
	DefaultWalkDirs = 16
)

// ErrSourceChanged reports a source file that changed while it was copied:
// the engine is still running, or something else writes to its cache. Such
// a copy would restore as a cold (or corrupt) cache, so it fails.
var ErrSourceChanged = errors.New("source changed during copy")
