package copier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// walk lists src/rel, creates the directories it finds (so a worker never
// writes into a missing parent), records hardlink secondaries for later and
// hands every other non-directory to the workers.
func (c *copier) walk(ctx context.Context, rel string, dstExisted bool, jobs chan<- job) error {
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
	for i, name := range ents {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		crel := filepath.Join(rel, name)
		st := stats[i]
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			existed, err := c.makeDir(crel, dstExisted)
			if err != nil {
				return err
			}
			c.totals.Dirs++
			c.dirs = append(c.dirs, dirJob{rel: crel, st: st, existed: existed})
			c.entries = append(c.entries, entryFromStat(crel, TypeDir, &st))
			if err := c.walk(ctx, crel, existed, jobs); err != nil {
				return err
			}
			continue
		case unix.S_IFREG:
			if st.Nlink > 1 {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if primary, ok := c.inodes[key]; ok {
					c.totals.Hardlinks++
					c.links = append(c.links, linkJob{rel: crel, primary: primary, st: st, dstMayExist: dstExisted})
					continue
				}
				c.inodes[key] = crel
			}
			c.totals.Files++
			c.totals.Bytes += st.Size
			c.filesTotal.Add(1)
			c.bytesTotal.Add(st.Size)
		case unix.S_IFLNK:
			c.totals.Symlinks++
		case unix.S_IFSOCK:
			// A socket is an endpoint of a process that no longer runs.
			c.skippedSpecial.Add(1)
			continue
		}
		select {
		case jobs <- job{rel: crel, st: st, dstMayExist: dstExisted}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// makeDir makes sure dst/rel is a directory and says whether it was there
// already. New directories start as 0700 so we can always write into them;
// their real mode, owner and times are applied after their contents.
func (c *copier) makeDir(rel string, parentExisted bool) (bool, error) {
	dp := c.dstPath(rel)
	if parentExisted {
		var st unix.Stat_t
		err := unix.Lstat(dp, &st)
		switch {
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
			return true, nil
		case err == nil:
			if err := c.remove(dp); err != nil {
				return false, err
			}
		case !errors.Is(err, unix.ENOENT):
			return false, fmt.Errorf("stat %s: %w", dp, err)
		}
	}
	if err := unix.Mkdir(dp, 0o700); err != nil {
		return false, fmt.Errorf("creating directory %s: %w", dp, err)
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

// deleteExtra removes entries of dst/rel that src/rel no longer has.
func (c *copier) deleteExtra(rel string, srcEnts []string) error {
	dp := c.dstPath(rel)
	f, err := os.Open(dp)
	if err != nil {
		return fmt.Errorf("listing destination directory: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("listing destination directory %s: %w", dp, err)
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
