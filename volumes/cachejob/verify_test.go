package cachejob_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/copier"
)

// savedVolume is a volume holding a complete copy (with manifest) of a small cache of engine
// v0.21.8: a state database, and worker/ unless withoutWorker.
func savedVolume(t *testing.T, withoutWorker bool) string {
	t.Helper()
	src, volume := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "volume")
	files := map[string]string{copier.EngineStateDB: "state"}
	if !withoutWorker {
		files["worker/content/blobs/sha256/aa"] = "layer"
		files["worker/metadata_v2.db"] = "bolt"
	}
	for rel, data := range files {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := copier.Copy(t.Context(), src, volume, copier.Options{EngineVersion: "v0.21.8", Architecture: "amd64", SourceNode: "node-a"}); err != nil {
		t.Fatalf("making a saved volume: %v", err)
	}
	return volume
}

// restored restores a saved volume into a fresh cache dir with restore ID id.
func restored(t *testing.T, id string, withoutWorker bool) string {
	t.Helper()
	cache := filepath.Join(t.TempDir(), "mnt", "dagger")
	o := cachejob.Options{CacheDir: cache, VolumeDir: savedVolume(t, withoutWorker), EngineVersion: "v0.21.8", Architecture: "amd64"}
	res, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: o, RestoreID: id})
	if err != nil || res.Result != volumes.ResultRestored {
		t.Fatalf("restore: %+v, %v", res, err)
	}
	return cache
}

func TestRestoreWritesTheMarker(t *testing.T) {
	for _, tc := range []struct {
		name          string
		withoutWorker bool
	}{
		{"into the restored worker dir", false},
		{"creating worker/ when the cache has none", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := restored(t, "restore-1", tc.withoutWorker)
			data, err := os.ReadFile(filepath.Join(cache, cachejob.RestoreMarker))
			if err != nil || string(data) != "restore-1\n" {
				t.Fatalf("marker %q, %v; want the restore ID", data, err)
			}
			if _, err := os.Stat(filepath.Join(cache, cachejob.RestoreMarker+".tmp")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("temporary marker left behind: %v", err)
			}
			if fi, err := os.Stat(filepath.Join(cache, "worker")); err != nil || !fi.IsDir() {
				t.Errorf("worker/: %v, %v", fi, err)
			}
		})
	}
}

func TestRestoreWithoutAnIDWritesNoMarker(t *testing.T) {
	cache := restored(t, "", false)
	if _, err := os.Stat(filepath.Join(cache, cachejob.RestoreMarker)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("marker written without a restore ID: %v", err)
	}
}

func TestRestoreFailsWhenTheMarkerCannotBeWritten(t *testing.T) {
	// worker/ in the saved cache is a file: the marker has nowhere to go.
	src, volume := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "volume")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "worker"), []byte("not a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := copier.Copy(t.Context(), src, volume, copier.Options{EngineVersion: "v0.21.8", Architecture: "amd64"}); err != nil {
		t.Fatal(err)
	}
	o := cachejob.Options{CacheDir: filepath.Join(t.TempDir(), "dagger"), VolumeDir: volume, EngineVersion: "v0.21.8", Architecture: "amd64"}
	res, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: o, RestoreID: "restore-1"})
	if err == nil || res.Result != volumes.ResultFailed || cachejob.ExitCode(res) != volumes.ExitFailed || !strings.Contains(res.Reason, "writing the restore marker") {
		t.Fatalf("restore %+v, %v; want failed, naming the restore marker", res, err)
	}
}

