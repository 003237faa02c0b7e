package copier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCopyRoundTrip(t *testing.T) {
	src, dst := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	must(t, os.Mkdir(src, 0o711))
	info := buildFullTree(t, src)
	// Hash first: reading updates atimes, and the snapshot must hold the
	// atimes the copier will see.
	beforeData := contents(t, src)
	before := snapshot(t, src)

	var last Progress
	var calls int
	m, err := Copy(context.Background(), src, dst, Options{
		Workers:       3,
		EngineVersion: "v0.21.8", Architecture: "amd64", SourceNode: "node-a",
		ChecksumGlobs:    []string{"worker/content/blobs/*/*"},
		Progress:         func(p Progress) { calls++; last = p },
		ProgressInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}

	compareTrees(t, before, snapshot(t, dst), compareOpts{skip: isSocket})
	compareContents(t, beforeData, contents(t, dst))

	// Sparse files keep their holes.
	for _, rel := range []string{"sparse.img", "worker/sparse.db"} {
		var st unix.Stat_t
		must(t, unix.Stat(filepath.Join(dst, rel), &st))
		if st.Size != sparseSize || st.Blocks*512 > 2*sparseData+64<<10 {
			t.Errorf("%s: size %d, %d bytes allocated; want %d with at most ~%d allocated", rel, st.Size, st.Blocks*512, sparseSize, 2*sparseData)
		}
	}

	// The manifest says what was copied.
	if m.EngineVersion != "v0.21.8" || m.Architecture != "amd64" || m.SourceNode != "node-a" || m.FormatVersion != FormatVersion {
		t.Errorf("manifest header = %+v", m)
	}
	// 18 files with their own inode; b/hard2, c/tri1 and c/tri2 are extra
	// names (a/tri3 is met first in the walk).
	want := Totals{Files: 18, Dirs: 14, Symlinks: 3, Hardlinks: 3, Specials: 1}
	if info.root {
		want.Specials = 2 // the whiteout
	}
	got := m.Totals
	got.Bytes = 0
	if got != want {
		t.Errorf("totals = %+v, want %+v", got, want)
	}
	if m.Stats.SkippedSpecial != 1 { // the socket
		t.Errorf("skipped specials = %d, want 1", m.Stats.SkippedSpecial)
	}
	if m.Stats.CopiedFiles != m.Totals.Files || m.Stats.SkippedFiles != 0 || m.Stats.Deleted != 0 {
		t.Errorf("stats = %+v", m.Stats)
	}
	byPath := map[string]Entry{}
	for _, e := range m.Entries {
		byPath[e.Path] = e
	}
	for _, rel := range []string{"worker/metadata_v2.db", "dagql-cache.db-wal", "worker/sparse.db", "worker/content/blobs/sha256/abc"} {
		if sum := byPath[rel].SHA256; sum != beforeData[rel] {
			t.Errorf("%s: manifest checksum %q, want %q", rel, sum, beforeData[rel])
		}
	}
	if byPath["large.bin"].SHA256 != "" {
		t.Error("large.bin got a checksum; only databases and ChecksumGlobs should")
	}
	if l := byPath["b/hard2"].Link; l != "a/hard1" {
		t.Errorf("b/hard2 links to %q, want a/hard1", l)
	}
	if info.xattrs && m.Stats.XattrsNotPreserved != 0 {
		// user.* cannot be set on symlinks, but the tree sets none there.
		t.Errorf("xattrs not preserved: %d %v", m.Stats.XattrsNotPreserved, m.Warnings)
	}
	if !info.xattrs && len(snapshot(t, dst)["a/regular.txt"].xattrs) != 0 {
		t.Error("xattrs appeared on a filesystem without them")
	}

	// The manifest on disk is the one returned, and the tree verifies.
	vm, err := Verify(dst)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(vm.Entries) != len(m.Entries) || vm.Totals != m.Totals {
		t.Error("manifest on disk differs from the returned one")
	}

	if calls == 0 || !last.Final || last.BytesDone != last.BytesTotal || last.FilesDone != last.FilesTotal || !last.ScanDone {
		t.Errorf("last progress = %+v after %d calls", last, calls)
	}
	if last.BytesTotal != m.Totals.Bytes || last.FilesTotal != m.Totals.Files {
		t.Errorf("progress totals %d/%d, manifest %d/%d", last.BytesTotal, last.FilesTotal, m.Totals.Bytes, m.Totals.Files)
	}
}

// A copy whose source is itself a copy does not carry the old manifest over.
func TestCopyOfACopyGetsItsOwnManifest(t *testing.T) {
	src, mid, dst := t.TempDir(), filepath.Join(t.TempDir(), "mid"), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 20, 1)
	if _, err := Copy(context.Background(), src, mid, Options{SourceNode: "first"}); err != nil {
		t.Fatal(err)
	}
	m, err := Copy(context.Background(), mid, dst, Options{SourceNode: "second"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Entries {
		if e.Path == ManifestName {
			t.Fatal("the source's manifest was copied as data")
		}
	}
	vm, err := Verify(dst)
	if err != nil || vm.SourceNode != "second" {
		t.Fatalf("Verify = %v, %v", vm.SourceNode, err)
	}
	compareTrees(t, snapshot(t, src), snapshot(t, dst), compareOpts{ignoreAtime: true})
}

// A full copy (no Previous) over a dst holding an older, different tree
// makes dst identical to src: stale entries go, type changes are handled.
func TestCopyFullOverExistingTree(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 50, 1)
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dst, "stale/file"), []byte("old"), 0o644)
	must(t, os.RemoveAll(filepath.Join(src, "dir01")))
	mustWrite(t, filepath.Join(src, "dir01"), []byte("now a file"), 0o644)
	must(t, os.Remove(filepath.Join(src, manyPath(2))))
	must(t, os.Mkdir(filepath.Join(src, manyPath(2)), 0o755))
	mustWrite(t, filepath.Join(dst, manifestTemp), []byte("{half"), 0o644)

	m, err := Copy(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats.SkippedFiles != 0 {
		t.Errorf("a full copy skipped %d files", m.Stats.SkippedFiles)
	}
	if m.Stats.Deleted == 0 {
		t.Error("nothing deleted")
	}
	compareTrees(t, snapshot(t, src), snapshot(t, dst), compareOpts{ignoreAtime: true})
	compareContents(t, contents(t, src), contents(t, dst))
	if _, err := os.Stat(filepath.Join(dst, manifestTemp)); !errors.Is(err, os.ErrNotExist) {
		t.Error("leftover manifest temp file survived")
	}
}

