package copier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
		if err := g.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan error, 1)
	go func() { got <- g.acquire(ctx) }()
	select {
	case err := <-got:
		t.Fatalf("range %d started beside a small file (err %v), want it held", besideSmall+1, err)
	case <-time.After(50 * time.Millisecond):
	}
	g.release() // a range ends: the waiting one takes its place
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	go func() { got <- g.acquire(ctx) }()
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
		if err := g.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}

	g.smallStarted()
	cause := errors.New("copy cancelled")
	cctx, cancel := context.WithCancelCause(ctx)
	go func() { got <- g.acquire(cctx) }()
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
