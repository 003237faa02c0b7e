// Package copier copies a Dagger engine cache directory between a node's NVMe
// disk and a persistent volume, preserving everything the engine relies on
// (hardlinks, sparse files, ownership, modes, xattrs, nanosecond times), and
// writes a manifest last so that an interrupted copy is never mistaken for a
// complete one. It holds no Kubernetes logic: the save and restore Jobs run it
// through `warmpool cache save|restore`.
package copier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

const maxWarnings = 100

// hooks let tests inject failures at named points. at is called with the
// point and the relative path; a non-nil error aborts the copy as a failing
// filesystem would, except at "chown" where it replaces chown's result.
type hooks struct {
	at   func(point, rel string) error
	euid *int
	// flushEvery replaces flushEvery; flush runs before each background
	// sync, and its error is that sync's (see flusher).
	flushEvery int64
	flush      func() error
}

type job struct {
	rel string
	st  unix.Stat_t
	// dstMayExist is false when the parent was created by this run, which
	// saves a stat of the destination for every file of a fresh copy.
	dstMayExist bool
}

type linkJob struct {
	rel, primary string
	st           unix.Stat_t
	dstMayExist  bool
}

type dirJob struct {
	rel     string
	st      unix.Stat_t
	existed bool
}

type copier struct {
	src, dst string
	opts     Options
	globs    []string
	prev     map[string]*Entry
	// prevDirs lists what each directory of dst holds, by Previous (see dstListing).
	prevDirs map[string][]string
	// leftAlone holds the regular files of several links that the copy left as Previous
	// has them: their other names at dst still share their inode.
	leftAlone sync.Map
	// id is this copy's Manifest.ID, the Origin of what it writes.
	id string
	// expect, set by Restore, is the source's manifest, checked as the
	// source is walked and read (see expectation).
	expect  *expectation
	limiter *rate.Limiter
	chunk   int
	// gate keeps large files' ranges from crowding out small files.
	gate  *rangeGate
	euid  int
	noCFR atomic.Bool
	start time.Time

	phases Phases

	// The walk's result, set when it ends (see walker).
	totals  Totals
	links   []linkJob
	dirs    []dirJob
	entries []Entry

	// Shared counters.
	dataBytes, holeBytes, skippedBytes, copiedBytes atomic.Int64
	filesDone, filesTotal, bytesTotal               atomic.Int64
	copiedFiles, skippedFiles, deleted, specials    atomic.Int64
	skippedSpecial, ownerFails, xattrFails          atomic.Int64
	scanDone                                        atomic.Bool

	mu       sync.Mutex
	warnings []string
}

// Copy copies the tree at src into dst and returns the manifest it wrote at
// dst/ManifestName. dst is created if missing (its parent must exist); an
// existing dst is brought in line with src: extra entries are deleted, and
// with Options.Previous unchanged files are skipped. The manifest at dst is
// removed before anything else and written only after every copied file and
// directory is durable, so any failure or cancellation leaves no manifest.
//
// Ownership: as root, uid/gid are preserved and a chown failure is an error.
// Not as root, chown to another owner fails with EPERM; that is counted in
// Stats.OwnershipNotPreserved and listed in Manifest.Warnings, not fatal.
// The save and restore Jobs run as root.
//
// Extended attributes: Copy needs CAP_SYS_ADMIN in its effective set and a
// dst filesystem that stores trusted.* attributes, or it fails with
// ErrNoTrustedXattrs before dst is changed in any way (see caps.go): without
// them the engine's trusted.overlay.* markers would be dropped silently.
func Copy(ctx context.Context, src, dst string, opts Options) (Manifest, error) {
	c, err := newCopier(src, dst, opts)
	if err != nil {
		return Manifest{}, err
	}
	return c.run(ctx)
}