func TestCopyIncremental(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	const n = 300
	buildManyFiles(t, src, n, 7)
	full, err := Copy(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	prev, err := ReadManifest(dst)
	if err != nil {
		t.Fatal(err)
	}
	base := baselineNow(t, &prev)

	// Delete files, and a directory with what it holds.
	deleted := int64(0)
	for _, rel := range []string{manyPath(3), manyPath(4), manyPath(7)} {
		must(t, os.Remove(filepath.Join(src, rel)))
		deleted++
	}
	ents, _ := os.ReadDir(filepath.Join(src, "dir16/sub1"))
	deleted += int64(len(ents)) + 1
	must(t, os.RemoveAll(filepath.Join(src, "dir16/sub1")))

	// Change 5% of the files (those still there): new content and mtime.
	changed := 0
	for i := 0; i < n; i += 20 {
		p := filepath.Join(src, manyPath(i))
		if _, err := os.Stat(p); err != nil {
			continue
		}
		mustWrite(t, p, []byte(fmt.Sprintf("changed %d", i)), 0o644)
		setMtime(t, p, time.Now(), time.Now().Add(time.Duration(i)*time.Second))
		changed++
	}
	// A mode-only change counts as a change too.
	must(t, os.Chmod(filepath.Join(src, manyPath(5)), 0o600))
	changed++
	// The database changes in place; its other name must follow.
	mustWrite(t, filepath.Join(src, "state.db"), []byte("new state"), 0o600)
	changed++
	added := 0
	for i := range 7 {
		mustWrite(t, filepath.Join(src, "new", fmt.Sprintf("n%d", i)), []byte("added"), 0o644)
		added++
	}

	before := snapshot(t, src)
	m, err := Copy(context.Background(), src, dst, Options{Previous: &prev, Baseline: base})
	if err != nil {
		t.Fatal(err)
	}
	wantSkipped := m.Totals.Files - int64(changed) - int64(added)
	if m.Stats.CopiedFiles != int64(changed+added) || m.Stats.SkippedFiles != wantSkipped || m.Stats.Deleted != deleted {
		t.Errorf("incremental stats = %+v; want copied %d, skipped %d, deleted %d", m.Stats, changed+added, wantSkipped, deleted)
	}
	if m.Stats.CopiedBytes >= full.Stats.CopiedBytes/4 {
		t.Errorf("incremental copied %d bytes, full copied %d", m.Stats.CopiedBytes, full.Stats.CopiedBytes)
	}
	compareTrees(t, before, snapshot(t, dst), compareOpts{})
	compareContents(t, contents(t, src), contents(t, dst))
	if _, err := Verify(dst); err != nil {
		t.Fatal(err)
	}
	// A second incremental run with nothing changed copies nothing.
	prev2, _ := ReadManifest(dst)
	m2, err := Copy(context.Background(), src, dst, Options{Previous: &prev2, Baseline: baselineNow(t, &prev2)})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Stats.CopiedFiles != 0 || m2.Stats.Deleted != 0 {
		t.Errorf("no-op incremental stats = %+v", m2.Stats)
	}
}

// An incremental copy takes dst to be as Previous says (see dstListing): it lists none of
// dst's directories that Previous lists, and leaves a file alone without looking at its copy.
// A dst that differs from its manifest is refused by the restore that reads it.
func TestCopyIncrementalTakesDstAsPrevious(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 30, 3)
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	prev, _ := ReadManifest(dst)
	var listed []string
	var mu sync.Mutex
	opts := Options{Previous: &prev, Baseline: baselineNow(t, &prev), hooks: &hooks{at: func(point, rel string) error {
		if point == "list-dst" {
			mu.Lock()
			listed = append(listed, rel)
			mu.Unlock()
		}
		return nil
	}}}
	// Changed behind the manifest's back: a file truncated, a directory Previous does not list
	// (with a file), which the source now has too (with another).
	must(t, os.Truncate(filepath.Join(dst, manyPath(0)), 1))
	mustWrite(t, filepath.Join(dst, "stray/old"), []byte("not in the manifest"), 0o644)
	mustWrite(t, filepath.Join(src, "stray/new"), []byte("added"), 0o644)
	m, err := Copy(context.Background(), src, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats.CopiedFiles != 1 || m.Stats.Deleted != 1 {
		t.Errorf("copied %d files and deleted %d entries, want the 1 added and the stray one", m.Stats.CopiedFiles, m.Stats.Deleted)
	}
	if !slices.Equal(listed, []string{"stray"}) {
		t.Errorf("dst directories listed: %q, want only the one Previous does not list", listed)
	}
	if _, err := os.Stat(filepath.Join(dst, "stray/old")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stray directory's old file: %v, want it gone", err)
	}
	// The truncated file was left alone: the tree no longer matches its manifest, and a
	// restore from it says so.
	final := filepath.Join(t.TempDir(), "cache")
	_, err = Restore(context.Background(), dst, final+".staging", final, Options{})
	if !errors.Is(err, ErrSourceCorrupt) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), manyPath(0)) {
		t.Errorf("restoring from a copy whose file was truncated behind its manifest: %v, want ErrSourceCorrupt naming %s", err, manyPath(0))
	}

	// Without Previous every directory of an existing dst is listed.
	listed = nil
	opts.Previous, opts.Baseline = nil, nil
	if _, err := Copy(context.Background(), src, dst, opts); err != nil {
		t.Fatal(err)
	}
	if want := int(m.Totals.Dirs) + 1; len(listed) != want {
		t.Errorf("a copy onto dst without Previous listed %d of its directories, want all %d", len(listed), want)
	}
	compareContents(t, contents(t, src), contents(t, dst))
}

