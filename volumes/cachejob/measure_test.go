package cachejob_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// Measure counts allocated bytes and inodes, a hardlinked file once.
func TestMeasureCountsHardlinksOnce(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i) | 1
	}
	if err := os.WriteFile(filepath.Join(dir, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := cachejob.Measure(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "blob"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	after, err := cachejob.Measure(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// The root and the file; the hardlink is the same inode.
	if before != after || after.Inodes != 2 || after.Bytes < int64(len(data)) {
		t.Fatalf("measured %+v then %+v, want 2 inodes and at least %d bytes both times", before, after, len(data))
	}
}

// Measure lists directories in parallel; what it counts is what one serial walk counts, with
// hardlinks across directories (walked by different walkers) counted once.
func TestMeasureMatchesASerialWalk(t *testing.T) {
	dir := t.TempDir()
	measureTree(t, dir, 40, 12)
	got, err := cachejob.Measure(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := serialMeasure(t, dir)
	if got != want {
		t.Fatalf("Measure = %+v, a serial walk counts %+v", got, want)
	}
	// The root, and per directory itself, its subdirectory, 12 files and a symlink (its
	// hardlink is another directory's file).
	if want.Inodes != 1+40*(2+12+1) {
		t.Fatalf("the serial walk counted %d inodes: the tree is not what the test made", want.Inodes)
	}
}

// A cancelled save stops its measurement with the cancellation.
func TestMeasureStopsWhenCancelled(t *testing.T) {
	dir := t.TempDir()
	measureTree(t, dir, 4, 2)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := cachejob.Measure(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("Measure with a cancelled context = %v, want context.Canceled", err)
	}
}

// A tree Measure cannot read is an error naming the path, not a smaller count.
func TestMeasureFailsOnAMissingTree(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	if _, err := cachejob.Measure(t.Context(), missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Measure(%s) = %v, want a not-exist error naming it", missing, err)
	}
}

// measureTree makes dirs directories, each with a subdirectory of files small files, a symlink,
// and a second name of the next directory's first file.
func measureTree(t testing.TB, root string, dirs, files int) {
	t.Helper()
	dir := func(d int) string { return filepath.Join(root, fmt.Sprintf("d%d", d)) }
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir(d), "s"), 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range files {
			if err := os.WriteFile(filepath.Join(dir(d), "s", fmt.Sprintf("f%d", f)), make([]byte, 1+f*1000), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for d := range dirs {
		if err := os.Symlink("s/f0", filepath.Join(dir(d), "link")); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(dir((d+1)%dirs), "s", "f0"), filepath.Join(dir(d), "hard")); err != nil {
			t.Fatal(err)
		}
	}
}

// serialMeasure counts as Measure does, in one filepath.WalkDir.
func serialMeasure(t testing.TB, dir string) storagecheck.Usage {
	var u storagecheck.Usage
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		u.Inodes++
		u.Bytes += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A cache that does not fit its volume is refused before anything is copied, with what it
// takes, so the controller can make a volume that fits.
func TestSaveRefusesACacheLargerThanItsVolume(t *testing.T) {
	root := t.TempDir()
	cache, volume := filepath.Join(root, "a", "dagger"), filepath.Join(root, "volume")
	engineCache(t, cache, "clean")
	// A volume of 64 MiB with 4096 inodes, as statfs would report it.
	tiny := func(string) (storagecheck.FSStat, error) {
		return storagecheck.FSStat{BlockSize: 4096, Blocks: 16384, Free: 16384, Avail: 16384, Files: 4096, FilesFree: 4096}, nil
	}
	res, err := cachejob.Save(t.Context(), cachejob.SaveOptions{Options: opts(cache, volume), StatFS: tiny})
	if err == nil || res.Result != volumes.ResultNoSpace || cachejob.ExitCode(res) != volumes.ExitNoSpace {
		t.Fatalf("save = %+v, %v; want no-space, exit %d", res, err, volumes.ExitNoSpace)
	}
	if res.Bytes <= 0 || res.Files < 14 || !strings.Contains(res.Reason, "the save volume holds 64Mi") || !strings.Contains(res.Reason, "a volume of 1Gi holds it") {
		t.Fatalf("result %+v does not say what the cache takes", res)
	}
	if _, err := os.Stat(volume); !os.IsNotExist(err) {
		t.Fatalf("the volume was written to (%v)", err)
	}
	// What the controller reads back from the pod's termination message.
	parsed, err := volumes.ParseJobResult(mustJSON(t, res))
	if err != nil || parsed.Result != volumes.ResultNoSpace || parsed.Bytes != res.Bytes {
		t.Fatalf("parsed %+v, %v", parsed, err)
	}
}

func mustJSON(t *testing.T, r volumes.JobResult) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "result")
	if err := cachejob.WriteResult(p, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkMeasure measures a tree of about 22k inodes (the EBS benchmark's cache has 24k)
// with Measure and with one serial filepath.WalkDir, warm caches:
//
//	go test -run '^$' -bench Measure ./volumes/cachejob/
func BenchmarkMeasure(b *testing.B) {
	dir := b.TempDir()
	measureTree(b, dir, 1000, 20)
	b.Run("parallel", func(b *testing.B) {
		for range b.N {
			if _, err := cachejob.Measure(b.Context(), dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serial", func(b *testing.B) {
		for range b.N {
			serialMeasure(b, dir)
		}
	})
}
