package copier

import (
	"context"
	"os"
	"path/filepath"
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
	if _, err := Copy(context.Background(), src, dst, Options{Previous: &prev}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, before, snapshot(t, dst), compareOpts{ignoreAtime: true})
}
