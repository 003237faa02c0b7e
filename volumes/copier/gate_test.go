package copier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestRangeGate: while a small file is being copied no more than besideSmall ranges run, the
// rest wait until a range ends or the last small file is done; with no small file, ranges
// are not held back; a cancelled wait returns the cause.
func TestRangeGate(t *testing.T) {
	g := newRangeGate()
	ctx := t.Context()
	g.smallStarted()
	for range besideSmall {
		if err := g.acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan error, 1)
	go func() { got <- g.acquire(ctx, 1) }()
	select {
	case err := <-got:
		t.Fatalf("range %d started beside a small file (err %v), want it held", besideSmall+1, err)
	case <-time.After(50 * time.Millisecond):
	}
	g.release() // a range ends: the waiting one takes its place
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	go func() { got <- g.acquire(ctx, 1) }()
	select {
	case err := <-got:
		t.Fatalf("range started beside a small file with %d running (err %v)", besideSmall, err)
	case <-time.After(50 * time.Millisecond):
	}
	g.smallDone() // no small file left: no limit
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	for range 8 {
		if err := g.acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}

	g.smallStarted()
	cause := errors.New("copy cancelled")
	cctx, cancel := context.WithCancelCause(ctx)
	go func() { got <- g.acquire(cctx, 1) }()
	cancel(cause)
	if err := <-got; !errors.Is(err, cause) {
		t.Errorf("cancelled wait returned %v, want %v", err, cause)
	}
}

// TestLargeFilesSentFirst: a directory's large files (more than one range) go to the workers
// before its small ones, whatever their names, so that they are copied beside the small
// files rather than alone after them. One worker copies in the order the walk sends.
func TestLargeFilesSentFirst(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	for i := range 5 {
		must(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("small%d", i)), []byte("x"), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(src, "zz-layer"), make([]byte, copyChunk+1), 0o644))
	var order []string
	_, err := Copy(context.Background(), src, dst, Options{Workers: 1, WalkDirs: 1, hooks: &hooks{at: func(point, rel string) error {
		if point == "file" {
			order = append(order, rel)
		}
		return nil
	}}})
	must(t, err)
	if len(order) != 6 || order[0] != "zz-layer" {
		t.Errorf("files copied in the order %v, want zz-layer first", order)
	}
}

// TestWalkHoldsRangesBack: while the walk is still listing directories, a large file's ranges
// run besideSmall at a time although no small file is being copied. On a lazily loaded
// volume each listing is a small read, and behind a queue of every range of every large
// file it waited a second at 32 MiB/s, so the walk crawled and the small files came after
// the large ones instead of beside them. The walk here waits in directory b until the layer
// in a is copied.
func TestWalkHoldsRangesBack(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	for _, d := range []string{"a", "b"} {
		must(t, os.Mkdir(filepath.Join(src, d), 0o755))
	}
	const chunks = 4
	must(t, os.WriteFile(filepath.Join(src, "a", "layer"), make([]byte, chunks*copyChunk), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "b", "small"), []byte("x"), 0o644))
	layerCopied := make(chan struct{})
	var running, most, started atomic.Int64
	_, err := Copy(context.Background(), src, dst, Options{WalkDirs: 1, hooks: &hooks{at: func(point, rel string) error {
		switch {
		case point == "walk" && rel == "b":
			select {
			case <-layerCopied:
			case <-time.After(time.Minute):
				return errors.New("the layer was not copied while the walk waited")
			}
		case point == "range":
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(20 * time.Millisecond) // long enough for ranges let through together to overlap
			running.Add(-1)
			if started.Add(1) == chunks {
				close(layerCopied)
			}
		}
		return nil
	}}})
	must(t, err)
	if got := most.Load(); got > besideSmall {
		t.Errorf("%d of the layer's ranges ran at once while the walk was listing, want at most %d", got, besideSmall)
	}
	if got := started.Load(); got != chunks {
		t.Errorf("the layer was copied in %d ranges, want %d", got, chunks)
	}
}

// TestRangeGatePaced: a paced gate lets a range start beside small files only while the large
// files have not started a larger share of their bytes than the small files of their number;
// a small file starting lets a held range go; beside the walk alone, or with no small file
// copying, pacing holds nothing back.
func TestRangeGatePaced(t *testing.T) {
	g := newRangeGate()
	g.pace(100, 10) // 100 bytes of large files, 10 small files
	ctx := t.Context()
	g.smallStarted() // 1 of 10 small files: 10%
	for range 2 {    // 0% and then 10% of the large bytes started: not ahead
		must(t, g.acquire(ctx, 10))
		g.release()
	}
	got := make(chan error, 1)
	go func() { got <- g.acquire(ctx, 10) }() // 20% > 10%: ahead
	select {
	case err := <-got:
		t.Fatalf("a range started with the large files at 20%% and the small at 10%% (err %v), want it held", err)
	case <-time.After(50 * time.Millisecond):
	}
	g.smallStarted() // 20%: the held range is due
	must(t, <-got)
	g.release()

	// Ahead again (30% against 20%), but with no small file copying nothing is held back,
	// not even while the walk runs (one range at a time then).
	g.smallDone()
	g.smallDone()
	g.walkStarted()
	must(t, g.acquire(ctx, 10))
	g.release()
	g.walkDone()
	for range 4 {
		must(t, g.acquire(ctx, 10))
	}
}

// TestSharesOfAManifest: a restore paces the bytes of the large files whose ranges pass the
// gate and the number of small files, each file once.
func TestSharesOfAManifest(t *testing.T) {
	c := &copier{chunk: 8}
	m := &Manifest{Entries: []Entry{
		{Path: "d", Type: TypeDir},
		{Path: "d/layer", Type: TypeFile, Size: 20},
		{Path: "d/layer-link", Type: TypeFile, Size: 20, Link: "d/layer"},
		{Path: "d/db", Type: TypeFile, Size: 30, SHA256: "aa"}, // copied front to back
		{Path: "d/small", Type: TypeFile, Size: 8},
		{Path: "d/small.db", Type: TypeFile, Size: 3, SHA256: "bb"},
		{Path: "d/empty", Type: TypeFile},
		{Path: "d/link", Type: TypeSymlink, Target: "small"},
	}}
	if large, small := c.shares(m); large != 20 || small != 2 {
		t.Errorf("shares: %d large bytes and %d small files, want 20 and 2", large, small)
	}
}