// An incremental copy leaves a symlink alone as it does a file: its Previous entry has the
// same target, owner and mtime, and the source is untouched since the copy that wrote it
// (Baseline). It is not looked at on dst; a restore keeps its origin, so the next save can
// leave it alone too.
func TestCopyIncrementalLeavesUnchangedSymlinksAlone(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 30, 5)
	for i := range 4 {
		must(t, os.Symlink(fmt.Sprintf("f%04d", i), filepath.Join(src, filepath.Dir(manyPath(i)), fmt.Sprintf("lib%d.so", i))))
	}
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	prev, _ := ReadManifest(dst)
	for _, e := range prev.Entries {
		if e.Type == TypeSymlink && e.Origin != prev.ID {
			t.Fatalf("symlink %s has origin %q, want the save's %q", e.Path, e.Origin, prev.ID)
		}
	}
	base := baselineNow(t, &prev)
	// One symlink gets a new target; another's copy is changed behind the manifest, which
	// stays so because the copy does not look at it.
	retargeted := filepath.Join(filepath.Dir(manyPath(1)), "lib1.so")
	must(t, os.Remove(filepath.Join(src, retargeted)))
	must(t, os.Symlink("elsewhere", filepath.Join(src, retargeted)))
	untouched := filepath.Join(filepath.Dir(manyPath(2)), "lib2.so")
	old := time.Unix(1000, 0)
	setLinkMtime := func(p string, ns int64) {
		ts := unix.NsecToTimespec(ns)
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
	setLinkMtime(filepath.Join(dst, untouched), old.UnixNano())
	var written []string
	var mu sync.Mutex
	m, err := Copy(context.Background(), src, dst, Options{Previous: &prev, Baseline: base, hooks: &hooks{at: func(point, rel string) error {
		if point == "symlink" {
			mu.Lock()
			written = append(written, rel)
			mu.Unlock()
		}
		return nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(written, []string{retargeted}) {
		t.Errorf("symlinks written: %q, want only the retargeted %s", written, retargeted)
	}
	if got, _ := os.Readlink(filepath.Join(dst, retargeted)); got != "elsewhere" {
		t.Errorf("the retargeted symlink points to %q", got)
	}
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, untouched), &st))
	if st.Mtim.Sec != old.Unix() {
		t.Errorf("an unchanged symlink's copy was touched (mtime %d)", st.Mtim.Sec)
	}
	origins := map[string]string{}
	for _, e := range m.Entries {
		if e.Type == TypeSymlink {
			origins[e.Path] = e.Origin
		}
	}
	if origins[untouched] != prev.ID || origins[retargeted] != m.ID {
		t.Errorf("symlink origins %v: want %s from the first save, %s from this one", origins, untouched, retargeted)
	}
	// A restore keeps them (once the copy changed behind the manifest is put back as it says).
	for _, e := range m.Entries {
		if e.Path == untouched {
			setLinkMtime(filepath.Join(dst, untouched), e.MtimeNs)
		}
	}
	final := filepath.Join(t.TempDir(), "cache")
	r, err := Restore(context.Background(), dst, final+".staging", final, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range r.Entries {
		if e.Type == TypeSymlink && e.Origin != origins[e.Path] {
			t.Errorf("restored symlink %s has origin %q, want the saved %q", e.Path, e.Origin, origins[e.Path])
		}
	}
}

func TestCopyErrorsNameThePath(t *testing.T) {
	for _, errno := range []syscall.Errno{unix.ENOSPC, unix.EACCES, unix.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
			buildManyFiles(t, src, 40, 2)
			_, err := Copy(context.Background(), src, dst, Options{hooks: &hooks{at: func(point, rel string) error {
				if point == "file" && rel == "dir05/sub2/f0005" {
					return errno
				}
				return nil
			}}})
			if !errors.Is(err, errno) {
				t.Fatalf("err = %v, want %v", err, errno)
			}
			if !strings.Contains(err.Error(), filepath.Join(dst, "dir05/sub2/f0005")) {
				t.Errorf("error %q does not name the path", err)
			}
			if _, err := Verify(dst); !errors.Is(err, ErrNoManifest) {
				t.Errorf("Verify after failure = %v, want ErrNoManifest", err)
			}
		})
	}
}