func TestRestoreRefusesABadIDBeforeCopying(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "dagger")
	o := cachejob.Options{CacheDir: cache, VolumeDir: savedVolume(t, false)}
	for _, id := range []string{"two words", "line\nbreak", strings.Repeat("x", 513)} {
		_, err := cachejob.Restore(t.Context(), cachejob.RestoreOptions{Options: o, RestoreID: id})
		var usage *cachejob.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("restore ID %q: %v, want a usage error", id, err)
		}
	}
	if _, err := os.Stat(cache); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused restore created the cache dir: %v", err)
	}
}

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name string
		// node does what the engine (or something else) did after the restore.
		node   func(t *testing.T, cache string) string // returns the dir to verify
		result string
		reason string
	}{
		{"the engine kept the cache", func(t *testing.T, c string) string { return c }, volumes.ResultWarm, "names this restore"},
		{"the engine wiped it: worker/ deleted and recreated empty", func(t *testing.T, c string) string {
			// What initLocalCacheState does: RemoveAll(worker), remove dagql-cache.db*, then
			// mkdirBaseDirs recreates worker/ (0700).
			must(t, os.RemoveAll(filepath.Join(c, "worker")))
			must(t, os.Remove(filepath.Join(c, copier.EngineStateDB)))
			must(t, os.Mkdir(filepath.Join(c, "worker"), 0o700))
			return c
		}, volumes.ResultWiped, "the engine discarded the restored cache at start: worker/ was reset"},
		{"worker/ gone entirely", func(t *testing.T, c string) string {
			must(t, os.RemoveAll(filepath.Join(c, "worker")))
			return c
		}, volumes.ResultWiped, "worker/ is missing"},
		{"another restore's marker", func(t *testing.T, c string) string {
			must(t, os.WriteFile(filepath.Join(c, cachejob.RestoreMarker), []byte("restore-2\n"), 0o644))
			return c
		}, volumes.ResultWiped, `names restore "restore-2", not "restore-1"`},
		{"an empty marker", func(t *testing.T, c string) string {
			must(t, os.WriteFile(filepath.Join(c, cachejob.RestoreMarker), nil, 0o644))
			return c
		}, volumes.ResultWiped, `names restore "", not "restore-1"`},
		{"no cache dir at all", func(t *testing.T, c string) string {
			must(t, os.RemoveAll(c))
			return c
		}, volumes.ResultWiped, "does not exist"},
		{"a marker that is not a file", func(t *testing.T, c string) string {
			m := filepath.Join(c, cachejob.RestoreMarker)
			must(t, os.Remove(m))
			must(t, os.Mkdir(m, 0o755))
			return c
		}, volumes.ResultFailed, "not a regular file"},
		{"a cache dir that is a file", func(t *testing.T, c string) string {
			f := filepath.Join(t.TempDir(), "file")
			must(t, os.WriteFile(f, nil, 0o644))
			return f
		}, volumes.ResultFailed, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.node(t, restored(t, "restore-1", false))
			res, err := cachejob.Verify(t.Context(), cachejob.VerifyOptions{CacheDir: dir, RestoreID: "restore-1"})
			if res.Result != tc.result || !strings.Contains(res.Reason, tc.reason) {
				t.Fatalf("verify = %+v, want %s with a reason containing %q", res, tc.result, tc.reason)
			}
			if (err == nil) != (tc.result == volumes.ResultWarm) {
				t.Errorf("verify error %v for result %s: only warm has none", err, res.Result)
			}
			want := map[string]int{volumes.ResultWarm: volumes.ExitOK, volumes.ResultWiped: volumes.ExitWiped, volumes.ResultFailed: volumes.ExitFailed}[tc.result]
			if got := cachejob.VerifyExitCode(res); got != want {
				t.Errorf("exit code %d, want %d", got, want)
			}
		})
	}
}

// TestVerifyUnreadableDirIsFailed reads a worker/ that root may not search, as root without
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (uid 0 owns it, but mode 0 denies even the owner):
// the verdict is unknown, so the result is failed, not wiped.
func TestVerifyUnreadableDirIsFailed(t *testing.T) {
	cache := restored(t, "restore-1", false)
	worker := filepath.Join(cache, "worker")
	must(t, os.Chmod(worker, 0))
	t.Cleanup(func() { os.Chmod(worker, 0o755) })
	var (
		res volumes.JobResult
		err error
	)
	withoutDAC(t, func() {
		res, err = cachejob.Verify(t.Context(), cachejob.VerifyOptions{CacheDir: cache, RestoreID: "restore-1"})
	})
	if err == nil || res.Result != volumes.ResultFailed || !strings.Contains(res.Reason, "permission denied") || cachejob.VerifyExitCode(res) != volumes.ExitFailed {
		t.Fatalf("verify of an unreadable worker/ = %+v, %v; want failed, permission denied", res, err)
	}
}

// TestVerifyTheControllersLongestID: the restore controller's ID is the snapshot name (a DNS
// subdomain, up to 253 characters) "@" the node UID.
func TestVerifyTheControllersLongestID(t *testing.T) {
	id := strings.Repeat("s", 253) + "@6c1f0e2a-5b7d-4f3e-9a61-0d2c8b4e7f10"
	cache := restored(t, id, false)
	res, err := cachejob.Verify(t.Context(), cachejob.VerifyOptions{CacheDir: cache, RestoreID: id})
	if err != nil || res.Result != volumes.ResultWarm {
		t.Fatalf("verify with a %d-character ID: %+v, %v; want warm", len(id), res, err)
	}
}

func TestVerifyUsage(t *testing.T) {
	var usage *cachejob.UsageError
	for _, o := range []cachejob.VerifyOptions{{RestoreID: "r"}, {CacheDir: "/x"}, {CacheDir: "/x", RestoreID: "a b"}} {
		res, err := cachejob.Verify(t.Context(), o)
		if !errors.As(err, &usage) || res.Result != volumes.ResultFailed || res.Reason == "" {
			t.Errorf("verify %+v: %+v, %v; want a usage error and a failed result", o, res, err)
		}
	}
}

// withoutDAC runs fn on one OS thread whose effective set lacks CAP_DAC_OVERRIDE and
// CAP_DAC_READ_SEARCH: capabilities are per thread in Linux, and the thread is never handed
// back to the runtime (the goroutine exits locked, so the thread ends with it). fn must not
// start goroutines that do the work elsewhere; Verify does not.
func withoutDAC(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		for _, c := range []int{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("dropping DAC capabilities on a thread: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
