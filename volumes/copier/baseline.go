package copier

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Baseline is what an incremental copy knows the source tree to hold without
// reading it: the manifest of the copy that last wrote the tree (a restore
// leaves its manifest at the tree's root) and the change time before which
// a file of the tree is still as that copy left it.
//
// Size and mtime alone cannot say that a source file equals its Previous
// entry: the Previous copy was saved from another node, and two nodes write
// files at the same paths (containerd numbers its snapshots per node) with
// the same sizes and, for reproducibly built images (SOURCE_DATE_EPOCH, ko,
// apko), the same mtimes, but other bytes. A file is left alone only when it
// is untouched since the restore (its ctime, which no user can set, is
// earlier than Before) and the restore wrote it from the same Origin as the
// Previous entry: then both are the bytes that one save wrote.
type Baseline struct {
	Manifest *Manifest
	// Before is a change time the kernel stamped after the copy ended: any
	// later change to a file stamps its ctime with this time or a later one.
	Before time.Time
}

// ReadBaseline reads the manifest a restore left at the root of dir, and
// takes the manifest file's own change time as Before: a copy publishes its
// manifest with a ctime later than that of every file it wrote (see
// ctimeAfter). ErrNoManifest when dir holds none.
func ReadBaseline(dir string) (Baseline, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return Baseline{}, err
	}
	var st unix.Stat_t
	p := filepath.Join(dir, ManifestName)
	if err := unix.Lstat(p, &st); err != nil {
		return Baseline{}, fmt.Errorf("stat %s: %w", p, err)
	}
	return Baseline{Manifest: &m, Before: time.Unix(0, st.Ctim.Nano())}, nil
}

// BaselineNow is the Baseline of a tree that is, right now, as m describes
// it: the source of the copy that wrote m, say, unchanged since. It waits
// for the clock that stamps ctimes to move past the present, on a temporary
// file it makes in dir (which should be on the tree's filesystem), so that
// any file changed from here on has a ctime no earlier than Before.
func BaselineNow(dir string, m *Manifest) (Baseline, error) {
	f, err := os.CreateTemp(dir, ".warmpool-baseline-*")
	if err != nil {
		return Baseline{}, fmt.Errorf("making a baseline: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Baseline{}, fmt.Errorf("making a baseline: stat %s: %w", f.Name(), err)
	}
	before, err := ctimeAfter(f, st.Ctim.Nano())
	if err != nil {
		return Baseline{}, fmt.Errorf("making a baseline: %w", err)
	}
	return Baseline{Manifest: m, Before: time.Unix(0, before)}, nil
}

// asWritten reports whether the source file or symlink e (with stat st) is
// still what the save named origin wrote: its bytes or target, and for both
// its extended attributes, which change its ctime too.
func (b *Baseline) asWritten(e *Entry, st *unix.Stat_t, origin string) bool {
	if b == nil || b.Manifest == nil || origin == "" || st.Ctim.Nano() >= b.Before.UnixNano() {
		return false
	}
	entries := b.Manifest.Entries
	i, ok := slices.BinarySearchFunc(entries, e.Path, func(x Entry, p string) int { return strings.Compare(x.Path, p) })
	if !ok {
		return false
	}
	r := &entries[i]
	return (r.Type == TypeFile || r.Type == TypeSymlink) && r.Type == e.Type && r.Link == "" && r.Origin == origin &&
		r.Size == e.Size && r.Target == e.Target && r.MtimeNs == e.MtimeNs && r.Mode == e.Mode && r.UID == e.UID && r.GID == e.GID
}

// newCopyID returns a random ID for a copy's manifest (crypto/rand.Read
// never fails).
func newCopyID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