// A real full disk: a 2 MiB tmpfs as destination. Root can mount one; a
// non-root run cannot, asserts exactly that, and relies on the injected
// ENOSPC of TestCopyErrorsNameThePath.
func TestCopyDiskFull(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 10, 4)
	mustWrite(t, filepath.Join(src, "big/blob"), make([]byte, 4<<20), 0o644)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("mounting tmpfs as root: %v", err)
		}
		if !errors.Is(err, unix.EPERM) {
			t.Fatalf("mount as non-root: %v, want EPERM", err)
		}
		return
	}
	t.Cleanup(func() { must(t, unix.Unmount(mnt, 0)) })
	dst := filepath.Join(mnt, "dst")
	_, err := Copy(context.Background(), src, dst, Options{Workers: 2})
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	// Whichever write meets the full disk first is named (workers race
	// for the last blocks), so any path inside dst will do.
	if !strings.Contains(err.Error(), dst+"/") {
		t.Errorf("error %q does not name the file", err)
	}
	if _, err := os.Stat(filepath.Join(dst, ManifestName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a manifest was written on a full disk")
	}
}

// Not as root, chown EPERM is recorded and the copy succeeds; as root, the
// same failure is an error.
func TestCopyOwnershipFailures(t *testing.T) {
	eperm := func(point, rel string) error {
		if point == "chown" {
			return unix.EPERM
		}
		return nil
	}
	src := t.TempDir()
	buildManyFiles(t, src, 10, 5)

	nonRoot := 1000
	m, err := Copy(context.Background(), src, filepath.Join(t.TempDir(), "dst"), Options{hooks: &hooks{at: eperm, euid: &nonRoot}})
	if err != nil {
		t.Fatalf("non-root copy failed: %v", err)
	}
	if m.Stats.OwnershipNotPreserved == 0 || len(m.Warnings) == 0 || !strings.Contains(m.Warnings[0], "not preserved") {
		t.Errorf("stats %+v, warnings %q", m.Stats, m.Warnings)
	}

	root := 0
	_, err = Copy(context.Background(), src, filepath.Join(t.TempDir(), "dst"), Options{hooks: &hooks{at: eperm, euid: &root}})
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("root copy: err = %v, want EPERM", err)
	}
}