func newCopier(src, dst string, opts Options) (*copier, error) {
	src, dst, err := checkPaths(src, dst)
	if err != nil {
		return nil, err
	}
	if opts.Workers <= 0 {
		opts.Workers = max(DefaultReadConcurrency, runtime.NumCPU()*2)
	}
	if opts.RangeReads <= 0 {
		opts.RangeReads = DefaultRangeReads
	}
	if opts.WalkDirs <= 0 {
		opts.WalkDirs = DefaultWalkDirs
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	c := &copier{
		src:   src,
		dst:   dst,
		opts:  opts,
		globs: append(slices.Clone(DefaultChecksumGlobs), opts.ChecksumGlobs...),
		chunk: copyChunk,
		euid:  os.Geteuid(),
		gate:  newRangeGate(),
		id:    newCopyID(),
	}
	for _, g := range c.globs {
		if _, err := filepath.Match(g, ""); err != nil {
			return nil, fmt.Errorf("checksum glob %q: %w", g, err)
		}
	}
	if opts.hooks != nil && opts.hooks.euid != nil {
		c.euid = *opts.hooks.euid
	}
	if opts.BytesPerSecond > 0 {
		burst := int(min(opts.BytesPerSecond, copyChunk))
		c.limiter = rate.NewLimiter(rate.Limit(opts.BytesPerSecond), burst)
		c.chunk = burst
	}
	if opts.Previous != nil {
		c.prev = make(map[string]*Entry, len(opts.Previous.Entries))
		for i := range opts.Previous.Entries {
			c.prev[opts.Previous.Entries[i].Path] = &opts.Previous.Entries[i]
		}
		c.prevDirs = dstListing(opts.Previous)
	}
	return c, nil
}

// checkPaths makes both paths absolute and refuses overlapping trees: a dst
// inside src would be copied into itself, and a src inside dst would be
// deleted as an extra entry of dst.
func checkPaths(src, dst string) (string, string, error) {
	src, err := filepath.Abs(src)
	if err != nil {
		return "", "", fmt.Errorf("resolving source %s: %w", src, err)
	}
	dst, err = filepath.Abs(dst)
	if err != nil {
		return "", "", fmt.Errorf("resolving destination %s: %w", dst, err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return "", "", fmt.Errorf("source: %w", err)
	}
	if !fi.IsDir() {
		return "", "", fmt.Errorf("source %s is not a directory", src)
	}
	realSrc, err := filepath.EvalSymlinks(src)
	if err != nil {
		return "", "", fmt.Errorf("resolving source %s: %w", src, err)
	}
	realDst, err := filepath.EvalSymlinks(filepath.Dir(dst))
	if err != nil {
		return "", "", fmt.Errorf("resolving destination parent of %s: %w", dst, err)
	}
	realDst = filepath.Join(realDst, filepath.Base(dst))
	if within(realDst, realSrc) || within(realSrc, realDst) {
		return "", "", fmt.Errorf("source %s and destination %s overlap", src, dst)
	}
	return src, dst, nil
}

func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

func (c *copier) srcPath(rel string) string { return filepath.Join(c.src, rel) }
func (c *copier) dstPath(rel string) string { return filepath.Join(c.dst, rel) }

func (c *copier) hook(point, rel string) error {
	if c.opts.hooks == nil || c.opts.hooks.at == nil {
		return nil
	}
	return c.opts.hooks.at(point, rel)
}

func (c *copier) warn(counter *atomic.Int64, format string, args ...any) {
	counter.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.warnings) < maxWarnings {
		c.warnings = append(c.warnings, fmt.Sprintf(format, args...))
	}
}

func (c *copier) run(ctx context.Context) (m Manifest, err error) {
	c.start = time.Now()
	// Before anything at dst changes: a copy that cannot see or keep the
	// engine's trusted.overlay.* markers would restore overlay snapshots
	// that show deleted files, and nothing downstream could tell.
	if err := checkCapability(); err != nil {
		return Manifest{}, err
	}
	dstExisted, err := c.prepareDst()
	if err != nil {
		return Manifest{}, err
	}
	// The fd is opened before any write so that syncfs at the end reports
	// writeback errors (ENOSPC, EIO) of everything written since.
	dstFD, err := unix.Open(c.dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Manifest{}, fmt.Errorf("opening destination %s: %w", c.dst, err)
	}
	defer unix.Close(dstFD)
	var rootSt unix.Stat_t
	if err := unix.Stat(c.src, &rootSt); err != nil {
		return Manifest{}, fmt.Errorf("stat source %s: %w", c.src, err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	stopProgress := c.startProgress()
	defer stopProgress()
	flush := c.startFlusher(dstFD, cancel)
	defer flush.wait()

	// Each phase runs from the end of the one before (see Phases).
	mark := time.Now()
	phase := func(d *time.Duration) {
		now := time.Now()
		*d, mark = now.Sub(mark), now
	}
	jobs := make(chan job, c.opts.Workers*4)
	results := make([][]Entry, c.opts.Workers)
	var wg sync.WaitGroup
	for i := range c.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() != nil {
					continue // drain so the walker never blocks
				}
				e, ok, err := c.copyEntry(ctx, j)
				if err != nil {
					cancel(err)
					continue
				}
				if ok {
					results[i] = append(results[i], e)
				}
			}
		}()
	}
	// The walk's listings are small reads like a small file's: while it runs, large files
	// get the gate's share beside small ones (see rangeGate).
	c.gate.walkStarted()
	err = c.walk(ctx, dstExisted, jobs)
	c.gate.walkDone()
	if err != nil {
		cancel(err)
	}
	close(jobs)
	wg.Wait()
	c.scanDone.Store(true)
	phase(&c.phases.Files)
	if c.expect != nil {
		// A mismatch is what the restore reports, rather than the
		// cancellation it caused in the other workers.
		if err := c.expect.failure(); err != nil {
			return Manifest{}, err
		}
	}
	if err := context.Cause(ctx); err != nil {
		return Manifest{}, err
	}
	if c.expect != nil {
		if err := c.expect.unhashed(c.src); err != nil {
			return Manifest{}, err
		}
	}

	for _, r := range results {
		c.entries = append(c.entries, r...)
	}
	if err := c.finishLinks(ctx); err != nil {
		return Manifest{}, err
	}
	phase(&c.phases.Links)
	if err := c.finishDirs(ctx, &rootSt); err != nil {
		return Manifest{}, err
	}
	phase(&c.phases.Dirs)
	if err := c.hook("sync", ""); err != nil {
		return Manifest{}, fmt.Errorf("syncing %s: %w", c.dst, err)
	}
	// One syncfs makes every file and directory of the copy durable with
	// a single journal commit; fsyncing each of a million small files would
	// cost a commit apiece. It also returns writeback errors (Linux ≥ 5.8);
	// one a background sync saw cancelled ctx, checked below.
	flush.wait()
	if err := unix.Syncfs(dstFD); err != nil {
		return Manifest{}, fmt.Errorf("syncing filesystem of %s: %w", c.dst, err)
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, context.Cause(ctx)
	}
	phase(&c.phases.Sync)

	m = c.manifest()
	err = writeManifest(c.dst, &m, func() error {
		if err := c.hook("manifest", ""); err != nil {
			return fmt.Errorf("publishing manifest: %w", err)
		}
		// Last chance to honour a cancellation: after the rename the copy
		// is complete.
		return context.Cause(ctx)
	})
	if err != nil {
		return Manifest{}, fmt.Errorf("writing manifest at %s: %w", c.dst, err)
	}
	// Creating the manifest bumped the root's mtime; put the source's back.
	if err := setTimes(c.dst, &rootSt); err != nil {
		return Manifest{}, err
	}
	if err := syncDir(c.dst); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// prepareDst creates dst or, if it exists, removes its manifest durably
// before anything else is written, so the manifest can never describe a
// half-updated tree. First it probes dst's filesystem for trusted.*
// support (ErrNoTrustedXattrs): an existing dst, and its manifest, are left
// as they were, and a dst created only for the probe is removed again.
func (c *copier) prepareDst() (existed bool, err error) {
	fi, err := os.Lstat(c.dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(c.dst, 0o700); err != nil {
			return false, fmt.Errorf("creating destination: %w", err)
		}
		if err := probeTrustedXattrs(c.dst); err != nil {
			_ = os.Remove(c.dst)
			return false, err
		}
		return false, nil
	case err != nil:
		return false, fmt.Errorf("destination: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("destination %s exists and is not a directory", c.dst)
	}
	if err := probeTrustedXattrs(c.dst); err != nil {
		return true, err
	}
	return true, removeManifest(c.dst)
}

func (c *copier) manifest() Manifest {
	slices.SortFunc(c.entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	t := c.totals
	t.Specials = c.specials.Load()
	return Manifest{
		FormatVersion: FormatVersion,
		ID:            c.id,
		EngineVersion: c.opts.EngineVersion,
		Architecture:  c.opts.Architecture,
		SourceNode:    c.opts.SourceNode,
		Created:       time.Now().UTC(),
		Duration:      time.Since(c.start),
		Totals:        t,
		Stats: Stats{
			CopiedFiles:           c.copiedFiles.Load(),
			CopiedBytes:           c.copiedBytes.Load(),
			SkippedFiles:          c.skippedFiles.Load(),
			SkippedBytes:          c.skippedBytes.Load(),
			Deleted:               c.deleted.Load(),
			SkippedSpecial:        c.skippedSpecial.Load(),
			OwnershipNotPreserved: c.ownerFails.Load(),
			XattrsNotPreserved:    c.xattrFails.Load(),
			Phases:                c.phases,
		},
		Warnings: c.warnings,
		Entries:  c.entries,
	}
}
