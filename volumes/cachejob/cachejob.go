// Package cachejob is what the save and restore Jobs do on a node (`warmpool cache
// save|restore`): the pre-flight checks of the cache protocol around the copier, and the
// mapping of every outcome to a volumes.JobResult and an exit code. It holds no Kubernetes
// client: the controller learns the outcome from the pod's termination message alone.
package cachejob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/copier"
	"warmpool.io/warmpool/volumes/engine"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// Options are what save and restore share.
type Options struct {
	// CacheDir is the engine's cache directory on the node (save: the source; restore: the
	// directory the restored copy is renamed to).
	CacheDir string
	// VolumeDir is the root of the mounted PVC (save: the destination; restore: the source).
	VolumeDir     string
	Pool          string
	Node          string
	EngineVersion string
	// EngineContract names the row of the engine contract table (volumes/engine) to check the
	// cache against, for a release newer than the table that the user declared to behave
	// like a known one; empty: the row of EngineVersion.
	EngineContract string
	Architecture   string
	// Workers and BytesPerSecond are passed to the copier (0: its defaults, unthrottled).
	Workers        int
	BytesPerSecond int64
	// Log receives progress and decisions, one line each; nil discards them.
	Log io.Writer
	// ProgressInterval is how often progress is logged (0: the copier's default, 5s).
	ProgressInterval time.Duration
}

// SaveOptions configure Save.
type SaveOptions struct {
	Options
	// StatFS reads the volume's capacity (nil: statfs(2)); tests size a volume with it.
	StatFS func(dir string) (storagecheck.FSStat, error)
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	Options
	// StagingDir receives the copy before it is renamed into CacheDir; it must be on the same
	// filesystem. Default: StagingDir(CacheDir).
	StagingDir string
	// RestoreID is written into the restored cache as RestoreMarker (verify.go); empty: no
	// marker, and the restore can never verify warm.
	RestoreID string
}

// maxReason keeps a JobResult well under the kubelet's 4 KiB termination message limit,
// whatever paths an error names.
const maxReason = 1024

// StagingDir is the default staging directory of a restore into cacheDir: a hidden sibling,
// so it is on the same filesystem (the rename into place needs that) and outside the cache.
func StagingDir(cacheDir string) string {
	cacheDir = filepath.Clean(cacheDir)
	return filepath.Join(filepath.Dir(cacheDir), "."+filepath.Base(cacheDir)+".warmpool-staging")
}

