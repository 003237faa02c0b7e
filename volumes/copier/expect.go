package copier

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// expectation is the manifest a restore's source must match, checked by the
// copy itself as it walks and reads the source: the same checks as
// Verify(src), on the same stats and the same bytes, so that the source (on
// EBS, a volume lazily loaded from its snapshot, where every first look at a
// block waits on S3, behind a FUSE round trip in the e2e tier) is walked and
// read once instead of three times (Verify's metadata pass, its hashing pass,
// then the copy's own walk and reads).
//
// What it checks, and where:
//   - the walk: every entry it lists against the manifest's entry of that
//     path (statMismatch: type, mode, device number, file size and mtime),
//     sockets included although they are not copied;
//   - the walk's end: every manifest entry was listed ("missing" otherwise)
//     and every recorded hardlink shares its primary's inode;
//   - the copy: a symlink's target as it is read, and the SHA-256 of each
//     file the manifest records one for, over the bytes as they are copied;
//   - after the copy: a recorded SHA-256 the copy did not compute (a name
//     whose file was copied under another name of its hardlink group) is
//     computed from the source, as Verify would.
//
// Entries the manifest does not list are copied unchecked, as Verify ignores
// them; the manifest of the copy then lists them (it describes the copy).
// A mismatch is a *CorruptError and stops the copy; of the mismatches found
// before it stopped, the first in manifest order is reported.
type expectation struct {
	entries []Entry // sorted by Path (ParseManifest checks it)
	// seen and hashed are per entry: listed by the walk, its checksum
	// computed by the copy.
	seen   []atomic.Bool
	hashed []atomic.Bool

	mu    sync.Mutex
	bad   *CorruptError
	badAt int
}

func newExpectation(m *Manifest) *expectation {
	return &expectation{
		entries: m.Entries,
		seen:    make([]atomic.Bool, len(m.Entries)),
		hashed:  make([]atomic.Bool, len(m.Entries)),
	}
}

// lookup returns the manifest index of rel, or -1 when the manifest does not
// list it. A binary search over the sorted entries: a map would cost a
// million-entry cache another hundred megabytes of the restore Job's memory.
func (x *expectation) lookup(rel string) int {
	p := filepath.ToSlash(rel)
	i, ok := slices.BinarySearchFunc(x.entries, p, func(e Entry, p string) int { return strings.Compare(e.Path, p) })
	if !ok {
		return -1
	}
	return i
}

// mismatch records that entry i does not match and returns the error that
// stops the copy.
func (x *expectation) mismatch(i int, reason string) error {
	err := &CorruptError{Path: x.entries[i].Path, Reason: reason}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.bad == nil || i < x.badAt {
		x.bad, x.badAt = err, i
	}
	return err
}

// failure is the first mismatch in manifest order found so far, or nil.
func (x *expectation) failure() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.bad == nil {
		return nil
	}
	return x.bad
}

// listed checks an entry the walk found, by its lstat.
func (x *expectation) listed(rel string, st *unix.Stat_t) error {
	i := x.lookup(rel)
	if i < 0 {
		return nil
	}
	x.seen[i].Store(true)
	e := &x.entries[i]
	if reason := statMismatch(st, e); reason != "" {
		return x.mismatch(i, reason)
	}
	// A file of one link shares its inode with no other name (and the
	// manifest never links a name to itself).
	if e.Link != "" && st.Nlink < 2 {
		return x.mismatch(i, notHardlink(e))
	}
	return nil
}

// walked checks, once the walk listed everything, that no manifest entry is
// missing and that each recorded hardlink shares its primary's inode. linked
// are the walk's regular files with more than one link: a name sharing an
// inode is one of them, and so is the name it shares it with.
func (x *expectation) walked(linked []job) error {
	inodes := make(map[string][2]uint64, len(linked))
	for _, j := range linked {
		inodes[filepath.ToSlash(j.rel)] = [2]uint64{uint64(j.st.Dev), j.st.Ino} //nolint:unconvert // Dev is 32 bits on some platforms
	}
	for i := range x.entries {
		e := &x.entries[i]
		if !x.seen[i].Load() {
			return x.mismatch(i, "missing")
		}
		if e.Link == "" {
			continue
		}
		a, ok := inodes[e.Path]
		b, okLink := inodes[e.Link]
		if !ok || !okLink || a != b {
			return x.mismatch(i, notHardlink(e))
		}
	}
	return nil
}

// expected returns, for a file the copy is about to write, the manifest
// index of rel when the manifest records its checksum (-1 otherwise), and the
// origin it records ("" when it lists none).
func (x *expectation) expected(rel string) (hashAt int, origin string) {
	i := x.lookup(rel)
	if i < 0 {
		return -1, ""
	}
	if x.entries[i].SHA256 == "" {
		return -1, x.entries[i].Origin
	}
	return i, x.entries[i].Origin
}

// hashedAs checks the SHA-256 the copy computed for entry i.
func (x *expectation) hashedAs(i int, sum string) error {
	x.hashed[i].Store(true)
	if reason := checksumMismatch(sum, &x.entries[i]); reason != "" {
		return x.mismatch(i, reason)
	}
	return nil
}

// symlink checks a symlink's target as the copy read it.
func (x *expectation) symlink(rel, target string) error {
	i := x.lookup(rel)
	if i < 0 {
		return nil
	}
	if reason := targetMismatch(target, &x.entries[i]); reason != "" {
		return x.mismatch(i, reason)
	}
	return nil
}

// unhashed checks the recorded checksums the copy did not compute, reading
// them from src. The manifests Copy writes record none: a hardlink secondary
// carries no checksum, and the walk's primaries are the manifest's.
func (x *expectation) unhashed(src string) error {
	for i := range x.entries {
		e := &x.entries[i]
		if e.SHA256 == "" || x.hashed[i].Load() {
			continue
		}
		reason, err := verifyChecksum(src, e)
		if err != nil {
			return fmt.Errorf("verifying %s: %w", filepath.Join(src, e.Path), err)
		}
		if reason != "" {
			return x.mismatch(i, reason)
		}
	}
	return nil
}
