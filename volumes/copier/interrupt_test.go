package copier

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// countHookCalls runs a clean copy and returns how many times the fault
// hook was reached: the range of points an interruption can hit.
func countHookCalls(t *testing.T, src string) int64 {
	t.Helper()
	var n atomic.Int64
	_, err := Copy(context.Background(), src, filepath.Join(t.TempDir(), "count"), Options{hooks: &hooks{at: func(string, string) error {
		n.Add(1)
		return nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return n.Load()
}

// Interrupt copies at random points, by cancellation and by an injected
// filesystem error, into fresh and into previously complete destinations.
// Whatever the point, the result has no manifest, fails Verify with
// ErrNoManifest, and cannot be restored.
func TestCopyInterruptedLeavesNoManifest(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 300, 11)
	calls := countHookCalls(t, src)
	r := rand.New(rand.NewSource(42))
	final := filepath.Join(t.TempDir(), "final")
	mustWrite(t, filepath.Join(final, "engine-state"), []byte("current cache"), 0o644)
	finalBefore := snapshot(t, final)

	for i := range 40 {
		// Up to calls-1 so that the last reachable point, the manifest
		// publication itself, is in range.
		k := 1 + r.Int63n(calls)
		cancelMode := i%2 == 0
		overComplete := i%3 == 0
		name := fmt.Sprintf("iter%02d-k%d-cancel=%v-overComplete=%v", i, k, cancelMode, overComplete)
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dst")
			if overComplete {
				if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			injected := errors.New("injected failure")
			var n atomic.Int64
			_, err := Copy(ctx, src, dst, Options{Workers: 1 + int(k%4), hooks: &hooks{at: func(point, rel string) error {
				if n.Add(1) != k {
					return nil
				}
				if cancelMode {
					cancel()
					return nil
				}
				return injected
			}}})
			if err == nil {
				t.Fatalf("interrupted copy (hook call %d of %d) succeeded", k, calls)
			}
			if cancelMode && !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if !cancelMode && !errors.Is(err, injected) {
				t.Fatalf("err = %v, want the injected error", err)
			}
			if _, err := os.Lstat(filepath.Join(dst, ManifestName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("manifest present after interruption: %v", err)
			}
			if _, err := Verify(dst); !errors.Is(err, ErrNoManifest) {
				t.Fatalf("Verify = %v, want ErrNoManifest", err)
			}
			_, err = Restore(context.Background(), dst, filepath.Join(filepath.Dir(final), "staging"), final, Options{})
			if !errors.Is(err, ErrNoManifest) {
				t.Fatalf("Restore = %v, want ErrNoManifest", err)
			}
			compareTrees(t, finalBefore, snapshot(t, final), compareOpts{})

			// A clean re-run over the debris produces an exact copy.
			if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(dst); err != nil {
				t.Fatal(err)
			}
			compareContents(t, contents(t, src), contents(t, dst))
		})
	}
}

// Cancellation after the last file but before the manifest is published
// must still leave no manifest: the points after the copy loop (links,
// directory metadata, sync, publication) are checked by name.
func TestCopyInterruptedAfterData(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 20, 12)
	for _, at := range []string{"link", "dir", "sync", "manifest"} {
		t.Run(at, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dst")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := Copy(ctx, src, dst, Options{hooks: &hooks{at: func(point, rel string) error {
				if point == at {
					cancel()
				}
				return nil
			}}})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if _, err := Verify(dst); !errors.Is(err, ErrNoManifest) {
				t.Fatalf("Verify = %v, want ErrNoManifest", err)
			}
			if _, err := os.Lstat(filepath.Join(dst, manifestTemp)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("manifest temp file left behind: %v", err)
			}
		})
	}
}

// The stale-manifest guard: a re-run over a complete dst removes the old
// manifest durably before it changes anything.
func TestCopyRemovesOldManifestFirst(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	buildManyFiles(t, src, 10, 13)
	if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	sawManifest := false
	_, err := Copy(context.Background(), src, dst, Options{hooks: &hooks{at: func(point, rel string) error {
		if point == "walk" && rel == "" {
			var st unix.Stat_t
			sawManifest = unix.Lstat(filepath.Join(dst, ManifestName), &st) == nil
			return unix.EIO
		}
		return nil
	}}})
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("err = %v", err)
	}
	if sawManifest {
		t.Error("the old manifest was still there when copying started")
	}
}

// The same for an incremental copy (Options.Previous, over the complete copy it describes, as
// on a save volume cloned from the previous snapshot) of a source where files were deleted,
// changed and added: an interruption at any point leaves no manifest, so the volume is never
// restored nor snapshotted as a save; the next save finds no manifest, copies in full over the
// debris, and files gone from the source are gone from the copy.
func TestIncrementalCopyInterruptedLeavesNoManifest(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 200, 21)
	prepare := func(t *testing.T) (string, Manifest) {
		dst := filepath.Join(t.TempDir(), "dst")
		if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		prev, err := ReadManifest(dst)
		if err != nil {
			t.Fatal(err)
		}
		return dst, prev
	}
	// The previous copy is taken before the source changes.
	dsts := make([]string, 13)
	prevs := make([]Manifest, len(dsts))
	bases := make([]*Baseline, len(dsts))
	for i := range dsts {
		dsts[i], prevs[i] = prepare(t)
		bases[i] = baselineNow(t, &prevs[i])
	}
	gone := []string{manyPath(3), manyPath(50), manyPath(120)}
	for _, rel := range gone {
		must(t, os.Remove(filepath.Join(src, rel)))
	}
	for i := 0; i < 200; i += 25 {
		if p := filepath.Join(src, manyPath(i)); fileExists(p) {
			mustWrite(t, p, []byte(fmt.Sprintf("changed %d", i)), 0o644)
		}
	}
	mustWrite(t, filepath.Join(src, "added", "new"), []byte("new"), 0o644)

	var calls atomic.Int64
	if _, err := Copy(context.Background(), src, dsts[0], Options{Previous: &prevs[0], Baseline: bases[0], hooks: &hooks{at: func(string, string) error {
		calls.Add(1)
		return nil
	}}}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(7))
	for i := 1; i < len(dsts); i++ {
		k := 1 + r.Int63n(calls.Load())
		cancelMode := i%2 == 0
		t.Run(fmt.Sprintf("iter%02d-k%d-cancel=%v", i, k, cancelMode), func(t *testing.T) {
			dst := dsts[i]
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			injected := errors.New("injected failure")
			var n atomic.Int64
			_, err := Copy(ctx, src, dst, Options{Previous: &prevs[i], Baseline: bases[i], hooks: &hooks{at: func(point, rel string) error {
				if n.Add(1) != k {
					return nil
				}
				if cancelMode {
					cancel()
					return nil
				}
				return injected
			}}})
			if err == nil {
				t.Fatalf("interrupted incremental copy (hook call %d of %d) succeeded", k, calls.Load())
			}
			if _, err := ReadManifest(dst); !errors.Is(err, ErrNoManifest) {
				t.Fatalf("ReadManifest after interruption = %v, want ErrNoManifest", err)
			}
			if _, err := Verify(dst); !errors.Is(err, ErrNoManifest) {
				t.Fatalf("Verify = %v, want ErrNoManifest", err)
			}
			if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(dst); err != nil {
				t.Fatal(err)
			}
			compareContents(t, contents(t, src), contents(t, dst))
			for _, rel := range gone {
				if fileExists(filepath.Join(dst, rel)) {
					t.Errorf("%s, deleted from the source, is still in the copy", rel)
				}
			}
		})
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