// Save copies the engine cache at CacheDir onto the volume, if the engine shut down cleanly.
// The returned JobResult is always set; the error says why the result is not "saved".
//
//   - An engine version (or --engine-contract) not in the contract table: "failed", nothing
//     copied: warmpool does not know what a clean exit of that release looks like.
//   - Engine still holding its lock, or no proof of a clean exit by the release's contract
//     (copier.CheckCleanShutdown), or torn engine state: "unclean", nothing copied (the
//     engine would wipe that cache on its next start, so copying it is wasted time).
//   - A volume that already holds a complete copy (a manifest): incremental copy that
//     skips files unchanged since then.
//   - A copier that cannot copy trusted.* attributes (copier.ErrNoTrustedXattrs: the Job
//     lacks CAP_SYS_ADMIN, or the volume's filesystem refuses them): "failed", nothing
//     copied, the reason naming what is missing (see copyFailed).
//   - A cache that does not fit the volume (measured first, see Measure): "no-space", nothing
//     copied, with the cache's allocated bytes and inodes in Bytes and Files, so the
//     controller can make a volume that fits (storagecheck.VolumeSize).
//   - Anything else that fails: "failed"; the copier leaves no manifest on the volume, so
//     the half-written volume is never restored.
func Save(ctx context.Context, o SaveOptions) (volumes.JobResult, error) {
	res := volumes.JobResult{Result: volumes.ResultFailed, EngineVersion: o.EngineVersion, Architecture: o.Architecture}
	if err := o.validate(true); err != nil {
		return withReason(res, err), err
	}
	logf := o.logger()
	// What proves a clean exit depends on the engine release: without its contract there is
	// nothing to check against, which is a failure to report, not an unclean engine.
	contract, err := engine.Resolve(o.EngineVersion, o.EngineContract)
	if err != nil {
		err = fmt.Errorf("refusing to save %s: no engine contract for --engine-version %q --engine-contract %q: %w", o.CacheDir, o.EngineVersion, o.EngineContract, err)
		logf("%v", err)
		return withReason(res, err), err
	}
	if err := copier.CheckCleanShutdown(o.CacheDir, contract); err != nil {
		// An unreadable state means "unknown", which is treated as not clean too.
		res.Result = volumes.ResultUnclean
		err = fmt.Errorf("refusing to save %s: %w", o.CacheDir, err)
		logf("%v", err)
		return withReason(res, err), err
	}
	opts := o.copierOptions()
	opts.SourceNode = o.Node
	// The previous copy's manifest is read (from a volume that may load lazily from its
	// snapshot), and the manifest the cache's restore left, while the cache is measured: none
	// waits for another (a million-file manifest takes a second to decode).
	type baselineRead struct {
		b   copier.Baseline
		err error
	}
	base := make(chan baselineRead, 1)
	go func() {
		b, err := copier.ReadBaseline(o.CacheDir)
		base <- baselineRead{b, err}
	}()
	type manifestRead struct {
		m    copier.Manifest
		err  error
		took time.Duration
	}
	read := make(chan manifestRead, 1)
	go func() {
		began := time.Now()
		m, err := copier.ReadManifest(o.VolumeDir)
		read <- manifestRead{m, err, time.Since(began)}
	}()
	fit, fitErr := o.checkFit(ctx, res, logf)
	prev := <-read
	if fitErr != nil {
		return fit, fitErr
	}
	switch {
	case prev.err == nil:
		logf("volume %s holds a copy from %s (%d files, manifest read in %s): incremental save",
			o.VolumeDir, prev.m.Created.Format(time.RFC3339), prev.m.Totals.Files, prev.took.Round(time.Millisecond))
		opts.Previous = &prev.m
		b := <-base
		opts.Baseline = useBaseline(b.b, b.err, logf)
	case errors.Is(prev.err, copier.ErrNoManifest):
		logf("volume %s holds no earlier copy: full save", o.VolumeDir)
	default:
		// A corrupt manifest vouches for nothing: copy everything again.
		logf("ignoring the volume's manifest (%v): full save", prev.err)
	}
	logf("saving %s to %s (pool %s, node %s, engine %s, %s)", o.CacheDir, o.VolumeDir, o.Pool, o.Node, o.EngineVersion, o.Architecture)
	m, err := copier.Copy(ctx, o.CacheDir, o.VolumeDir, opts)
	if err != nil {
		return copyFailed(res, logf, fmt.Sprintf("saving %s to %s", o.CacheDir, o.VolumeDir), err)
	}
	logWarnings(logf, m)
	logf("saved %d files, %d bytes in %s (copied %d files, %d bytes; skipped %d unchanged files; %s)",
		m.Totals.Files, m.Totals.Bytes, m.Duration.Round(time.Millisecond), m.Stats.CopiedFiles, m.Stats.CopiedBytes, m.Stats.SkippedFiles, m.Stats.Phases)
	return fromManifest(volumes.ResultSaved, m), nil
}

// useBaseline takes what the restore that made the cache left at its root
// (copier.ReadBaseline, which returned b and err): an incremental save leaves a file alone
// only when it is untouched since that restore and the restore wrote it from the bytes the
// volume holds. Without it (a cache that started cold, or that the engine wiped) every file
// is copied onto the volume.
func useBaseline(b copier.Baseline, err error, logf func(string, ...any)) *copier.Baseline {
	switch {
	case err == nil:
		logf("the cache was restored from a copy of node %s made %s (%d files): files untouched since are left alone where the volume holds the same save's bytes",
			b.Manifest.SourceNode, b.Manifest.Created.Format(time.RFC3339), b.Manifest.Totals.Files)
		return &b
	case errors.Is(err, copier.ErrNoManifest):
		logf("the cache was not restored by warmpool: every file is copied, equal sizes and mtimes prove no equal bytes")
	default:
		logf("ignoring the manifest the cache's restore left (%v): every file is copied", err)
	}
	return nil
}

