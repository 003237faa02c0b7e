package copier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrIncompatible: the saved cache was written for another engine version or
// architecture, which the engine would wipe on start (or worse, misread).
var ErrIncompatible = errors.New("cache copy is for a different engine")

// ErrSourceCorrupt is what a restore's error also is (beside ErrCorrupt and its
// *CorruptError) when its source did not match the source's manifest: the saved
// copy itself is bad, and so is the snapshot it came from. A restored copy that
// failed Verify in staging is ErrCorrupt alone: that is the node's disk.
var ErrSourceCorrupt = errors.New("the saved copy does not match its manifest")

// sourceCorrupt marks a restore's error as ErrSourceCorrupt without changing its
// message.
type sourceCorrupt struct{ error }

func (e sourceCorrupt) Unwrap() error        { return e.error }
func (e sourceCorrupt) Is(target error) bool { return target == ErrSourceCorrupt }

// Restore puts the verified copy at src into place at finalDir without ever
// exposing a partial cache there:
//
//  0. The process must hold CAP_SYS_ADMIN (ErrNoTrustedXattrs otherwise,
//     before src is even read): without it the copy would silently lose the
//     trusted.overlay.* attributes on src. Copy then probes stagingDir's
//     filesystem for trusted.* support before writing into it.
//  1. ReadManifest(src): a volume without a valid manifest is never
//     restored.
//  2. If opts.EngineVersion or opts.Architecture is set, it must match the
//     manifest's (ErrIncompatible otherwise).
//  3. Copy src into stagingDir (removed first if an earlier attempt left it),
//     checking src against its manifest as it is walked and read, with
//     Verify's checks and reasons (see expectation): a source that does not
//     match is refused with a *CorruptError. Then Verify(stagingDir).
//  4. Swap stagingDir into finalDir: an atomic RENAME_EXCHANGE when finalDir
//     exists (so finalDir is never missing, even for an instant), a plain
//     rename when it does not, then delete the old contents.
//
// On any failure finalDir is untouched and stagingDir is removed.
// stagingDir and finalDir must be on the same filesystem, and finalDir must
// not be a mount point (rename fails with EXDEV or EBUSY): mount the parent
// of the engine's cache directory into the restore Job, not the directory.
// Options are used as for Copy; Previous is ignored, and engine version,
// architecture and source node default to the saved manifest's.
func Restore(ctx context.Context, src, stagingDir, finalDir string, opts Options) (Manifest, error) {
	// First, so a Job without the capability fails at once instead of after
	// copying the whole volume. What is missing leads the message, as it
	// does for Copy.
	if err := checkCapability(); err != nil {
		return Manifest{}, fmt.Errorf("%w (refusing to restore from %s)", err, src)
	}
	// The source is checked against this manifest by the copy itself, not
	// by a Verify(src) before it: on a volume lazily loaded from a snapshot
	// that pass cost a walk of every entry and a read of every database,
	// each waiting on S3, and the copy then walked and read them again.
	saved, err := ReadManifest(src)
	if err != nil {
		return Manifest{}, fmt.Errorf("refusing to restore from %s: %w", src, err)
	}
	return restoreSaved(ctx, src, &saved, stagingDir, finalDir, opts)
}

// RestoreSaved is Restore for a caller that has already read src's
// manifest with ReadManifest (to check it or report it before any work):
// saved must be that manifest, and the copy checks src against it. It
// spares a second read and decode of the manifest, which for a large cache
// on a lazily loaded volume is a noticeable part of a restore outside its
// copy.
func RestoreSaved(ctx context.Context, src string, saved *Manifest, stagingDir, finalDir string, opts Options) (Manifest, error) {
	if err := checkCapability(); err != nil {
		return Manifest{}, fmt.Errorf("%w (refusing to restore from %s)", err, src)
	}
	return restoreSaved(ctx, src, saved, stagingDir, finalDir, opts)
}

