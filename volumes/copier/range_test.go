package copier

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyLargeFileInParallelRanges: a large file is copied as ranges read at once
// (RangeReads), and comes out byte for byte, holes kept, whatever the number of ranges; a
// checksummed large file is read in order and its checksum is the file's.
func TestCopyLargeFileInParallelRanges(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	r := rand.New(rand.NewSource(7))
	// 41 MiB and a bit: six 8 MiB chunks, the last one short, with a hole of two chunks.
	f := filepath.Join(src, "worker/content/blobs/sha256/layer")
	mustWrite(t, f, randBytes(r, 9<<20), 0o644)
	fh, err := os.OpenFile(f, os.O_WRONLY, 0)
	must(t, err)
	_, err = fh.WriteAt(randBytes(r, 16<<20+4321), 25<<20)
	must(t, err)
	must(t, fh.Close())
	mustWrite(t, filepath.Join(src, "big.db"), randBytes(r, 20<<20+1), 0o600)
	want := contents(t, src)
	var srcSt unix.Stat_t
	must(t, unix.Stat(f, &srcSt))

	for _, ranges := range []int{1, 3, 8} {
		dst := filepath.Join(t.TempDir(), "dst")
		m, err := Copy(context.Background(), src, dst, Options{RangeReads: ranges})
		if err != nil {
			t.Fatalf("RangeReads %d: %v", ranges, err)
		}
		compareContents(t, want, contents(t, dst))
		var st unix.Stat_t
		must(t, unix.Stat(filepath.Join(dst, "worker/content/blobs/sha256/layer"), &st))
		// Ranges written out of order may cost the filesystem an extent block or two; a filled
		// hole would be 32768 more.
		if st.Size != srcSt.Size || st.Blocks > srcSt.Blocks+64 {
			t.Errorf("RangeReads %d: layer has size %d and %d blocks, want %d and about %d (its hole kept)", ranges, st.Size, st.Blocks, srcSt.Size, srcSt.Blocks)
		}
		if _, err := Verify(dst); err != nil {
			t.Errorf("RangeReads %d: the checksummed big.db does not verify: %v", ranges, err)
		}
		if m.Stats.CopiedBytes != srcSt.Size+20<<20+1 {
			t.Errorf("RangeReads %d: copied %d bytes, want %d", ranges, m.Stats.CopiedBytes, srcSt.Size+20<<20+1)
		}
	}
}
