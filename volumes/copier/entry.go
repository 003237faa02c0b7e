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

// unchanged reports whether an incremental copy may leave dst/rel alone. dst is as
// Previous says (see dstListing): the file is not looked at there.
func (c *copier) unchanged(j *job, e *Entry) bool {
	p := c.prev[e.Path]
	if p == nil || p.Type != TypeFile || p.Link != "" || p.Size != e.Size || p.MtimeNs != e.MtimeNs ||
		p.Mode != e.Mode || p.UID != e.UID || p.GID != e.GID {
		return false
	}
	// Equal size and mtime are no proof of equal bytes (see Baseline).
	if !c.opts.Baseline.asWritten(e, &j.st, p.Origin) {
		return false
	}
	if p.SHA256 == "" && c.wantsChecksum(j.rel) {
		return false // the globs grew; the checksum has to be computed
	}
	e.SHA256, e.Origin = p.SHA256, p.Origin
	return true
}

// symlinkUnchanged reports whether an incremental copy may leave the symlink
// dst/rel alone, as unchanged does for a file: Previous has it with the same
// target, owner and mtime, and Baseline vouches that the source is still what
// the save that wrote Previous's copy wrote (its extended attributes too,
// which are in no manifest). dst is not looked at (see dstListing): in a real
// cache most directories of layer contents hold symlinks, and a look at each
// would read them all from the volume.
func (c *copier) symlinkUnchanged(j *job, e *Entry) bool {
	p := c.prev[e.Path]
	if p == nil || p.Type != TypeSymlink || p.Target != e.Target || p.MtimeNs != e.MtimeNs ||
		p.Mode != e.Mode || p.UID != e.UID || p.GID != e.GID {
		return false
	}
	if !c.opts.Baseline.asWritten(e, &j.st, p.Origin) {
		return false
	}
	e.Origin = p.Origin
	return true
}

func (c *copier) copyFile(ctx context.Context, j job) (Entry, error) {
	sp, dp := c.srcPath(j.rel), c.dstPath(j.rel)
	e := entryFromStat(j.rel, TypeFile, &j.st)
	if c.prev != nil && j.dstMayExist && c.unchanged(&j, &e) {
		if j.st.Nlink > 1 {
			c.leftAlone.Store(j.rel, true)
		}
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
	// Owner and mode of the new file, read before any write: on a FUSE
	// mount a write invalidates the cached attributes, and this look would
	// cost a round trip per file.
	var cur unix.Stat_t
	if err := unix.Fstat(dfd, &cur); err != nil {
		return e, fmt.Errorf("stat %s: %w", dp, err)
	}
	var h hash.Hash
	// A restore hashes what its source's manifest records a checksum for,
	// whatever its own globs, and checks it below. A save is the origin of
	// what it writes; a restore writes its source's bytes, so they keep the
	// source's origin.
	want := -1
	e.Origin = c.id
	if c.expect != nil {
		want, e.Origin = c.expect.expected(j.rel)
	}
	if want >= 0 || c.wantsChecksum(j.rel) {
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
	if want >= 0 {
		if err := c.expect.hashedAs(want, e.SHA256); err != nil {
			return e, err
		}
	}
	// Order matters: chown clears setuid/setgid and security.capability,
	// so ownership goes first, then xattrs, then the mode. Calls that would
	// change nothing are skipped (a root-owned cache is the common case):
	// each is an inode update, and they add up over a million files.
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
	// A save is the origin of what it writes; a restore keeps its source's (see copyFile).
	e.Origin = c.id
	if c.expect != nil {
		if err := c.expect.symlink(j.rel, target); err != nil {
			return e, err
		}
		_, e.Origin = c.expect.expected(j.rel)
	}
	if c.prev != nil && j.dstMayExist && c.symlinkUnchanged(&j, &e) {
		return e, nil
	}
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
