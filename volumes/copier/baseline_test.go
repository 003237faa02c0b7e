package copier

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// baselineNow is BaselineNow for a tree the test has just copied into m.
func baselineNow(tb testing.TB, m *Manifest) *Baseline {
	tb.Helper()
	b, err := BaselineNow(tb.TempDir(), m)
	if err != nil {
		tb.Fatal(err)
	}
	return &b
}

// nodeTree writes a small engine-like tree whose file sizes and mtimes do not depend on
// content, as two nodes' trees share them: containerd numbers snapshots per node, and
// reproducibly built layers carry a fixed mtime.
func nodeTree(t *testing.T, root, content string) {
	t.Helper()
	mtime := time.Unix(1700000000, 0)
	for i := range 6 {
		p := filepath.Join(root, "snapshots", fmt.Sprint(i), "fs", "app")
		mustWrite(t, p, []byte(fmt.Sprintf("%s-%d", content, i)), 0o644)
		setMtime(t, p, mtime, mtime)
	}
}

func entryOf(m Manifest, path string) Entry {
	for _, e := range m.Entries {
		if e.Path == path {
			return e
		}
	}
	return Entry{}
}

// An incremental save onto a copy of another node's tree copies every file whose bytes it
// cannot vouch for, although sizes and mtimes are equal: what CI stop 26's chaos run restored
// (another node's workerid and databases under a node's own snapshot numbers) when they were
// trusted.
func TestIncrementalCopyOfAnotherTreeCopiesEqualSizesAndMtimes(t *testing.T) {
	nodeA, nodeB := t.TempDir(), t.TempDir()
	nodeTree(t, nodeA, "node-a")
	nodeTree(t, nodeB, "node-b")
	vol := filepath.Join(t.TempDir(), "vol")
	mA, err := Copy(context.Background(), nodeA, vol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// B's own earlier copy gives a baseline whose origins are not the volume's.
	mB0, err := Copy(context.Background(), nodeB, filepath.Join(t.TempDir(), "b0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, base := range map[string]*Baseline{"no baseline": nil, "baseline of other origins": baselineNow(t, &mB0)} {
		t.Run(name, func(t *testing.T) {
			prev, err := ReadManifest(vol)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Copy(context.Background(), nodeB, vol, Options{Previous: &prev, Baseline: base})
			if err != nil {
				t.Fatal(err)
			}
			if m.Stats.SkippedFiles != 0 {
				t.Errorf("skipped %d files, want every file copied", m.Stats.SkippedFiles)
			}
			compareContents(t, contents(t, nodeB), contents(t, vol))
			// Put A's copy back for the next case.
			if _, err := Copy(context.Background(), nodeA, vol, Options{}); err != nil {
				t.Fatal(err)
			}
		})
	}
	if mA.ID == "" || mA.ID == mB0.ID || entryOf(mA, "snapshots/0/fs/app").Origin != mA.ID {
		t.Errorf("copies' IDs %q and %q, A's entry origin %q: want distinct IDs, origin the copy's", mA.ID, mB0.ID, entryOf(mA, "snapshots/0/fs/app").Origin)
	}
}

// After a restore, the next save leaves alone the files untouched since the restore whose
// volume entry has the origin the restore wrote them from, and copies the rest: a file
// rewritten in place with its size and mtime put back, a file whose mode changed and changed
// back, and a new file.
func TestIncrementalSaveAfterRestoreSkipsUntouchedFiles(t *testing.T) {
	nodeA := t.TempDir()
	nodeTree(t, nodeA, "node-a")
	vol := filepath.Join(t.TempDir(), "vol")
	mA, err := Copy(context.Background(), nodeA, vol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "dagger")
	if _, err := Restore(context.Background(), vol, cache+".staging", cache, Options{}); err != nil {
		t.Fatal(err)
	}
	base, err := ReadBaseline(cache)
	if err != nil {
		t.Fatal(err)
	}
	if o := entryOf(*base.Manifest, "snapshots/0/fs/app").Origin; o != mA.ID {
		t.Fatalf("the restore's manifest gives origin %q, want the save's %q", o, mA.ID)
	}
	rewritten, chmodded := filepath.Join(cache, "snapshots/1/fs/app"), filepath.Join(cache, "snapshots/2/fs/app")
	fi, err := os.Stat(rewritten)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, rewritten, []byte("node-b-1"), 0o644)
	setMtime(t, rewritten, fi.ModTime(), fi.ModTime())
	must(t, os.Chmod(chmodded, 0o600))
	must(t, os.Chmod(chmodded, 0o644))
	mustWrite(t, filepath.Join(cache, "snapshots/6/fs/app"), []byte("node-b-6"), 0o644)

	prev, err := ReadManifest(vol)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Copy(context.Background(), cache, vol, Options{Previous: &prev, Baseline: &base})
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats.SkippedFiles != 4 || m.Stats.CopiedFiles != 3 {
		t.Errorf("skipped %d and copied %d files, want the 4 untouched ones skipped and 3 copied", m.Stats.SkippedFiles, m.Stats.CopiedFiles)
	}
	compareContents(t, contents(t, cache), contents(t, vol))
	if o := entryOf(m, "snapshots/0/fs/app").Origin; o != mA.ID {
		t.Errorf("a skipped file's origin %q, want the save that wrote it, %q", o, mA.ID)
	}
	if o := entryOf(m, "snapshots/1/fs/app").Origin; o != m.ID {
		t.Errorf("a copied file's origin %q, want this copy's %q", o, m.ID)
	}
}
