package copier

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// finishLinks gives every hardlink secondary its name, once the primary's
// content and metadata are final (they are shared through the inode). The
// names are independent of each other and made in parallel: each is a round
// trip on a volume, and a first look at a directory of an incremental save's
// volume waits on S3 (the walk no longer reads them, see dstListing).
func (c *copier) finishLinks(ctx context.Context) error {
	entries := make([]Entry, len(c.links))
	err := c.parallel(ctx, len(c.links), func(i int) error {
		l := c.links[i]
		dp, pp := c.dstPath(l.rel), c.dstPath(l.primary)
		if err := c.hook("link", l.rel); err != nil {
			return fmt.Errorf("linking %s to %s: %w", dp, pp, err)
		}
		kept := false
		if l.dstMayExist {
			var ds, ps unix.Stat_t
			if c.linkLeftAlone(l) {
				kept = true
			} else if unix.Lstat(dp, &ds) == nil && unix.Lstat(pp, &ps) == nil && ds.Ino == ps.Ino && ds.Dev == ps.Dev {
				kept = true
			} else if err := c.clear(dp); err != nil {
				return err
			}
		}
		if !kept {
			if err := unix.Link(pp, dp); err != nil {
				return fmt.Errorf("linking %s to %s: %w", dp, pp, err)
			}
		}
		entries[i] = entryFromStat(l.rel, TypeFile, &l.st)
		entries[i].Link = filepath.ToSlash(l.primary)
		return nil
	})
	if err != nil {
		return err
	}
	c.entries = append(c.entries, entries...)
	return nil
}

// linkLeftAlone says whether dst/l.rel is, by Previous, a name of l.primary's
// inode that the copy left alone: then the name is right without a look (see
// dstListing).
func (c *copier) linkLeftAlone(l linkJob) bool {
	p, ok := c.previous(l.rel)
	if !ok || p == nil || p.Link != filepath.ToSlash(l.primary) {
		return false
	}
	_, left := c.leftAlone.Load(l.primary)
	return left
}

// finishDirs applies directory metadata after everything inside is written:
// creating an entry changes its parent's mtime, and a read-only mode would
// stop us (when not root) from creating entries at all.
func (c *copier) finishDirs(ctx context.Context, root *unix.Stat_t) error {
	apply := func(rel string, st *unix.Stat_t, existed bool) error {
		sp, dp := c.srcPath(rel), c.dstPath(rel)
		if err := c.hook("dir", rel); err != nil {
			return fmt.Errorf("setting metadata of %s: %w", dp, err)
		}
		// A directory kept from the previous copy (an incremental save) mostly has the
		// right owner, mode and mtime already: calls that would change nothing are skipped,
		// as for files. On a volume each is an inode update, and over the thousands of
		// directories of a cache they cost an incremental save more than its data.
		var cur unix.Stat_t
		if existed {
			if err := unix.Lstat(dp, &cur); err != nil {
				return fmt.Errorf("stat %s: %w", dp, err)
			}
		}
		chowned := !existed || cur.Uid != st.Uid || cur.Gid != st.Gid
		set := func(uid, gid int) error { return unix.Lchown(dp, uid, gid) }
		if !chowned {
			set = func(int, int) error { return nil } // the hook point stays (interrupt tests)
		}
		if err := c.chown(rel, dp, st, set); err != nil {
			return err
		}
		if err := c.xattrs(sp, dp, existed); err != nil {
			return err
		}
		if chowned || cur.Mode&0o7777 != st.Mode&0o7777 {
			if err := unix.Chmod(dp, st.Mode&0o7777); err != nil {
				return fmt.Errorf("chmod %s: %w", dp, err)
			}
		}
		// A directory's atime is not kept (reading it, as the copy does, moves it), so an
		// unchanged mtime means its times are right.
		if existed && cur.Mtim == st.Mtim && rel != "" {
			return nil
		}
		return setTimes(dp, st)
	}
	// Deepest first: a parent's times are set after its children's metadata
	// changes (which do not touch the parent, but cheap insurance), and a
	// parent's mode, which may take away search permission when not root,
	// after every path through it has been used. Directories of one depth
	// share no path, so each depth is applied in parallel: on a volume each
	// call is a round trip, and one at a time the thousands of directories
	// of a cache cost a save more than its changed data.
	for _, level := range byDepth(c.dirs) {
		if err := c.parallel(ctx, len(level), func(i int) error {
			d := level[i]
			return apply(d.rel, &d.st, d.existed)
		}); err != nil {
			return err
		}
	}
	return apply("", root, true)
}

// byDepth groups dirs by depth, deepest first.
func byDepth(dirs []dirJob) [][]*dirJob {
	var levels [][]*dirJob
	for i := range dirs {
		d := strings.Count(dirs[i].rel, string(filepath.Separator))
		for len(levels) <= d {
			levels = append(levels, nil)
		}
		levels[d] = append(levels[d], &dirs[i])
	}
	slices.Reverse(levels)
	return levels
}

// parallel runs f(0..n-1) on up to Options.WalkDirs goroutines and returns
// the first error (or ctx's cause); after an error no new call starts.
func (c *copier) parallel(ctx context.Context, n int, f func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, c.opts.WalkDirs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					cancel(err)
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// clear removes whatever is at a destination path about to be recreated. A
// directory that became a file counts as deleted; a file being replaced by
// its new version does not.
func (c *copier) clear(dp string) error {
	var st unix.Stat_t
	err := unix.Lstat(dp, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("stat %s: %w", dp, err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return c.remove(dp)
	}
	if err := unix.Unlink(dp); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", dp, err)
	}
	return nil
}

// chown applies the source owner with set. As root a failure is an error.
// Not as root, EPERM is expected for any owner but our own: it is counted
// and recorded, and the copy goes on (see Copy).
func (c *copier) chown(rel, dp string, st *unix.Stat_t, set func(uid, gid int) error) error {
	err := set(int(st.Uid), int(st.Gid))
	if herr := c.hook("chown", rel); herr != nil {
		err = herr
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EPERM) && c.euid != 0 {
		c.warn(&c.ownerFails, "%s: owner %d:%d not preserved (%v)", filepath.ToSlash(rel), st.Uid, st.Gid, err)
		return nil
	}
	return fmt.Errorf("chown %s to %d:%d: %w", dp, st.Uid, st.Gid, err)
}

// xattrs copies extended attributes; prune also removes attributes the
// destination has but the source no longer does (an entry kept from an
// earlier copy). Refusals fail the copy except for LSM labels, which are
// warnings (see copyXattrs).
func (c *copier) xattrs(sp, dp string, prune bool) error {
	refused := func(name string, err error) {
		c.warn(&c.xattrFails, "%s: xattr %s not preserved (%v)", dp, name, err)
	}
	if err := copyXattrs(sp, dp, refused); err != nil {
		return err
	}
	if !prune {
		return nil
	}
	have, err := listXattrs(dp)
	if err != nil || len(have) == 0 {
		return err
	}
	want, err := listXattrs(sp)
	if err != nil {
		return err
	}
	for _, n := range have {
		if !containsString(want, n) {
			if err := unix.Lremovexattr(dp, n); err != nil && !errors.Is(err, unix.ENODATA) {
				// An attribute the source no longer has but dst keeps is
				// as wrong as one dst lacks: the same policy applies.
				if err := refusedXattr(n, dp, "removing", err, refused); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// setTimes sets atime and mtime with nanoseconds, on the link itself for a
// symlink.
func setTimes(p string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", p, err)
	}
	return nil
}
