package copier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// saved makes a verified copy, as a save Job leaves on a volume.
func saved(t *testing.T) (src, volume string) {
	t.Helper()
	src = t.TempDir()
	buildFullTree(t, src)
	volume = filepath.Join(t.TempDir(), "volume")
	if _, err := Copy(context.Background(), src, volume, Options{EngineVersion: "v0.21.8", Architecture: "arm64", SourceNode: "old-node"}); err != nil {
		t.Fatal(err)
	}
	return src, volume
}

func oldCache(t *testing.T) (final string, before map[string]node) {
	t.Helper()
	final = filepath.Join(t.TempDir(), "dagger")
	mustWrite(t, filepath.Join(final, "worker/old"), []byte("the cache the node has now"), 0o644)
	return final, snapshot(t, final)
}

func TestRestoreSwapsIntoPlace(t *testing.T) {
	src, volume := saved(t)
	want := snapshot(t, volume)
	for _, existing := range []bool{true, false} {
		name := "final missing"
		if existing {
			name = "final exists"
		}
		t.Run(name, func(t *testing.T) {
			final := filepath.Join(t.TempDir(), "dagger")
			if existing {
				final, _ = oldCache(t)
			}
			staging := filepath.Join(filepath.Dir(final), ".dagger-staging")
			m, err := Restore(context.Background(), volume, staging, final, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if m.EngineVersion != "v0.21.8" || m.Architecture != "arm64" || m.SourceNode != "old-node" {
				t.Errorf("restored manifest lost its provenance: %+v", m)
			}
			compareTrees(t, want, snapshot(t, final), compareOpts{skip: isSocket, ignoreAtime: true})
			compareContents(t, contents(t, src), contents(t, final))
			if _, err := Verify(final); err != nil {
				t.Errorf("restored cache does not verify: %v", err)
			}
			for _, gone := range []string{staging, final + ".warmpool-old"} {
				if _, err := os.Lstat(gone); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind", gone)
				}
			}
		})
	}
}

func TestRestoreRefusesBadVolumes(t *testing.T) {
	_, volume := saved(t)
	cases := map[string]struct {
		prepare func(t *testing.T) string
		opts    Options
		want    error
	}{
		"no manifest": {func(t *testing.T) string {
			v := t.TempDir()
			mustWrite(t, filepath.Join(v, "worker/x"), []byte("x"), 0o644)
			return v
		}, Options{}, ErrNoManifest},
		"corrupt database": {func(t *testing.T) string {
			v := filepath.Join(t.TempDir(), "v")
			if _, err := Copy(context.Background(), volume, v, Options{}); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(v, "worker/metadata_v2.db")
			var st unix.Stat_t
			must(t, unix.Lstat(p, &st))
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			must(t, err)
			f.WriteAt([]byte{0xff, 0xfe}, 100)
			f.Close()
			must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, 0))
			return v
		}, Options{}, ErrCorrupt},
		"other engine version": {func(t *testing.T) string { return volume }, Options{EngineVersion: "v0.22.0"}, ErrIncompatible},
		"other architecture":   {func(t *testing.T) string { return volume }, Options{Architecture: "amd64"}, ErrIncompatible},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v := tc.prepare(t)
			final, before := oldCache(t)
			staging := filepath.Join(filepath.Dir(final), "staging")
			_, err := Restore(context.Background(), v, staging, final, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Restore = %v, want %v", err, tc.want)
			}
			compareTrees(t, before, snapshot(t, final), compareOpts{})
			if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
				t.Error("staging dir created for a volume that was refused")
			}
		})
	}
}

// A copy or a staging verification that fails leaves the current cache
// untouched and gives the staging space back.
func TestRestoreFailureLeavesFinalUntouched(t *testing.T) {
	_, volume := saved(t)
	for _, point := range []string{"file", "dir", "swap"} {
		t.Run(point, func(t *testing.T) {
			final, before := oldCache(t)
			staging := filepath.Join(filepath.Dir(final), "staging")
			_, err := Restore(context.Background(), volume, staging, final, Options{hooks: &hooks{at: func(p, rel string) error {
				if p == point {
					return unix.EIO
				}
				return nil
			}}})
			if !errors.Is(err, unix.EIO) {
				t.Fatalf("Restore = %v, want EIO", err)
			}
			compareTrees(t, before, snapshot(t, final), compareOpts{})
			if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
				t.Error("staging dir left behind")
			}
		})
	}
}

// Leftovers of an interrupted earlier restore do not leak into this one.
func TestRestoreCleansLeftovers(t *testing.T) {
	_, volume := saved(t)
	final, _ := oldCache(t)
	staging := filepath.Join(filepath.Dir(final), "staging")
	mustWrite(t, filepath.Join(staging, "half-copied"), []byte("x"), 0o644)
	mustWrite(t, filepath.Join(final+".warmpool-old", "older"), []byte("x"), 0o644)
	if _, err := Restore(context.Background(), volume, staging, final, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(final, "half-copied")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a stale staging file reached the restored cache")
	}
	if _, err := os.Lstat(final + ".warmpool-old"); !errors.Is(err, os.ErrNotExist) {
		t.Error("old leftover not removed")
	}
}

// RestoreSaved checks the source against the manifest its caller read, not against one it reads
// again: a manifest that no longer describes the volume refuses the restore, and no manifest at
// all is refused before anything is written.
func TestRestoreSavedChecksAgainstTheCallersManifest(t *testing.T) {
	_, volume := saved(t)
	m, err := ReadManifest(volume)
	must(t, err)

	t.Run("matching manifest", func(t *testing.T) {
		final := filepath.Join(t.TempDir(), "dagger")
		got, err := RestoreSaved(context.Background(), volume, &m, filepath.Join(filepath.Dir(final), "staging"), final, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Totals != m.Totals {
			t.Errorf("restored %+v, manifest says %+v", got.Totals, m.Totals)
		}
	})
	t.Run("manifest of another copy", func(t *testing.T) {
		other := m
		other.Entries = append([]Entry(nil), m.Entries...)
		i := slices.IndexFunc(other.Entries, func(e Entry) bool { return e.Type == TypeFile && e.Size > 0 })
		if i < 0 {
			t.Fatal("the saved tree has no non-empty file to misdescribe")
		}
		other.Entries[i].Size++
		final, before := oldCache(t)
		staging := filepath.Join(filepath.Dir(final), "staging")
		_, err := RestoreSaved(context.Background(), volume, &other, staging, final, Options{})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("RestoreSaved = %v, want %v", err, ErrCorrupt)
		}
		compareTrees(t, before, snapshot(t, final), compareOpts{})
		if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
			t.Error("staging dir left behind after a refused restore")
		}
	})
	t.Run("no manifest", func(t *testing.T) {
		final, before := oldCache(t)
		staging := filepath.Join(filepath.Dir(final), "staging")
		if _, err := RestoreSaved(context.Background(), volume, nil, staging, final, Options{}); err == nil {
			t.Fatal("RestoreSaved without a manifest succeeded")
		}
		compareTrees(t, before, snapshot(t, final), compareOpts{})
		if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
			t.Error("staging dir created without a manifest")
		}
	})
}
