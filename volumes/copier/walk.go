package copier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// The walk lists the source tree, creates its directories at dst, and hands
// every non-directory to the copy workers. It lists up to Options.WalkDirs
// directories at once: an unchanged entry costs an incremental save nothing
// but its listing (dst is as Previous says, see dstListing), and over a FUSE
// mount each listing waits on a round trip, so a walk of one directory at a
// time, not the data, bounded an incremental save of a cache of many small
// files.
//
// Its result is the serial walk's, whatever the order the walkers ran in:
// directories are put back in walk order (depth first, names in byte order)
// after the walk, and so is every regular file with more than one link,
// because the first of a hardlink group's names in walk order is the one
// copied (the primary) and the others are linked to it. Those files are
// copied once the walk is done; the rest as they are found. The first error
// of any walker, or of a copy worker, stops every walker and fails the walk.

// walker is one walk's shared state. The walkers merge what they found under
// mu, once per directory.
type walker struct {
	c      *copier
	ctx    context.Context
	cancel context.CancelCauseFunc
	jobs   chan<- job
	// slots bounds the walkers beyond the first: a directory found while
	// every slot is taken is walked by its finder, depth first.
	slots chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	totals Totals
	dirs   []dirJob
	dirEnt []Entry
	// linked are the regular files with more than one link.
	linked []job
}

// walk walks the whole source tree into jobs and returns once every entry
// was handed out, or with the first error.
func (c *copier) walk(ctx context.Context, dstExisted bool, jobs chan<- job) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := &walker{c: c, ctx: ctx, cancel: cancel, jobs: jobs, slots: make(chan struct{}, c.opts.WalkDirs-1)}
	w.dir("", dstExisted)
	w.wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if c.expect != nil {
		if err := c.expect.walked(w.linked); err != nil {
			return err
		}
	}
	c.totals = w.totals
	c.entries = append(c.entries, w.dirEnt...)
	c.dirs = w.dirs
	// Walk order: finishDirs applies them in reverse, children first.
	slices.SortFunc(c.dirs, func(a, b dirJob) int { return compareWalkOrder(a.rel, b.rel) })
	return c.assignLinks(ctx, w.linked, jobs)
}

