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
	buildManyFiles(t, src, 64, 7)
	mustWrite(t, filepath.Join(src, "large"), randBytes(rand.New(rand.NewSource(3)), 8<<20), 0o644)
	var syncs atomic.Int64
	dst := filepath.Join(t.TempDir(), "dst")
	// Rate-limited so that the copy lasts several of the flusher's ticks.
	_, err := Copy(context.Background(), src, dst, Options{BytesPerSecond: 4 << 20, hooks: &hooks{
		flushEvery: 1 << 20,
		flush:      func() error { syncs.Add(1); return nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if syncs.Load() < 2 {
		t.Fatalf("%d background syncs during a copy of 8 flush intervals at 4 per second, want at least 2", syncs.Load())
	}
	if _, err := Verify(dst); err != nil {
		t.Fatalf("copy with background syncs does not verify: %v", err)
	}
}

// TestFlusherErrorFailsCopy: a writeback error seen by a background sync is reported once
// by syncfs, so the final syncfs would miss it; the copy must fail with it and publish no
// manifest.
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