// Restore puts the copy on the volume into place at CacheDir, through a staging directory,
// so a half-restored cache is never seen by the engine. The returned JobResult is always
// set; the error says why the result is not "restored".
//
//   - A volume without a readable manifest: "no-cache", CacheDir untouched.
//   - A copy of another engine version or architecture (the engine would wipe it): "failed"
//     with the reason, CacheDir untouched.
//   - A volume that does not match its manifest (copier.ErrSourceCorrupt): "corrupt" with
//     the first entry that differs, CacheDir untouched; the controller quarantines the
//     snapshot.
//   - A copier that cannot copy trusted.* attributes (copier.ErrNoTrustedXattrs): "failed"
//     naming what is missing, CacheDir untouched, no staging dir.
func Restore(ctx context.Context, o RestoreOptions) (volumes.JobResult, error) {
	res := volumes.JobResult{Result: volumes.ResultFailed, EngineVersion: o.EngineVersion, Architecture: o.Architecture}
	if err := o.validateRestore(); err != nil {
		return withReason(res, err), err
	}
	logf := o.logger()
	saved, err := copier.ReadManifest(o.VolumeDir)
	if err != nil {
		res.Result = volumes.ResultNoCache
		err = fmt.Errorf("volume %s holds no complete cache copy: %w", o.VolumeDir, err)
		logf("%v", err)
		return withReason(res, err), err
	}
	// Checked here too (copier.RestoreSaved also does) so the mismatch is reported before any
	// work, with both sides named.
	if o.EngineVersion != "" && saved.EngineVersion != o.EngineVersion {
		err := fmt.Errorf("%w: volume holds engine version %q, node runs %q", copier.ErrIncompatible, saved.EngineVersion, o.EngineVersion)
		logf("%v", err)
		return withReason(res, err), err
	}
	if o.Architecture != "" && saved.Architecture != o.Architecture {
		err := fmt.Errorf("%w: volume holds architecture %q, node is %q", copier.ErrIncompatible, saved.Architecture, o.Architecture)
		logf("%v", err)
		return withReason(res, err), err
	}
	staging := o.StagingDir
	if staging == "" {
		staging = StagingDir(o.CacheDir)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(o.CacheDir)), 0o755); err != nil {
		err = fmt.Errorf("creating the parent of cache dir %s: %w", o.CacheDir, err)
		return withReason(res, err), err
	}
	logf("restoring %s (saved from node %s at %s, %d files, %d bytes) into %s via %s",
		o.VolumeDir, saved.SourceNode, saved.Created.Format(time.RFC3339), saved.Totals.Files, saved.Totals.Bytes, o.CacheDir, staging)
	m, err := copier.RestoreSaved(ctx, o.VolumeDir, &saved, staging, o.CacheDir, o.copierOptions())
	if err != nil {
		res, err = copyFailed(res, logf, "restoring into "+o.CacheDir, err)
		if errors.Is(err, copier.ErrSourceCorrupt) {
			res.Result = volumes.ResultCorrupt
		}
		return res, err
	}
	logWarnings(logf, m)
	if err := o.markRestored(logf); err != nil {
		return withReason(res, err), err
	}
	logf("restored %d files, %d bytes in %s (%s)", m.Totals.Files, m.Totals.Bytes, m.Duration.Round(time.Millisecond), m.Stats.Phases)
	return fromManifest(volumes.ResultRestored, m), nil
}

// ExitCode is the contract's exit code for a result.
func ExitCode(r volumes.JobResult) int {
	switch r.Result {
	case volumes.ResultSaved, volumes.ResultRestored:
		return volumes.ExitOK
	case volumes.ResultUnclean:
		return volumes.ExitUnclean
	case volumes.ResultNoCache:
		return volumes.ExitNoCache
	case volumes.ResultNoSpace:
		return volumes.ExitNoSpace
	case volumes.ResultCorrupt:
		return volumes.ExitCorrupt
	default:
		return volumes.ExitFailed
	}
}

// WriteResult writes r as JSON to path (the container's termination message file).
func WriteResult(path string, r volumes.JobResult) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding job result: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing job result to %s: %w", path, err)
	}
	return nil
}

// UsageError marks a bad option: the Job was built wrong, not the node's data.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func (o Options) validate(save bool) error {
	var missing []string
	if o.CacheDir == "" {
		missing = append(missing, "--cache-dir")
	}
	if o.VolumeDir == "" {
		missing = append(missing, "--volume-dir")
	}
	// A save records them in the manifest, and restores match on them: a copy without them
	// could never be restored.
	if save && o.EngineVersion == "" {
		missing = append(missing, "--engine-version")
	}
	if save && o.Architecture == "" {
		missing = append(missing, "--arch")
	}
	if len(missing) > 0 {
		return &UsageError{fmt.Errorf("missing %s", strings.Join(missing, ", "))}
	}
	if o.Workers < 0 {
		return &UsageError{fmt.Errorf("--workers: %d is negative", o.Workers)}
	}
	if o.BytesPerSecond < 0 {
		return &UsageError{fmt.Errorf("--bwlimit: %d is negative", o.BytesPerSecond)}
	}
	return nil
}

