package cachejob_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