// restoreSaved is RestoreSaved once the caller has checked the capability.
func restoreSaved(ctx context.Context, src string, saved *Manifest, stagingDir, finalDir string, opts Options) (Manifest, error) {
	if saved == nil {
		return Manifest{}, fmt.Errorf("refusing to restore from %s: no manifest", src)
	}
	if opts.EngineVersion != "" && saved.EngineVersion != opts.EngineVersion {
		return Manifest{}, fmt.Errorf("%w: %s holds engine %q, want %q", ErrIncompatible, src, saved.EngineVersion, opts.EngineVersion)
	}
	if opts.Architecture != "" && saved.Architecture != opts.Architecture {
		return Manifest{}, fmt.Errorf("%w: %s holds architecture %q, want %q", ErrIncompatible, src, saved.Architecture, opts.Architecture)
	}
	opts.Previous = nil
	if opts.EngineVersion == "" {
		opts.EngineVersion = saved.EngineVersion
	}
	if opts.Architecture == "" {
		opts.Architecture = saved.Architecture
	}
	if opts.SourceNode == "" {
		opts.SourceNode = saved.SourceNode
	}

	stagingDir, err := filepath.Abs(stagingDir)
	if err != nil {
		return Manifest{}, fmt.Errorf("resolving staging dir: %w", err)
	}
	finalDir, err = filepath.Abs(finalDir)
	if err != nil {
		return Manifest{}, fmt.Errorf("resolving final dir: %w", err)
	}
	if within(stagingDir, finalDir) || within(finalDir, stagingDir) {
		return Manifest{}, fmt.Errorf("staging dir %s and final dir %s overlap", stagingDir, finalDir)
	}
	// Leftovers of an earlier attempt: a staging copy without its swap, or
	// an old cache whose deletion was interrupted.
	oldDir := finalDir + ".warmpool-old"
	for _, d := range []string{stagingDir, oldDir} {
		if err := os.RemoveAll(d); err != nil {
			return Manifest{}, fmt.Errorf("removing leftover %s: %w", d, err)
		}
	}

	c, err := newCopier(src, stagingDir, opts)
	if err != nil {
		return Manifest{}, fmt.Errorf("restoring %s into %s: %w", src, stagingDir, err)
	}
	c.expect = newExpectation(saved)
	c.gate.pace(c.shares(saved))
	m, err := c.run(ctx)
	if errors.Is(err, ErrCorrupt) {
		// Only the check of src makes the copy fail so.
		_ = os.RemoveAll(stagingDir)
		return Manifest{}, sourceCorrupt{fmt.Errorf("refusing to restore from %s: %w", src, err)}
	}
	if err == nil {
		_, err = Verify(stagingDir)
	}
	if err == nil && opts.hooks != nil && opts.hooks.at != nil {
		err = opts.hooks.at("swap", "")
	}
	if err != nil {
		// Staging space is the node's NVMe: give it back.
		_ = os.RemoveAll(stagingDir)
		if errors.Is(err, ErrNoTrustedXattrs) {
			return Manifest{}, fmt.Errorf("%w (restoring %s into %s)", err, src, stagingDir)
		}
		return Manifest{}, fmt.Errorf("restoring %s into %s: %w", src, stagingDir, err)
	}
	old, err := swapIn(stagingDir, finalDir, oldDir)
	if err != nil {
		_ = os.RemoveAll(stagingDir)
		return Manifest{}, err
	}
	if old != "" {
		// The restore is done; failing to delete the previous cache costs
		// disk space, not correctness, so it is a warning. The next Restore
		// retries the deletion.
		if err := os.RemoveAll(old); err != nil {
			m.Warnings = append(m.Warnings, fmt.Sprintf("removing previous cache %s: %v", old, err))
		}
	}
	return m, nil
}

// swapIn moves staging to final and returns where the previous final
// contents went ("" if there were none).
func swapIn(staging, final, oldDir string) (string, error) {
	err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE)
	switch {
	case err == nil:
		return staging, syncParents(staging, final)
	case errors.Is(err, unix.ENOENT):
		if err := os.Rename(staging, final); err != nil {
			return "", fmt.Errorf("moving %s to %s: %w", staging, final, err)
		}
		return "", syncParents(staging, final)
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		// No RENAME_EXCHANGE on this filesystem: two renames. finalDir is
		// missing between them, which the engine (not yet started) tolerates.
		if err := os.Rename(final, oldDir); err != nil {
			return "", fmt.Errorf("moving %s aside: %w", final, err)
		}
		if err := os.Rename(staging, final); err != nil {
			if rerr := os.Rename(oldDir, final); rerr != nil {
				return "", fmt.Errorf("moving %s to %s: %w (and putting the old cache back: %v)", staging, final, err, rerr)
			}
			return "", fmt.Errorf("moving %s to %s: %w", staging, final, err)
		}
		return oldDir, syncParents(staging, final)
	default:
		return "", fmt.Errorf("swapping %s into %s: %w", staging, final, err)
	}
}

func syncParents(a, b string) error {
	if err := syncDir(filepath.Dir(b)); err != nil {
		return err
	}
	if filepath.Dir(a) != filepath.Dir(b) {
		return syncDir(filepath.Dir(a))
	}
	return nil
}
