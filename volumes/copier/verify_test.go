package copier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestVerify(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 30, 21)
	mustWrite(t, filepath.Join(src, "worker/metadata.db"), []byte("bolt bolt bolt bolt"), 0o600)

	fresh := func(t *testing.T) string {
		dst := filepath.Join(t.TempDir(), "dst")
		if _, err := Copy(context.Background(), src, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(dst); err != nil {
			t.Fatalf("fresh copy does not verify: %v", err)
		}
		return dst
	}
	// keepTimes restores a file's times after tampering, as a careless
	// tool (or a bit flip) would leave them.
	keepTimes := func(t *testing.T, p string, tamper func()) {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		tamper()
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
	}

	cases := []struct {
		name     string
		tamper   func(t *testing.T, dst string)
		wantPath string
		want     error
	}{
		{"missing file", func(t *testing.T, dst string) {
			must(t, os.Remove(filepath.Join(dst, manyPath(9))))
		}, manyPath(9), ErrCorrupt},
		{"truncated file", func(t *testing.T, dst string) {
			p := filepath.Join(dst, manyPath(10))
			keepTimes(t, p, func() { must(t, os.Truncate(p, 1)) })
		}, manyPath(10), ErrCorrupt},
		{"checksum mismatch in a .db, same size and mtime", func(t *testing.T, dst string) {
			p := filepath.Join(dst, "worker/metadata.db")
			keepTimes(t, p, func() {
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt([]byte("B"), 0)
				must(t, err)
				f.Close()
			})
		}, "worker/metadata.db", ErrCorrupt},
		{"mode changed", func(t *testing.T, dst string) {
			must(t, os.Chmod(filepath.Join(dst, manyPath(11)), 0o600))
		}, manyPath(11), ErrCorrupt},
		{"file replaced by a directory", func(t *testing.T, dst string) {
			p := filepath.Join(dst, manyPath(12))
			must(t, os.Remove(p))
			must(t, os.Mkdir(p, 0o644))
		}, manyPath(12), ErrCorrupt},
		{"symlink retargeted", func(t *testing.T, dst string) {
			p := filepath.Join(dst, "state-link")
			must(t, os.Remove(p))
			must(t, os.Symlink("elsewhere", p))
		}, "state-link", ErrCorrupt},
		{"hardlink broken", func(t *testing.T, dst string) {
			p := filepath.Join(dst, "state.db")
			keepTimes(t, p, func() {
				data, err := os.ReadFile(p)
				must(t, err)
				must(t, os.Remove(p))
				mustWrite(t, p, data, 0o600)
			})
		}, "state.db", ErrCorrupt},
		{"corrupt manifest JSON", func(t *testing.T, dst string) {
			must(t, os.WriteFile(filepath.Join(dst, ManifestName), []byte(`{"formatVersion":1,"entries":[{"pa`), 0o644))
		}, ManifestName, ErrCorrupt},
		{"manifest escaping the tree", func(t *testing.T, dst string) {
			must(t, os.WriteFile(filepath.Join(dst, ManifestName), []byte(`{"formatVersion":1,"entries":[{"path":"../etc/passwd","type":"file","mode":420}]}`), 0o644))
		}, ManifestName, ErrCorrupt},
		{"unknown format version", func(t *testing.T, dst string) {
			must(t, os.WriteFile(filepath.Join(dst, ManifestName), []byte(`{"formatVersion":2,"entries":[]}`), 0o644))
		}, ManifestName, ErrCorrupt},
		{"no manifest", func(t *testing.T, dst string) {
			must(t, os.Remove(filepath.Join(dst, ManifestName)))
		}, "", ErrNoManifest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := fresh(t)
			tc.tamper(t, dst)
			_, err := Verify(dst)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			var ce *CorruptError
			if tc.wantPath != "" && (!errors.As(err, &ce) || ce.Path != tc.wantPath) {
				t.Fatalf("Verify = %v, want a *CorruptError for %s", err, tc.wantPath)
			}
		})
	}
}

func TestVerifyMissingDir(t *testing.T) {
	if _, err := Verify(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, ErrNoManifest) {
		t.Fatalf("Verify = %v, want ErrNoManifest", err)
	}
}

// TestVerifyReportsTheFirstBadEntry: Verify checks entries in parallel, and still reports the
// first bad one in manifest order, whichever a worker found first; a checksum mismatch is
// reported only when every entry's metadata matched.
func TestVerifyReportsTheFirstBadEntry(t *testing.T) {
	src := t.TempDir()
	buildManyFiles(t, src, 300, 7)
	mustWrite(t, filepath.Join(src, "zz/metadata.db"), []byte("bolt bolt bolt bolt"), 0o600)
	dst := filepath.Join(t.TempDir(), "dst")
	m, err := Copy(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range m.Entries {
		if e.Type == TypeFile && e.Link == "" && e.SHA256 == "" {
			files = append(files, e.Path)
		}
	}
	if len(files) < 200 {
		t.Fatalf("%d files, want at least 200", len(files))
	}
	// A changed database comes last in the manifest; a later entry's damage, then an
	// earlier one's, must each win over it.
	must(t, os.WriteFile(filepath.Join(dst, "zz/metadata.db"), []byte("tlob tlob tlob tlob"), 0o600))
	for _, rel := range []string{files[len(files)-1], files[len(files)/3], files[len(files)/2]} {
		must(t, os.Chmod(filepath.Join(dst, rel), 0o604))
	}
	for range 5 {
		_, err := Verify(dst)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Path != files[len(files)/3] {
			t.Fatalf("Verify = %v, want a *CorruptError for %s, the first bad entry in manifest order", err, files[len(files)/3])
		}
	}
	for _, rel := range []string{files[len(files)-1], files[len(files)/3], files[len(files)/2]} {
		must(t, os.Chmod(filepath.Join(dst, rel), 0o644))
	}
	_, err = Verify(dst)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != "zz/metadata.db" {
		t.Fatalf("Verify = %v, want the database's checksum mismatch once the metadata matches", err)
	}
}