// assignLinks makes the first name of each hardlink group in walk order its
// primary, which is copied, and records the others for finishLinks, as a
// serial walk would have met them.
func (c *copier) assignLinks(ctx context.Context, linked []job, jobs chan<- job) error {
	slices.SortFunc(linked, func(a, b job) int { return compareWalkOrder(a.rel, b.rel) })
	inodes := make(map[[2]uint64]string, len(linked))
	for _, j := range linked {
		key := [2]uint64{uint64(j.st.Dev), j.st.Ino} //nolint:unconvert // Dev is 32 bits on some platforms
		if primary, ok := inodes[key]; ok {
			c.totals.Hardlinks++
			c.links = append(c.links, linkJob{rel: j.rel, primary: primary, st: j.st, dstMayExist: j.dstMayExist})
			continue
		}
		inodes[key] = j.rel
		c.countFile(&c.totals, &j.st)
		select {
		case jobs <- j:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

func (c *copier) countFile(t *Totals, st *unix.Stat_t) {
	t.Files++
	t.Bytes += st.Size
	c.filesTotal.Add(1)
	c.bytesTotal.Add(st.Size)
}

// compareWalkOrder orders slash-separated paths as a depth-first walk that
// lists names in byte order meets them: component by component, so "a/c"
// comes before "a.b". A name holds neither '/' nor NUL, so comparing with
// '/' taken as the smallest byte does it.
func compareWalkOrder(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if x == '/' {
			x = 0
		}
		if y == '/' {
			y = 0
		}
		if x < y {
			return -1
		}
		return 1
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// dir walks src/rel, and the subdirectories it has no free walker for; the
// first error cancels the whole walk.
func (w *walker) dir(rel string, dstExisted bool) {
	if err := w.list(rel, dstExisted); err != nil {
		w.cancel(err)
	}
}

// spawn walks a subdirectory on a walker of its own if one is free, and
// here (depth first) if not.
func (w *walker) spawn(rel string, existed bool) {
	select {
	case w.slots <- struct{}{}:
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() { <-w.slots }()
			w.dir(rel, existed)
		}()
	default:
		w.dir(rel, existed)
	}
}

// list lists src/rel, creates the directories it finds (so a worker never
// writes into a missing parent), sets regular files with several links aside
// (see walker) and hands every other non-directory to the copy workers.
func (w *walker) list(rel string, dstExisted bool) error {
	c, ctx := w.c, w.ctx
	if err := c.hook("walk", rel); err != nil {
		return fmt.Errorf("listing %s: %w", c.srcPath(rel), err)
	}
	ents, stats, err := readDirStat(c.srcPath(rel))
	if err != nil {
		return err
	}
	if rel == "" {
		// A source that is itself a restored or saved copy carries a
		// manifest; it describes that tree, not the one being written.
		for i := 0; i < len(ents); i++ {
			if ents[i] == ManifestName || ents[i] == manifestTemp {
				ents = slices.Delete(ents, i, i+1)
				stats = slices.Delete(stats, i, i+1)
				i--
			}
		}
	}
	if dstExisted {
		if err := c.deleteExtra(rel, ents); err != nil {
			return err
		}
	}
	// What this directory adds to the walk's result, merged once at the end.
	var (
		t       Totals
		dirs    []dirJob
		dirEnt  []Entry
		linked  []job
		subdirs []dirJob
	)
	defer func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.totals.Files += t.Files
		w.totals.Bytes += t.Bytes
		w.totals.Dirs += t.Dirs
		w.totals.Symlinks += t.Symlinks
		w.dirs = append(w.dirs, dirs...)
		w.dirEnt = append(w.dirEnt, dirEnt...)
		w.linked = append(w.linked, linked...)
	}()
	// A directory's large files go to the workers as it is listed, its other files after:
	// a cache keeps its few large layer blobs among thousands of small ones (in name order
	// the layers came last), and copied last they ran alone at the volume's throughput
	// after the small files had run alone at its IOPS. Started first, they take what
	// throughput the small files leave (see rangeGate).
	var later []job
	for i, name := range ents {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		crel := filepath.Join(rel, name)
		st := stats[i]
		if c.expect != nil {
			// Before the switch: a socket where the manifest has an
			// entry is a mismatch, although no socket is copied.
			if err := c.expect.listed(crel, &st); err != nil {
				return err
			}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			existed, err := c.makeDir(crel, dstExisted)
			if err != nil {
				return err
			}
			t.Dirs++
			d := dirJob{rel: crel, st: st, existed: existed}
			dirs = append(dirs, d)
			dirEnt = append(dirEnt, entryFromStat(crel, TypeDir, &st))
			subdirs = append(subdirs, d)
			continue
		case unix.S_IFREG:
			if st.Nlink > 1 {
				linked = append(linked, job{rel: crel, st: st, dstMayExist: dstExisted})
				continue
			}
			c.countFile(&t, &st)
		case unix.S_IFLNK:
			t.Symlinks++
		case unix.S_IFSOCK:
			// A socket is an endpoint of a process that no longer runs.
			c.skippedSpecial.Add(1)
			continue
		}
		j := job{rel: crel, st: st, dstMayExist: dstExisted}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || !c.large(st.Size) {
			later = append(later, j)
			continue
		}
		if err := w.send(j); err != nil {
			return err
		}
	}
	for _, j := range later {
		if err := w.send(j); err != nil {
			return err
		}
	}
	// Subdirectories after the files: the workers get this directory's
	// files at once, and an inline walk of a subtree holds nothing up.
	for _, d := range subdirs {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		w.spawn(d.rel, d.existed)
	}
	return nil
}

// send hands a job to the copy workers.
func (w *walker) send(j job) error {
	select {
	case w.jobs <- j:
		return nil
	case <-w.ctx.Done():
		return context.Cause(w.ctx)
	}
}

// makeDir makes sure dst/rel is a directory and says whether it was there
// already. New directories start as 0700 so we can always write into them;
// their real mode, owner and times are applied after their contents.
func (c *copier) makeDir(rel string, parentExisted bool) (bool, error) {
	dp := c.dstPath(rel)
	if parentExisted {
		if p, ok := c.previous(rel); ok {
			if p != nil && p.Type == TypeDir {
				return true, nil
			}
			if p != nil {
				if err := c.remove(dp); err != nil {
					return false, err
				}
			}
		} else if existed, err := c.lookDir(dp); err != nil || existed {
			return existed, err
		}
	}
	err := unix.Mkdir(dp, 0o700)
	if errors.Is(err, unix.EEXIST) && parentExisted {
		// dst holds what Previous does not list: look, as without it.
		if existed, err := c.lookDir(dp); err != nil || existed {
			return existed, err
		}
		err = unix.Mkdir(dp, 0o700)
	}
	if err != nil {
		return false, fmt.Errorf("creating directory %s: %w", dp, err)
	}
	return false, nil
}

// lookDir says whether the dst path dp is a directory, and removes whatever
// else is there.
func (c *copier) lookDir(dp string) (bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(dp, &st)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return true, nil
	case err == nil:
		return false, c.remove(dp)
	case !errors.Is(err, unix.ENOENT):
		return false, fmt.Errorf("stat %s: %w", dp, err)
	}
	return false, nil
}

// readDirStat lists a source directory in name order and lstats every entry
// relative to the directory's fd, which spares the kernel a walk of the full
// path per entry. The directory is opened with O_NOATIME (when allowed) so a
// save does not dirty the inodes of the cache it reads.
func readDirStat(dir string) ([]string, []unix.Stat_t, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening source directory %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, nil, fmt.Errorf("listing source directory %s: %w", dir, err)
	}
	// Name order makes the walk, and so the choice of each hardlink
	// group's primary, deterministic across runs.
	slices.Sort(names)
	stats := make([]unix.Stat_t, len(names))
	for i, n := range names {
		if err := unix.Fstatat(fd, n, &stats[i], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, nil, fmt.Errorf("stat %s: %w", filepath.Join(dir, n), err)
		}
	}
	return names, stats, nil
}

