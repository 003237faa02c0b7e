package copier

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFlusherSyncsWhileCopying: a copy of several flush intervals syncs its destination in
// the background as it goes, so the final syncfs is not left all of it, and the copy is
// complete and verifies.
func TestFlusherSyncsWhileCopying(t *testing.T) {
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "large"), randBytes(rand.New(rand.NewSource(3)), 8<<20), 0o644)
	var syncs atomic.Int64
	dst := filepath.Join(t.TempDir(), "dst")
	// Rate-limited to 4 MiB/s with a 4 MiB burst: the first half is written at once and the
	// second a second later, so the flusher (every 50 ms) sees 4 flush intervals written
	// for about 20 of its ticks before the copy ends.
	_, err := Copy(context.Background(), src, dst, Options{BytesPerSecond: 4 << 20, hooks: &hooks{
		flushEvery: 1 << 20,
		flush:      func() error { syncs.Add(1); return nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if syncs.Load() == 0 {
		t.Fatal("no background sync during a copy of 8 flush intervals")
	}
	if _, err := Verify(dst); err != nil {
		t.Fatalf("copy with background syncs does not verify: %v", err)
	}
}

// TestFlusherErrorFailsCopy: a writeback error seen by a background sync is reported once
// by syncfs, so the final syncfs would miss it; the copy must fail with it and publish no
// manifest. (4 MiB at 2 MiB/s: half at once, half a second later.)
func TestFlusherErrorFailsCopy(t *testing.T) {
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "large"), randBytes(rand.New(rand.NewSource(5)), 4<<20), 0o644)
	dst := filepath.Join(t.TempDir(), "dst")
	_, err := Copy(context.Background(), src, dst, Options{BytesPerSecond: 2 << 20, hooks: &hooks{
		flushEvery: 1 << 20,
		flush:      func() error { return unix.EIO },
	}})
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("err = %v, want the background sync's EIO", err)
	}
	if _, serr := os.Stat(filepath.Join(dst, ManifestName)); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("manifest after a failed background sync: %v", serr)
	}
}