func (o Options) logger() func(string, ...any) {
	w := o.Log
	if w == nil {
		w = io.Discard
	}
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}

func (o Options) copierOptions() copier.Options {
	logf := o.logger()
	return copier.Options{
		Workers:          o.Workers,
		EngineVersion:    o.EngineVersion,
		Architecture:     o.Architecture,
		BytesPerSecond:   o.BytesPerSecond,
		ProgressInterval: o.ProgressInterval,
		Progress:         func(p copier.Progress) { logf("%s", FormatProgress(p)) },
	}
}

// FormatProgress renders one progress log line.
func FormatProgress(p copier.Progress) string {
	total := fmt.Sprintf("%s of %s", mib(p.BytesDone), mib(p.BytesTotal))
	if !p.ScanDone {
		total += "+ (scanning)"
	}
	state := "progress"
	if p.Final {
		state = "done"
	}
	return fmt.Sprintf("%s: %s, %d of %d files, %s/s, %s elapsed",
		state, total, p.FilesDone, p.FilesTotal, mib(int64(p.BytesPerSecond)), p.Elapsed.Round(100*time.Millisecond))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func logWarnings(logf func(string, ...any), m copier.Manifest) {
	for _, w := range m.Warnings {
		logf("warning: %s", w)
	}
}

func fromManifest(result string, m copier.Manifest) volumes.JobResult {
	return volumes.JobResult{
		Result:          result,
		Bytes:           m.Totals.Bytes,
		Files:           m.Totals.Files,
		DurationSeconds: m.Duration.Seconds(),
		EngineVersion:   m.EngineVersion,
		Architecture:    m.Architecture,
	}
}

// copyFailed is the outcome of a copy (doing says which) that failed: "failed", so the Job
// exits with volumes.ExitFailed. A copier that refused because it cannot copy trusted.*
// attributes (copier.ErrNoTrustedXattrs) is a fault of the Job's privileges or of the
// volume's filesystem, not of the node's data: its reason leads, so the missing capability
// (CAP_SYS_ADMIN) is named at the start of the termination message and of the Event note,
// whatever the length of the paths after it.
func copyFailed(res volumes.JobResult, logf func(string, ...any), doing string, err error) (volumes.JobResult, error) {
	if errors.Is(err, copier.ErrNoTrustedXattrs) {
		err = fmt.Errorf("%w (%s)", err, doing)
	} else {
		err = fmt.Errorf("%s: %w", doing, err)
	}
	logf("%v", err)
	res.Result = volumes.ResultFailed
	return withReason(res, err), err
}

func withReason(r volumes.JobResult, err error) volumes.JobResult {
	reason := err.Error()
	if len(reason) > maxReason {
		reason = reason[:maxReason-3] + "..."
	}
	r.Reason = reason
	return r
}

// checkFit measures the cache and the volume before the copy. A cache that does not fit is
// refused with "no-space" (err set); one that fits returns a nil error.
func (o SaveOptions) checkFit(ctx context.Context, res volumes.JobResult, logf func(string, ...any)) (volumes.JobResult, error) {
	began := time.Now()
	usage, err := Measure(ctx, o.CacheDir)
	if err != nil {
		logf("%v", err)
		return withReason(res, err), err
	}
	stat := o.StatFS
	if stat == nil {
		stat = StatFS
	}
	fs, err := stat(o.VolumeDir)
	if err != nil {
		err = fmt.Errorf("reading the save volume's capacity, %w", err)
		logf("%v", err)
		return withReason(res, err), err
	}
	capBytes, capInodes := fs.Capacity()
	if p := storagecheck.FitProblem(usage, fs); p != nil {
		size := storagecheck.VolumeSize(usage)
		err := fmt.Errorf("refusing to save %s: %s; a volume of %s holds it", o.CacheDir, p.Message, size.String())
		logf("%v", err)
		res.Result, res.Bytes, res.Files = volumes.ResultNoSpace, usage.Bytes, usage.Inodes
		return withReason(res, err), err
	}
	logf("the cache takes %s in %d inodes (measured in %s); the volume holds %s in %d inodes",
		storagecheck.FormatBytes(usage.Bytes), usage.Inodes, time.Since(began).Round(time.Millisecond), storagecheck.FormatBytes(capBytes), capInodes)
	return res, nil
}
