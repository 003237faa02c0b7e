package copier

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCopyOverExistingDirsFixesTheirMetadata: an incremental copy skips directory metadata
// calls that would change nothing, so a kept directory whose mode, owner, mtime or xattrs
// differ from the source's must still be put right.
func TestCopyOverExistingDirsFixesTheirMetadata(t *testing.T) {
	src, dst := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 40, 3)
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	prev, err := ReadManifest(dst)
	must(t, err)
	d := filepath.Join(dst, "dir01")
	must(t, os.Chmod(d, 0o700))
	setMtime(t, d, time.Unix(1, 0), time.Unix(2, 0))
	if os.Geteuid() == 0 {
		must(t, os.Lchown(filepath.Join(dst, "dir02"), 123, 456))
		must(t, unix.Lsetxattr(filepath.Join(dst, "dir03"), overlayOpaque, []byte("y"), 0))
	}
	before := snapshot(t, src)
	if _, err := Copy(context.Background(), src, dst, Options{Previous: &prev, Baseline: baselineNow(t, &prev)}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, before, snapshot(t, dst), compareOpts{ignoreAtime: true})
}

// TestDirMetadataAppliedAfterDescendants: directory metadata is applied in parallel, but a
// directory only after every directory below it (its mode may take away the search
// permission a non-root copier needs to reach them), and the root last.
func TestDirMetadataAppliedAfterDescendants(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 200, 4)
	for _, rel := range []string{"a/b/c/d", "a/b/e", "a/f", "g/h/i"} {
		must(t, os.MkdirAll(filepath.Join(src, rel), 0o755))
	}
	var mu sync.Mutex
	var order []string
	_, err := Copy(context.Background(), src, dst, Options{WalkDirs: 4, hooks: &hooks{at: func(point, rel string) error {
		if point == "dir" {
			mu.Lock()
			order = append(order, filepath.ToSlash(rel))
			mu.Unlock()
		}
		return nil
	}}})
	must(t, err)
	if len(order) < 60 || order[len(order)-1] != "" {
		t.Fatalf("applied %d directories, last %q; want every directory and the root last", len(order), order[len(order)-1])
	}
	done := map[string]bool{}
	for _, rel := range order {
		for _, other := range order {
			if (rel == "" || strings.HasPrefix(other, rel+"/")) && other != rel && !done[other] {
				t.Errorf("%q applied before %q below it", rel, other)
			}
		}
		done[rel] = true
	}
}
