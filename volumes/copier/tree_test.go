package copier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// node is everything the copier promises to preserve about one path.
type node struct {
	mode         uint32 // full st_mode: type and permission bits
	size         int64
	uid, gid     uint32
	mtime, atime int64
	target       string
	rdev         uint64
	xattrs       map[string]string
	ino          uint64
	blocks       int64
}

// snapshot records the metadata of every path under root (root itself as
// "."), without reading file contents, so atimes are not disturbed. The
// manifest at the root is left out: it is the copier's, not the tree's.
func snapshot(t testing.TB, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ManifestName || rel == manifestTemp {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{
			mode: st.Mode, size: st.Size, uid: st.Uid, gid: st.Gid,
			mtime: st.Mtim.Nano(), atime: st.Atim.Nano(), rdev: uint64(st.Rdev),
			ino: st.Ino, blocks: st.Blocks, xattrs: map[string]string{},
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			n.size = 0 // directory sizes depend on the filesystem's history
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if n.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		names, err := listXattrs(p)
		if err != nil {
			return err
		}
		for _, name := range names {
			v, err := getXattr(p, name)
			if err != nil {
				return err
			}
			n.xattrs[name] = string(v)
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return out
}

// contents hashes every regular file under root.
func contents(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ManifestName {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		out[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatalf("hashing %s: %v", root, err)
	}
	return out
}

type compareOpts struct {
	ignoreAtime bool
	// skip paths (e.g. sockets) the copier deliberately does not copy.
	skip func(rel string, n node) bool
}

// compareTrees asserts that dst is src, path by path: type, mode, size,
// owner, times, symlink targets, device numbers, xattrs, the same grouping
// of names into inodes (hardlinks), and no more allocated blocks than src
// (sparse files stay sparse).
func compareTrees(t testing.TB, src, dst map[string]node, o compareOpts) {
	t.Helper()
	var errs []string
	groups := func(tree map[string]node) map[string]string {
		first := map[uint64]string{}
		paths := make([]string, 0, len(tree))
		for p := range tree {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		out := map[string]string{}
		for _, p := range paths {
			n := tree[p]
			if n.mode&unix.S_IFMT != unix.S_IFREG {
				continue
			}
			if _, ok := first[n.ino]; !ok {
				first[n.ino] = p
			}
			out[p] = first[n.ino]
		}
		return out
	}
	sg, dg := groups(src), groups(dst)
	for p, s := range src {
		if o.skip != nil && o.skip(p, s) {
			if _, ok := dst[p]; ok {
				errs = append(errs, fmt.Sprintf("%s: should not have been copied", p))
			}
			continue
		}
		d, ok := dst[p]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: missing in dst", p))
			continue
		}
		check := func(what string, a, b any) {
			if a != b {
				errs = append(errs, fmt.Sprintf("%s: %s src=%v dst=%v", p, what, a, b))
			}
		}
		check("mode", fmt.Sprintf("%o", s.mode), fmt.Sprintf("%o", d.mode))
		check("size", s.size, d.size)
		check("uid", s.uid, d.uid)
		check("gid", s.gid, d.gid)
		check("mtime", time.Unix(0, s.mtime).UTC(), time.Unix(0, d.mtime).UTC())
		// Reading a directory or a symlink updates its atime, and the copier
		// (like any reader) must read them after recording their times, so
		// atimes are compared for the other types only; files are read with
		// O_NOATIME.
		if ft := s.mode & unix.S_IFMT; !o.ignoreAtime && ft != unix.S_IFDIR && ft != unix.S_IFLNK {
			check("atime", time.Unix(0, s.atime).UTC(), time.Unix(0, d.atime).UTC())
		}
		check("target", s.target, d.target)
		check("rdev", s.rdev, d.rdev)
		check("xattrs", fmt.Sprint(s.xattrs), fmt.Sprint(d.xattrs))
		check("hardlink group", sg[p], dg[p])
		if s.mode&unix.S_IFMT == unix.S_IFREG && d.blocks > s.blocks {
			errs = append(errs, fmt.Sprintf("%s: dst allocates %d blocks, src %d", p, d.blocks, s.blocks))
		}
	}
	for p := range dst {
		if _, ok := src[p]; !ok {
			errs = append(errs, fmt.Sprintf("%s: extra in dst", p))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		t.Fatalf("trees differ:\n  %s", strings.Join(errs, "\n  "))
	}
}

func compareContents(t testing.TB, src, dst map[string]string) {
	t.Helper()
	for p, h := range src {
		if dst[p] != h {
			t.Errorf("%s: content differs", p)
		}
	}
	if len(src) != len(dst) {
		t.Errorf("%d files in src, %d in dst", len(src), len(dst))
	}
}

func mustWrite(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	// Raw bits, so 0o2755 means setgid (os.Chmod would drop it), and
	// umask-proof.
	if err := unix.Chmod(p, uint32(mode)); err != nil {
		t.Fatal(err)
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

func setMtime(t testing.TB, p string, atime, mtime time.Time) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// xattrSupport probes whether dir's filesystem takes user.* xattrs. The test
// tree sets them only if it does; the assertions then cover both cases.
func xattrSupport(t testing.TB, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, ".xattr-probe")
	mustWrite(t, p, nil, 0o644)
	defer os.Remove(p)
	err := unix.Setxattr(p, "user.probe", []byte("1"), 0)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Fatalf("probing xattrs: %v", err)
	}
	return err == nil
}

const (
	sparseSize = 12 << 20
	sparseData = 1 << 20
)

// treeInfo tells the tests what the built tree holds.
type treeInfo struct {
	xattrs bool // user.* xattrs were set
	root   bool // root-only features (chown, trusted.*, device nodes) were used
}

// buildFullTree makes a tree with every kind of entry the copier handles.
func buildFullTree(t testing.TB, root string) treeInfo {
	t.Helper()
	r := rand.New(rand.NewSource(1))
	info := treeInfo{xattrs: xattrSupport(t, root), root: os.Geteuid() == 0}
	w := func(rel string, data []byte, mode os.FileMode) string {
		p := filepath.Join(root, rel)
		mustWrite(t, p, data, mode)
		return p
	}
	w("a/regular.txt", randBytes(r, 10_000), 0o644)
	w("a/empty", nil, 0o600)
	w("large.bin", randBytes(r, 9<<20+123), 0o644) // crosses the 8 MiB copy chunk
	w("a/setgid-bin", randBytes(r, 100), 0o2755)
	w("a/setuid-bin", randBytes(r, 100), 0o4711)
	w("worker/metadata_v2.db", randBytes(r, 50_000), 0o600)
	w("dagql-cache.db-wal", randBytes(r, 4096), 0o644)
	w("worker/content/blobs/sha256/abc", randBytes(r, 3000), 0o444)

	// Sparse files: data, a hole in the middle, data, a trailing hole. One is
	// a .db so the checksum path (holes hashed as zeros) is exercised too.
	for _, rel := range []string{"sparse.img", "worker/sparse.db"} {
		p := w(rel, nil, 0o644)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, 8 << 20} {
			if _, err := f.WriteAt(randBytes(r, sparseData), off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(sparseSize); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	// Hardlinks across directories, and a group of three.
	w("a/hard1", randBytes(r, 2000), 0o640)
	os.MkdirAll(filepath.Join(root, "b"), 0o755)
	must(t, os.Link(filepath.Join(root, "a/hard1"), filepath.Join(root, "b/hard2")))
	w("c/tri1", randBytes(r, 10), 0o644)
	must(t, os.Link(filepath.Join(root, "c/tri1"), filepath.Join(root, "c/tri2")))
	must(t, os.Link(filepath.Join(root, "c/tri1"), filepath.Join(root, "a/tri3")))

	// Names are bytes: a Latin-1 file name, as old tarballs carry.
	w("a/caf\xe9-latin1", []byte("not UTF-8"), 0o644)

	// Symlinks: absolute, relative, dangling (to a non-UTF-8 name).
	os.MkdirAll(filepath.Join(root, "links"), 0o755)
	must(t, os.Symlink("/etc/hostname", filepath.Join(root, "links/abs")))
	must(t, os.Symlink("../a/regular.txt", filepath.Join(root, "links/rel")))
	must(t, os.Symlink("nowhere/at/\xff\xfe", filepath.Join(root, "links/dangling")))

	// Directory modes, including sticky and setgid, and a read-only one.
	for rel, mode := range map[string]uint32{"d0700": 0o700, "d0755": 0o755, "tmp1777": 0o1777, "sgid": 0o2775} {
		p := filepath.Join(root, rel)
		must(t, os.Mkdir(p, 0o700))
		w(rel+"/f", []byte(rel), 0o644)
		must(t, unix.Chmod(p, mode))
	}
	w("ro/inside", []byte("x"), 0o644)
	must(t, os.Chmod(filepath.Join(root, "ro"), 0o500))

	// A FIFO and a socket; as root also an overlay whiteout (char 0:0).
	must(t, os.Mkdir(filepath.Join(root, "special"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(root, "special/fifo"), 0o640))
	l, err := net.Listen("unix", filepath.Join(root, "special/sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if info.root {
		must(t, unix.Mknod(filepath.Join(root, "special/whiteout"), unix.S_IFCHR|0o000, 0))
		must(t, os.Lchown(filepath.Join(root, "a/regular.txt"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(root, "links/rel"), 4321, 8765))
		must(t, os.Lchown(filepath.Join(root, "d0755"), 42, 43))
		// chown cleared the bit; set it again as an image layer would have it.
		must(t, os.Lchown(filepath.Join(root, "a/setgid-bin"), 0, 1000))
		must(t, unix.Chmod(filepath.Join(root, "a/setgid-bin"), 0o2755))
		// BuildKit's overlay snapshots mark opaque directories this way.
		must(t, unix.Lsetxattr(filepath.Join(root, "d0700"), "trusted.overlay.opaque", []byte("y"), 0))
		must(t, unix.Lsetxattr(filepath.Join(root, "links/abs"), "trusted.test", []byte("on a link"), 0))
	}
	if info.xattrs {
		must(t, unix.Lsetxattr(filepath.Join(root, "a/regular.txt"), "user.warmpool", []byte("file value"), 0))
		must(t, unix.Lsetxattr(filepath.Join(root, "d0755"), "user.dir", []byte("dir value"), 0))
		must(t, unix.Lsetxattr(filepath.Join(root, "worker/sparse.db"), "user.empty", nil, 0))
	}

	// Odd times last (writing into a directory changes its mtime): ns
	// precision, pre-1970, far future.
	odd := []time.Time{
		time.Unix(1234567890, 123456789),
		time.Unix(-315619200, 987654321), // 1960
		time.Unix(-1, 1),                 // 1969-12-31 23:59:59.000000001
		time.Unix(4102444800, 999999999), // 2100
	}
	i := 0
	var all []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		all = append(all, p)
		return nil
	})
	// Children before parents, so a parent's times stick.
	slices.Reverse(all)
	for _, p := range all {
		at := odd[(i+1)%len(odd)]
		setMtime(t, p, at, odd[i%len(odd)])
		i++
	}
	return info
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// buildManyFiles makes n small files spread over a few directories, plus a
// .db file, for the interruption and incremental tests.
func buildManyFiles(t testing.TB, root string, n int, seed int64) {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	for i := range n {
		mustWrite(t, filepath.Join(root, manyPath(i)), randBytes(r, 1+r.Intn(8000)), 0o644)
	}
	mustWrite(t, filepath.Join(root, "state.db"), randBytes(r, 20_000), 0o600)
	must(t, os.Symlink("state.db", filepath.Join(root, "state-link")))
	must(t, os.Link(filepath.Join(root, "state.db"), filepath.Join(root, "dir00/state-hard.db")))
}

// manyPath is the relative path of buildManyFiles' i-th file.
func manyPath(i int) string {
	return filepath.Join(fmt.Sprintf("dir%02d", i%17), fmt.Sprintf("sub%d", i%3), fmt.Sprintf("f%04d", i))
}

// isSocket is a compareOpts.skip for the sockets the copier drops.
func isSocket(_ string, n node) bool { return n.mode&unix.S_IFMT == unix.S_IFSOCK }

// overlayOpaque is the xattr BuildKit's overlayfs snapshotter (and the kernel,
// for directories created over a lower one) sets on opaque directories; the
// Dagger Engine runs as real root, so it uses the trusted.* namespace.
const overlayOpaque = "trusted.overlay.opaque"

// netRawCap is a security.capability value granting cap_net_raw, effective:
// struct vfs_cap_data revision 2 (magic 0x02000001 = VFS_CAP_REVISION_2 |
// VFS_CAP_FLAGS_EFFECTIVE, then permitted/inheritable of the low and high
// 32 capabilities), all little-endian, as `setcap cap_net_raw+ep` writes.
var netRawCap = []byte{
	0x01, 0x00, 0x00, 0x02, // magic_etc
	0x00, 0x20, 0x00, 0x00, // permitted, caps 0-31: bit 13, CAP_NET_RAW
	0x00, 0x00, 0x00, 0x00, // inheritable, caps 0-31
	0x00, 0x00, 0x00, 0x00, // permitted, caps 32-63
	0x00, 0x00, 0x00, 0x00, // inheritable, caps 32-63
}

// overlayTree says what buildOverlayTree put where, for assertions beyond
// the whole-tree comparison.
type overlayTree struct {
	opaque    []string // directories with trusted.overlay.opaque=y
	whiteouts []string // 0:0 character devices
	hardlinks [][2]string
	xattrs    map[string]map[string]string // path -> the non-trusted xattrs set
}

// buildOverlayTree makes, under root, the shape of a Dagger Engine cache whose
// BuildKit overlayfs snapshots record deletions the way overlayfs does: a
// file deleted in an upper layer is a 0:0 character device (a whiteout), a
// directory replaced in an upper layer is marked trusted.overlay.opaque=y,
// the kernel marks directories it copied up trusted.overlay.impure. Layers
// also carry hardlinks, user.* attributes and file capabilities
// (security.capability). Needs root with CAP_SYS_ADMIN (trusted.*, mknod).
func buildOverlayTree(t testing.TB, root string) overlayTree {
	t.Helper()
	snap := func(n int, rel string) string {
		return filepath.Join("worker/snapshots/snapshots", fmt.Sprint(n), "fs", rel)
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	w := func(rel, data string, mode os.FileMode) { mustWrite(t, p(rel), []byte(data), mode) }
	dir := func(rel string, mode uint32) {
		must(t, os.MkdirAll(p(rel), 0o755))
		must(t, unix.Chmod(p(rel), mode))
	}
	tr := overlayTree{xattrs: map[string]map[string]string{}}
	setX := func(rel, name, val string) {
		must(t, unix.Lsetxattr(p(rel), name, []byte(val), 0))
		if !strings.HasPrefix(name, "trusted.") {
			if tr.xattrs[rel] == nil {
				tr.xattrs[rel] = map[string]string{}
			}
			tr.xattrs[rel][name] = val
		}
	}

	// Layer 1: a base image.
	w(snap(1, "etc/app/app.conf"), "base config", 0o644)
	w(snap(1, "etc/app/conf.d/10-default"), "default", 0o644)
	w(snap(1, "usr/bin/tool"), "#!/bin/sh\necho tool\n", 0o755)
	w(snap(1, "usr/bin/ping"), "\x7fELF ping", 0o755)
	w(snap(1, "usr/bin/python3.12"), "\x7fELF python", 0o755)
	must(t, os.Link(p(snap(1, "usr/bin/python3.12")), p(snap(1, "usr/bin/python3"))))
	tr.hardlinks = append(tr.hardlinks, [2]string{snap(1, "usr/bin/python3"), snap(1, "usr/bin/python3.12")})
	w(snap(1, "var/cache/apt/pkgcache.bin"), "packages", 0o644)
	w(snap(1, "home/ci/.profile"), "export CI=1", 0o644)
	must(t, os.Lchown(p(snap(1, "home/ci/.profile")), 1001, 1001))
	must(t, os.Lchown(p(snap(1, "home/ci")), 1001, 1001))
	// After chown, which clears file capabilities.
	setX(snap(1, "usr/bin/ping"), "security.capability", string(netRawCap))
	setX(snap(1, "usr/bin/tool"), "user.mime_type", "text/x-shellscript")
	setX(snap(1, "etc/app"), "user.origin", "base image")

	// Layer 2, on top of 1: /etc/app replaced (opaque), tool deleted
	// (whiteout), the apt cache emptied (opaque, empty), a new hardlink.
	w(snap(2, "etc/app/app.conf"), "replaced config", 0o600)
	setX(snap(2, "etc/app"), overlayOpaque, "y")
	tr.opaque = append(tr.opaque, snap(2, "etc/app"))
	dir(snap(2, "var/cache/apt"), 0o755)
	setX(snap(2, "var/cache/apt"), overlayOpaque, "y")
	tr.opaque = append(tr.opaque, snap(2, "var/cache/apt"))
	setX(snap(2, "var/cache"), "trusted.overlay.impure", "y")
	dir(snap(2, "usr/bin"), 0o755)
	for _, rel := range []string{snap(2, "usr/bin/tool"), snap(2, "etc/app/conf.d")} {
		must(t, unix.Mknod(p(rel), unix.S_IFCHR|0o000, 0))
		tr.whiteouts = append(tr.whiteouts, rel)
	}
	w(snap(2, "opt/data/a"), "shared", 0o644)
	dir(snap(2, "opt/data/b"), 0o755)
	must(t, os.Link(p(snap(2, "opt/data/a")), p(snap(2, "opt/data/b/a"))))
	tr.hardlinks = append(tr.hardlinks, [2]string{snap(2, "opt/data/a"), snap(2, "opt/data/b/a")})
	// The overlay work dir BuildKit keeps beside each fs.
	dir("worker/snapshots/snapshots/2/work/work", 0o000)

	// Outside the snapshots: a content blob hardlinked into the ingest dir,
	// and the snapshotter's own database.
	w("worker/content/blobs/sha256/layer2", "layer 2 tar", 0o444)
	dir("worker/content/ingest", 0o755)
	must(t, os.Link(p("worker/content/blobs/sha256/layer2"), p("worker/content/ingest/layer2")))
	tr.hardlinks = append(tr.hardlinks, [2]string{"worker/content/blobs/sha256/layer2", "worker/content/ingest/layer2"})
	w("worker/snapshots/metadata.db", "bolt", 0o600)
	return tr
}
