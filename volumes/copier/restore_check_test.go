package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Restore checks its source against the source's manifest while it copies it (see
// expectation) instead of in a Verify pass before: each class of damage Verify(src) catches
// must still refuse the restore, with Verify's path and reason, leaving the current cache
// as it was and no staging copy behind.
func TestRestoreRefusesDamageFoundWhileCopying(t *testing.T) {
	_, volume := saved(t)
	// keepTimes puts a path's times back after tampering, so only what the
	// case names differs from the manifest.
	keepTimes := func(t *testing.T, p string, tamper func()) {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		tamper()
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
	}
	cases := []struct {
		name     string
		saveOpts Options
		tamper   func(t *testing.T, v string)
		wantPath string
		// wantReason is a part of the reason, which must also be Verify's.
		wantReason string
	}{
		{"changed database byte, same size and mtime", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "worker/metadata_v2.db")
			keepTimes(t, p, func() { flipByte(t, p, 100) })
		}, "worker/metadata_v2.db", "sha256"},
		{"changed byte of a sparse database's data", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "worker/sparse.db")
			keepTimes(t, p, func() { flipByte(t, p, 8<<20) })
		}, "worker/sparse.db", "sha256"},
		{"changed byte of a file hashed by the save's own glob", Options{ChecksumGlobs: []string{"*.txt"}}, func(t *testing.T, v string) {
			p := filepath.Join(v, "a/regular.txt")
			keepTimes(t, p, func() { flipByte(t, p, 7) })
		}, "a/regular.txt", "sha256"},
		{"missing file", Options{}, func(t *testing.T, v string) {
			must(t, os.Remove(filepath.Join(v, "a/regular.txt")))
		}, "a/regular.txt", "missing"},
		{"missing directory", Options{}, func(t *testing.T, v string) {
			must(t, os.RemoveAll(filepath.Join(v, "d0700")))
		}, "d0700", "missing"},
		{"changed mode", Options{}, func(t *testing.T, v string) {
			must(t, os.Chmod(filepath.Join(v, "a/empty"), 0o644))
		}, "a/empty", "mode 0644, manifest says 0600"},
		{"changed directory mode", Options{}, func(t *testing.T, v string) {
			must(t, os.Chmod(filepath.Join(v, "d0755"), 0o750))
		}, "d0755", "mode 0750, manifest says 0755"},
		{"changed size", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "large.bin")
			keepTimes(t, p, func() { must(t, os.Truncate(p, 1<<20)) })
		}, "large.bin", "size 1048576"},
		{"changed mtime", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "a/setuid-bin")
			var st unix.Stat_t
			must(t, unix.Lstat(p, &st))
			st.Mtim.Nsec = (st.Mtim.Nsec + 1) % 1e9
			must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, 0))
		}, "a/setuid-bin", "mtime"},
		{"file replaced by a directory", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "a/regular.txt")
			must(t, os.Remove(p))
			must(t, os.Mkdir(p, 0o644))
		}, "a/regular.txt", "is a dir, manifest says file"},
		{"file replaced by a socket", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "d0755/f")
			must(t, os.Remove(p))
			// mknod, not a listener: a socket's path must fit in 108
			// bytes, and the subtest's temp dir does not.
			must(t, unix.Mknod(p, unix.S_IFSOCK|0o644, 0))
		}, "d0755/f", "is a socket, manifest says file"},
		{"directory replaced by a symlink to a copy of it", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "c")
			must(t, os.Rename(p, filepath.Join(v, "c-moved")))
			must(t, os.Symlink("c-moved", p))
		}, "c", "is a symlink, manifest says dir"},
		{"symlink retargeted", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "links/rel")
			must(t, os.Remove(p))
			must(t, os.Symlink("../a/empty", p))
		}, "links/rel", `symlink target "../a/empty"`},
		{"hardlink broken", Options{}, func(t *testing.T, v string) {
			p := filepath.Join(v, "b/hard2")
			keepTimes(t, p, func() {
				data, err := os.ReadFile(p)
				must(t, err)
				must(t, os.Remove(p))
				mustWrite(t, p, data, 0o640)
			})
		}, "b/hard2", "not a hardlink of a/hard1"},
		{"hardlink of a group of three moved to another inode", Options{}, func(t *testing.T, v string) {
			// c/tri2 now shares an inode, but not its primary's.
			p := filepath.Join(v, "c/tri2")
			keepTimes(t, p, func() {
				data, err := os.ReadFile(p)
				must(t, err)
				must(t, os.Remove(p))
				mustWrite(t, p, data, 0o644)
				must(t, os.Link(p, filepath.Join(v, "c/tri2-extra")))
			})
		}, "c/tri2", "not a hardlink of a/tri3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := filepath.Join(t.TempDir(), "v")
			if _, err := Copy(context.Background(), volume, v, tc.saveOpts); err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, v)
			assertRefused(t, v, tc.wantPath, tc.wantReason)
		})
	}
}