// deleteExtra removes entries of dst/rel that src/rel no longer has. What
// dst/rel holds is read from Previous where it lists the directory (see
// dstListing), and from dst where it does not.
func (c *copier) deleteExtra(rel string, srcEnts []string) error {
	dp := c.dstPath(rel)
	var names []string
	if p, ok := c.previous(rel); ok && (rel == "" || p != nil && p.Type == TypeDir) {
		names = c.prevDirs[filepath.ToSlash(rel)]
	} else {
		if err := c.hook("list-dst", rel); err != nil {
			return fmt.Errorf("listing destination directory %s: %w", dp, err)
		}
		f, err := os.Open(dp)
		if err != nil {
			return fmt.Errorf("listing destination directory: %w", err)
		}
		names, err = f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("listing destination directory %s: %w", dp, err)
		}
	}
	keep := make(map[string]struct{}, len(srcEnts))
	for _, e := range srcEnts {
		keep[e] = struct{}{}
	}
	for _, n := range names {
		if _, ok := keep[n]; ok {
			continue
		}
		if err := c.remove(filepath.Join(dp, n)); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes a destination entry (a directory with its contents) and
// counts what went.
func (c *copier) remove(p string) error {
	n := int64(0)
	_ = filepath.WalkDir(p, func(string, fs.DirEntry, error) error { n++; return nil })
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	c.deleted.Add(n)
	return nil
}
