package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

func entryFromStat(rel string, t EntryType, st *unix.Stat_t) Entry {
	e := Entry{
		Path:    filepath.ToSlash(rel),
		Type:    t,
		Mode:    st.Mode & 0o7777,
		MtimeNs: st.Mtim.Nano(),
		UID:     st.Uid,
		GID:     st.Gid,
	}
	if t == TypeFile {
		e.Size = st.Size
	}
	return e
}

func (c *copier) wantsChecksum(rel string) bool {
	rel = filepath.ToSlash(rel)
	base := path.Base(rel)
	for _, g := range c.globs {
		name := base
		if strings.Contains(g, "/") {
			name = rel
		}
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// copyEntry copies one non-directory. ok is false for an entry that was
// deliberately not copied (and so is not in the manifest).
func (c *copier) copyEntry(ctx context.Context, j job) (e Entry, ok bool, err error) {
	switch j.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e, err = c.copyFile(ctx, j)
		return e, err == nil, err
	case unix.S_IFLNK:
		e, err = c.copySymlink(j)
		return e, err == nil, err
	default:
		return c.copySpecial(j)
	}
}

// unchanged reports whether an incremental copy may leave dst/rel alone.
func (c *copier) unchanged(j *job, e *Entry, dp string) bool {
	p := c.prev[e.Path]
	if p == nil || p.Type != TypeFile || p.Link != "" || p.Size != e.Size || p.MtimeNs != e.MtimeNs ||
		p.Mode != e.Mode || p.UID != e.UID || p.GID != e.GID {
		return false
	}
	if p.SHA256 == "" && c.wantsChecksum(j.rel) {
		return false // the globs grew; the checksum has to be computed
	}
	var ds unix.Stat_t
	if unix.Lstat(dp, &ds) != nil {
		return false
	}
	if ds.Mode&unix.S_IFMT != unix.S_IFREG || ds.Size != j.st.Size || ds.Mtim != j.st.Mtim || ds.Mode&0o7777 != e.Mode {
		return false
	}
	e.SHA256 = p.SHA256
	return true
}

func (c *copier) copyFile(ctx context.Context, j job) (Entry, error) {
	sp, dp := c.srcPath(j.rel), c.dstPath(j.rel)
	e := entryFromStat(j.rel, TypeFile, &j.st)
	if c.prev != nil && j.dstMayExist && c.unchanged(&j, &e, dp) {
		c.skippedFiles.Add(1)
		c.skippedBytes.Add(e.Size)
		c.filesDone.Add(1)
		return e, nil
	}
	if err := c.hook("file", j.rel); err != nil {
		return e, fmt.Errorf("copying %s to %s: %w", sp, dp, err)
	}
	if j.dstMayExist {
		if err := c.clear(dp); err != nil {
			return e, err
		}
	}
	sfd, err := openSource(sp)
	if err != nil {
		return e, fmt.Errorf("opening %s: %w", sp, err)
	}
	defer unix.Close(sfd)
	// Created with its final permission bits: under the usual umask the
	// mode is then already right and the fchmod below is skipped.
	dfd, err := unix.Open(dp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, j.st.Mode&0o777)
	if err != nil {
		return e, fmt.Errorf("creating %s: %w", dp, err)
	}
	closed := false
	defer func() {
		if !closed {
			unix.Close(dfd)
		}
	}()
	var h hash.Hash
	if c.wantsChecksum(j.rel) {
		h = sha256.New()
	}
	data, err := c.copyContents(ctx, sfd, dfd, j.st.Size, j.st.Blocks, h)
	if err != nil {
		return e, fmt.Errorf("copying %s to %s: %w", sp, dp, err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(sfd, &after); err != nil {
		return e, fmt.Errorf("stat %s: %w", sp, err)
	}
	if after.Size != j.st.Size || after.Mtim != j.st.Mtim {
		return e, fmt.Errorf("%w: %s (size %d -> %d)", ErrSourceChanged, sp, j.st.Size, after.Size)
	}
	if h != nil {
		e.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	// Order matters: chown clears setuid/setgid and security.capability,
	// so ownership goes first, then xattrs, then the mode. Calls that would
	// change nothing are skipped (a root-owned cache is the common case):
	// each is an inode update, and they add up over a million files.
	var cur unix.Stat_t
	if err := unix.Fstat(dfd, &cur); err != nil {
		return e, fmt.Errorf("stat %s: %w", dp, err)
	}
	chowned := false
	if cur.Uid != j.st.Uid || cur.Gid != j.st.Gid {
		if err := c.chown(j.rel, dp, &j.st, func(uid, gid int) error { return unix.Fchown(dfd, uid, gid) }); err != nil {
			return e, err
		}
		chowned = true
	}
	if err := c.xattrs(sp, dp, false); err != nil {
		return e, err
	}
	if chowned || cur.Mode&0o7777 != j.st.Mode&0o7777 {
		if err := unix.Fchmod(dfd, j.st.Mode&0o7777); err != nil {
			return e, fmt.Errorf("chmod %s: %w", dp, err)
		}
	}
	closed = true
	if err := unix.Close(dfd); err != nil {
		return e, fmt.Errorf("closing %s: %w", dp, err)
	}
	if err := setTimes(dp, &j.st); err != nil {
		return e, err
	}
	c.holeBytes.Add(e.Size - data)
	c.copiedFiles.Add(1)
	c.copiedBytes.Add(e.Size)
	c.filesDone.Add(1)
	return e, nil
}

// openSource opens a file for reading without updating its atime, so a save
// does not dirty every inode of the cache it reads. O_NOATIME needs
// ownership or CAP_FOWNER; without them it is dropped.
func openSource(p string) (int, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

func (c *copier) copySymlink(j job) (Entry, error) {
	sp, dp := c.srcPath(j.rel), c.dstPath(j.rel)
	e := entryFromStat(j.rel, TypeSymlink, &j.st)
	target, err := readlink(sp)
	if err != nil {
		return e, err
	}
	e.Target = target
	if err := c.hook("symlink", j.rel); err != nil {
		return e, fmt.Errorf("creating symlink %s: %w", dp, err)
	}
	kept := false
	if j.dstMayExist {
		if old, err := readlink(dp); err == nil && old == target {
			kept = true
		} else if err := c.clear(dp); err != nil {
			return e, err
		}
	}
	if !kept {
		if err := unix.Symlink(target, dp); err != nil {
			return e, fmt.Errorf("creating symlink %s: %w", dp, err)
		}
	}
	if err := c.chown(j.rel, dp, &j.st, func(uid, gid int) error { return unix.Lchown(dp, uid, gid) }); err != nil {
		return e, err
	}
	if err := c.xattrs(sp, dp, kept); err != nil {
		return e, err
	}
	if err := setTimes(dp, &j.st); err != nil {
		return e, err
	}
	return e, nil
}

func readlink(p string) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		k, err := unix.Readlink(p, buf)
		if err != nil {
			return "", fmt.Errorf("reading symlink %s: %w", p, err)
		}
		if k < n {
			return string(buf[:k]), nil
		}
	}
}

// copySpecial recreates a device node or FIFO. The engine cache has few, but
// the ones it has matter: BuildKit's overlayfs snapshotter records a file
// deleted in a layer as a 0:0 character device (an overlay whiteout), so
// dropping device nodes would make deleted files reappear in restored
// snapshots. Sockets are never copied (see walk).
func (c *copier) copySpecial(j job) (Entry, bool, error) {
	sp, dp := c.srcPath(j.rel), c.dstPath(j.rel)
	var t EntryType
	switch j.st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		t = TypeChar
	case unix.S_IFBLK:
		t = TypeBlock
	case unix.S_IFIFO:
		t = TypeFIFO
	default:
		c.skippedSpecial.Add(1)
		return Entry{}, false, nil
	}
	e := entryFromStat(j.rel, t, &j.st)
	if t != TypeFIFO {
		e.Rdev = uint64(j.st.Rdev)
	}
	if err := c.hook("special", j.rel); err != nil {
		return e, false, fmt.Errorf("creating %s: %w", dp, err)
	}
	if j.dstMayExist {
		if err := c.clear(dp); err != nil {
			return e, false, err
		}
	}
	if err := unix.Mknod(dp, j.st.Mode&(unix.S_IFMT|0o7777), int(j.st.Rdev)); err != nil {
		if errors.Is(err, unix.EPERM) && c.euid != 0 {
			c.warn(&c.skippedSpecial, "%s: not created (%v; needs root)", e.Path, err)
			return e, false, nil
		}
		return e, false, fmt.Errorf("creating %s %s: %w", t, dp, err)
	}
	if err := c.chown(j.rel, dp, &j.st, func(uid, gid int) error { return unix.Lchown(dp, uid, gid) }); err != nil {
		return e, false, err
	}
	if err := c.xattrs(sp, dp, false); err != nil {
		return e, false, err
	}
	if err := unix.Chmod(dp, j.st.Mode&0o7777); err != nil {
		return e, false, fmt.Errorf("chmod %s: %w", dp, err)
	}
	if err := setTimes(dp, &j.st); err != nil {
		return e, false, err
	}
	c.specials.Add(1)
	return e, true, nil
}

// finishLinks gives every hardlink secondary its name, once the primary's
// content and metadata are final (they are shared through the inode).
func (c *copier) finishLinks(ctx context.Context) error {
	for _, l := range c.links {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		dp, pp := c.dstPath(l.rel), c.dstPath(l.primary)
		if err := c.hook("link", l.rel); err != nil {
			return fmt.Errorf("linking %s to %s: %w", dp, pp, err)
		}
		kept := false
		if l.dstMayExist {
			var ds, ps unix.Stat_t
			if unix.Lstat(dp, &ds) == nil && unix.Lstat(pp, &ps) == nil && ds.Ino == ps.Ino && ds.Dev == ps.Dev {
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
		e := entryFromStat(l.rel, TypeFile, &l.st)
		e.Link = filepath.ToSlash(l.primary)
		c.entries = append(c.entries, e)
	}
	return nil
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
	// Deepest first, so that a parent's times are set after its children's
	// metadata changes (which do not touch the parent, but cheap insurance).
	for i := len(c.dirs) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		d := &c.dirs[i]
		if err := apply(d.rel, &d.st, d.existed); err != nil {
			return err
		}
	}
	return apply("", root, true)
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