// A checksum recorded for a name the copy does not read (a hardlink secondary: Copy
// never records one, but a manifest may) is still checked, from the source, as Verify does.
func TestRestoreChecksSecondaryChecksums(t *testing.T) {
	_, volume := saved(t)
	v := filepath.Join(t.TempDir(), "v")
	m, err := Copy(context.Background(), volume, v, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(v, "b/hard2")
	data, err := os.ReadFile(p)
	must(t, err)
	sum := sha256.Sum256(data)
	found := false
	for i := range m.Entries {
		if m.Entries[i].Path == "b/hard2" {
			if m.Entries[i].Link != "a/hard1" {
				t.Fatalf("b/hard2 is %+v, want a hardlink of a/hard1", m.Entries[i])
			}
			m.Entries[i].SHA256 = hex.EncodeToString(sum[:])
			found = true
		}
	}
	if !found {
		t.Fatal("no b/hard2 in the manifest")
	}
	must(t, writeManifest(v, &m, nil))
	if _, err := Verify(v); err != nil {
		t.Fatalf("the edited manifest does not verify before any damage: %v", err)
	}
	// Through the primary, so the inode is shared still and only the bytes differ.
	var st unix.Stat_t
	primary := filepath.Join(v, "a/hard1")
	must(t, unix.Lstat(primary, &st))
	flipByte(t, primary, 0)
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, primary, []unix.Timespec{st.Atim, st.Mtim}, 0))
	assertRefused(t, v, "b/hard2", "sha256")
}

// Entries the manifest does not list are copied unchecked, as before (Verify ignores them),
// and the restored copy's manifest lists them: it describes what was restored.
func TestRestoreCopiesExtraEntries(t *testing.T) {
	_, volume := saved(t)
	v := filepath.Join(t.TempDir(), "v")
	if _, err := Copy(context.Background(), volume, v, Options{}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(v, "a/extra"), []byte("not in the manifest"), 0o644)
	final, _ := oldCache(t)
	staging := filepath.Join(filepath.Dir(final), "staging")
	m, err := Restore(context.Background(), v, staging, final, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(final, "a/extra")); err != nil || string(got) != "not in the manifest" {
		t.Errorf("extra file restored as %q, %v", got, err)
	}
	if newExpectation(&m).lookup("a/extra") < 0 {
		t.Error("the restored manifest does not list the extra file")
	}
	if _, err := Verify(final); err != nil {
		t.Errorf("restored cache does not verify: %v", err)
	}
}

// assertRefused restores v over a current cache and asserts the restore is refused for
// wantPath with a reason holding wantReason, the same as Verify(v)'s, and leaves the cache
// untouched and no staging dir.
func assertRefused(t *testing.T, v, wantPath, wantReason string) {
	t.Helper()
	_, verr := Verify(v)
	var vce *CorruptError
	if !errors.As(verr, &vce) || vce.Path != wantPath || !strings.Contains(vce.Reason, wantReason) {
		t.Fatalf("Verify = %v, want a *CorruptError for %s (%s): the case damages the wrong thing", verr, wantPath, wantReason)
	}
	final, before := oldCache(t)
	staging := filepath.Join(filepath.Dir(final), "staging")
	_, err := Restore(context.Background(), v, staging, final, Options{})
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
		t.Fatalf("Restore = %v, want a *CorruptError", err)
	}
	if ce.Path != vce.Path || ce.Reason != vce.Reason {
		t.Errorf("Restore refused %s (%s), Verify %s (%s): want the same", ce.Path, ce.Reason, vce.Path, vce.Reason)
	}
	if !strings.Contains(err.Error(), "refusing to restore from "+v) {
		t.Errorf("Restore = %v, want it to say it refuses the volume", err)
	}
	compareTrees(t, before, snapshot(t, final), compareOpts{})
	if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging dir left behind: %v", err)
	}
}

func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	must(t, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	must(t, err)
}
