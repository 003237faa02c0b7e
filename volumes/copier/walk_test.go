package copier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// buildWalkTree makes a tree with every kind of entry the copier handles
// (buildFullTree: nested directories, symlinks, hardlink groups, sparse
// files, a FIFO, a socket, as root device nodes and trusted.* attributes), an
// engine cache's overlay snapshots as root (buildOverlayTree: whiteouts,
// opaque directories, hardlinks between snapshots), a wide part of many small
// files, and a hardlink group whose names sit in subtrees far apart in walk
// order: "a/early" comes first in a serial walk, "z/sub/late" last.
func buildWalkTree(t *testing.T, root string) {
	t.Helper()
	if os.Geteuid() == 0 {
		buildOverlayTree(t, filepath.Join(root, "engine"))
	}
	buildManyFiles(t, filepath.Join(root, "many"), 400, 3)
	mustWrite(t, filepath.Join(root, "a/early"), []byte("one inode, three names"), 0o644)
	mustWrite(t, filepath.Join(root, "m/x"), nil, 0o644)
	mustWrite(t, filepath.Join(root, "z/sub/x"), nil, 0o644)
	must(t, os.Link(filepath.Join(root, "a/early"), filepath.Join(root, "z/sub/late")))
	must(t, os.Link(filepath.Join(root, "a/early"), filepath.Join(root, "m/mid")))
	buildFullTree(t, root) // last: it sets every path's times
}

// sameManifest fails t unless a and b describe the same tree with the same
// outcome: the manifest's time, duration and ID aside, everything is
// compared (an entry's origin as "this copy" or the same earlier one).
func sameManifest(t *testing.T, what string, a, b Manifest) {
	t.Helper()
	// Times and IDs differ from run to run, whatever the walk.
	a.Created, b.Created, a.Duration, b.Duration = time.Time{}, time.Time{}, 0, 0
	a.Stats.Phases, b.Stats.Phases = Phases{}, Phases{}
	a.Entries, b.Entries = withOwnOrigin(a), withOwnOrigin(b)
	a.ID, b.ID = "", ""
	if reflect.DeepEqual(a, b) {
		return
	}
	for i := range min(len(a.Entries), len(b.Entries)) {
		if !reflect.DeepEqual(a.Entries[i], b.Entries[i]) {
			t.Fatalf("%s: entry %d differs:\n  %+v\n  %+v", what, i, a.Entries[i], b.Entries[i])
		}
	}
	a.Entries, b.Entries = nil, nil
	t.Fatalf("%s: manifests differ:\n  %+v\n  %+v", what, a, b)
}

// withOwnOrigin returns m's entries with the origin m.ID written as "self".
func withOwnOrigin(m Manifest) []Entry {
	out := slices.Clone(m.Entries)
	for i := range out {
		if out[i].Origin == m.ID {
			out[i].Origin = "self"
		}
	}
	return out
}