func TestCopySourceChangedDuringCopy(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 10, 6)
	_, err := Copy(context.Background(), src, dst, Options{hooks: &hooks{at: func(point, rel string) error {
		if point == "file" && rel == manyPath(4) {
			// The engine is still writing.
			return os.WriteFile(filepath.Join(src, rel), []byte("a live write"), 0o644)
		}
		return nil
	}}})
	if !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("err = %v, want ErrSourceChanged", err)
	}
}

func TestCopyRejectsOverlappingTrees(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 3, 1)
	for _, dst := range []string{src, filepath.Join(src, "dir00", "inside"), filepath.Dir(src)} {
		if _, err := Copy(context.Background(), src, dst, Options{}); err == nil || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("Copy(%s, %s) = %v, want an overlap error", src, dst, err)
		}
	}
}

// With a bandwidth limit the copy is still complete and exact; the limiter
// is shared by the workers (the race detector watches the sharing). Timing
// is not asserted.
func TestCopyWithBandwidthLimit(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 40, 8)
	var mu sync.Mutex
	var seen []Progress
	_, err := Copy(context.Background(), src, dst, Options{
		Workers:          4,
		BytesPerSecond:   4 << 20,
		Progress:         func(p Progress) { mu.Lock(); seen = append(seen, p); mu.Unlock() },
		ProgressInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	compareContents(t, contents(t, src), contents(t, dst))
	for i := 1; i < len(seen); i++ {
		if seen[i].BytesDone < seen[i-1].BytesDone {
			t.Errorf("progress went backwards: %+v then %+v", seen[i-1], seen[i])
		}
	}
	if n := len(seen); n == 0 || !seen[n-1].Final {
		t.Error("no final progress report")
	}
}

// A bandwidth limit below the copy chunk size must still work (the limiter
// refuses waits larger than its burst).
func TestCopyWithTinyBandwidthLimit(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	mustWrite(t, filepath.Join(src, "f"), make([]byte, 3000), 0o644)
	if _, err := Copy(context.Background(), src, dst, Options{BytesPerSecond: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	compareContents(t, contents(t, src), contents(t, dst))
}

// TestCopyTimesItsPhases: the manifest says where the copy's time went, the phases one after
// the other within Duration, and keeps it on the volume for whoever reads the copy later.
func TestCopyTimesItsPhases(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 300, 5)
	m, err := Copy(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := m.Stats.Phases
	if p.Files <= 0 || p.Links < 0 || p.Dirs <= 0 || p.Sync < 0 {
		t.Errorf("phases %+v: want files and directories timed, none negative", p)
	}
	if sum := p.Files + p.Links + p.Dirs + p.Sync; sum > m.Duration {
		t.Errorf("phases add up to %s, more than the copy's %s", sum, m.Duration)
	}
	read, err := ReadManifest(dst)
	if err != nil {
		t.Fatal(err)
	}
	if read.Stats.Phases != p {
		t.Errorf("manifest on the volume has phases %+v, the copy returned %+v", read.Stats.Phases, p)
	}
}