// primariesInWalkOrder is, by an independent walk (filepath.WalkDir lists in
// name order, depth first), the first name of every hardlink group under
// root, by each of the group's names.
func primariesInWalkOrder(t *testing.T, root string) map[string]string {
	t.Helper()
	first := map[[2]uint64]string{}
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Nlink < 2 {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if _, ok := first[key]; !ok {
			first[key] = rel
		}
		out[rel] = first[key]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// releaseAfter returns a walk hook that holds the walk of dir until the walk
// of after has begun: a parallel walk then meets the names under after (whose
// walk begins only once its parent's listing was handed out) before those
// under dir, the reverse of a serial walk's order. A walk that cannot get
// there (a serial one would wait forever) is failed after a minute.
func releaseAfter(dir, after string) *hooks {
	reached := make(chan struct{})
	var once atomic.Bool
	return &hooks{at: func(point, rel string) error {
		if point != "walk" {
			return nil
		}
		switch rel {
		case after:
			if once.CompareAndSwap(false, true) {
				close(reached)
			}
		case dir:
			select {
			case <-reached:
			case <-time.After(time.Minute):
				return fmt.Errorf("the walk of %s never began while %s waited", after, dir)
			}
		}
		return nil
	}}
}

// A parallel walk writes the manifest a serial one does, entry for entry,
// even when it meets a hardlink group's names in another order; each group's
// primary is its first name in walk order, as an independent walk finds it.
func TestParallelWalkMatchesSerial(t *testing.T) {
	src := t.TempDir()
	buildWalkTree(t, src)
	out := t.TempDir()
	serial, err := Copy(context.Background(), src, filepath.Join(out, "serial"), Options{WalkDirs: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := primariesInWalkOrder(t, src)
	if want["z/sub/late"] != "a/early" || want["m/mid"] != "a/early" {
		t.Fatalf("the test tree's hardlink group is not what the test needs: %v", want)
	}
	links := 0
	for _, e := range serial.Entries {
		p, grouped := want[e.Path]
		switch {
		case !grouped:
			continue
		case p == e.Path && e.Link != "":
			t.Errorf("%s is its group's first name in walk order but links to %s", e.Path, e.Link)
		case p != e.Path && e.Link != p:
			t.Errorf("%s links to %q, want %q (the first name in walk order)", e.Path, e.Link, p)
		}
		if e.Link != "" {
			links++
		}
	}
	if links < 4 {
		t.Fatalf("the manifest has %d hardlinks, want the test tree's groups", links)
	}
	for i, walkDirs := range []int{2, 8, 64} {
		t.Run(fmt.Sprintf("WalkDirs=%d", walkDirs), func(t *testing.T) {
			dst := filepath.Join(out, fmt.Sprintf("parallel-%d", i))
			opts := Options{WalkDirs: walkDirs}
			if walkDirs >= 3 { // "a" and "z" on walkers of their own, and one for "z/sub"
				opts.hooks = releaseAfter("a", "z/sub")
			}
			m, err := Copy(context.Background(), src, dst, opts)
			if err != nil {
				t.Fatal(err)
			}
			sameManifest(t, "parallel walk vs serial", serial, m)
			if _, err := Verify(dst); err != nil {
				t.Fatal(err)
			}
			compareContents(t, contents(t, src), contents(t, dst))
		})
	}
}

// An incremental copy (a complete dst, files changed, added and deleted at
// src) walked in parallel keeps, copies, deletes and records what a serial
// walk does.
func TestParallelWalkIncrementalMatchesSerial(t *testing.T) {
	src := t.TempDir()
	buildWalkTree(t, src)
	out := t.TempDir()
	dsts := map[int]string{1: filepath.Join(out, "serial"), 16: filepath.Join(out, "parallel")}
	prevs := map[int]Manifest{}
	for walkDirs, dst := range dsts {
		m, err := Copy(context.Background(), src, dst, Options{WalkDirs: walkDirs})
		if err != nil {
			t.Fatal(err)
		}
		prevs[walkDirs] = m
	}
	bases := map[int]*Baseline{}
	for walkDirs, m := range prevs {
		bases[walkDirs] = baselineNow(t, &m)
	}
	for i := 0; i < 400; i += 20 {
		p := filepath.Join(src, "many", manyPath(i))
		mustWrite(t, p, []byte(fmt.Sprintf("changed %d", i)), 0o644)
		setMtime(t, p, time.Now(), time.Now().Add(time.Duration(i)*time.Second))
	}
	must(t, os.RemoveAll(filepath.Join(src, "many/dir05")))
	must(t, os.Remove(filepath.Join(src, "z/sub/late")))
	mustWrite(t, filepath.Join(src, "new/deep/file"), []byte("added"), 0o644)
	got := map[int]Manifest{}
	for walkDirs, dst := range dsts {
		prev := prevs[walkDirs]
		m, err := Copy(context.Background(), src, dst, Options{WalkDirs: walkDirs, Previous: &prev, Baseline: bases[walkDirs]})
		if err != nil {
			t.Fatal(err)
		}
		if m.Stats.SkippedFiles == 0 || m.Stats.CopiedFiles == 0 || m.Stats.Deleted == 0 {
			t.Fatalf("WalkDirs=%d: stats %+v: want files kept, copied and deleted", walkDirs, m.Stats)
		}
		// What each kept was written by its own previous copy.
		for i := range m.Entries {
			if m.Entries[i].Origin == prev.ID {
				m.Entries[i].Origin = "previous"
			}
		}
		got[walkDirs] = m
		compareContents(t, contents(t, src), contents(t, dst))
	}
	sameManifest(t, "incremental, parallel walk vs serial", got[1], got[16])
}

// An error in one subtree fails the whole walk: the copy fails with it, the
// other walkers stop, and no manifest is left, over a fresh dst and over a
// complete earlier copy. The errors are a real one (a directory deleted just
// before it is listed) and an injected one.
func TestParallelWalkErrorInOneSubtreeFailsTheCopy(t *testing.T) {
	injected := errors.New("injected listing failure")
	for _, tc := range []struct {
		name string
		at   func(src string) func(point, rel string) error
		want func(error) bool
	}{
		{"deleted-directory", func(src string) func(point, rel string) error {
			return func(point, rel string) error {
				if point == "walk" && rel == "many/dir11/sub2" {
					return os.RemoveAll(filepath.Join(src, rel))
				}
				return nil
			}
		}, func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
		{"injected", func(string) func(point, rel string) error {
			return func(point, rel string) error {
				if point == "walk" && rel == "many/dir07/sub1" {
					return injected
				}
				return nil
			}
		}, func(err error) bool { return errors.Is(err, injected) }},
	} {
		for _, overComplete := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/overComplete=%v", tc.name, overComplete), func(t *testing.T) {
				src := t.TempDir()
				buildWalkTree(t, src)
				dst := filepath.Join(t.TempDir(), "dst")
				if overComplete {
					if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
						t.Fatal(err)
					}
				}
				_, err := Copy(context.Background(), src, dst, Options{WalkDirs: 16, hooks: &hooks{at: tc.at(src)}})
				if err == nil || !tc.want(err) {
					t.Fatalf("copy with a failing subtree: err = %v", err)
				}
				if _, err := Verify(dst); !errors.Is(err, ErrNoManifest) {
					t.Fatalf("Verify after the failed walk = %v, want ErrNoManifest", err)
				}
			})
		}
	}
}

// At most WalkDirs directories are listed at once, and a walk uses that
// many when the tree has them.
func TestParallelWalkIsBounded(t *testing.T) {
	src := t.TempDir()
	for i := range 12 {
		mustWrite(t, filepath.Join(src, fmt.Sprintf("d%02d/sub/f", i)), []byte("x"), 0o644)
	}
	const walkDirs = 4
	var inFlight, most atomic.Int64
	release := make(chan struct{})
	hook := func(point, rel string) error {
		if point != "walk" || rel == "" {
			return nil
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := Copy(context.Background(), src, filepath.Join(t.TempDir(), "dst"), Options{WalkDirs: walkDirs, hooks: &hooks{at: hook}})
		done <- err
	}()
	for deadline := time.Now().Add(time.Minute); inFlight.Load() < walkDirs; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d directories listed at once, never %d", inFlight.Load(), walkDirs)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := most.Load(); m > walkDirs {
		t.Errorf("%d directories listed at once, want at most %d", m, walkDirs)
	}
}

// compareWalkOrder sorts paths as a depth-first walk in name order meets
// them, which is not byte order: "a/c" before "a.b", "a" before "a/b".
func TestCompareWalkOrder(t *testing.T) {
	want := []string{"a", "a/b", "a/c", "a/c/d", "a.b", "a0", "b", "b/\xff"}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortFunc(got, compareWalkOrder)
	if !slices.Equal(got, want) {
		t.Errorf("sorted in walk order: %q, want %q", got, want)
	}
}
