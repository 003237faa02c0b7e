package copier

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/engine"
	"warmpool.io/warmpool/volumes/engine/enginetest"
)

// copyFixture copies a testdata engine dir (dagql-cache.db and its WAL, written by real
// SQLite: testdata/sqlite/gen.py) into dir.
func copyFixture(t *testing.T, dir, name string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("testdata/sqlite", name))
	must(t, err)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join("testdata/sqlite", name, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644))
	}
}

// holdLock flocks the engine lock through its own open file description, as a running
// engine in another process (or pod) would.
func holdLock(t *testing.T, dir string) (release func()) {
	t.Helper()
	f, err := enginetest.HoldLock(dir)
	must(t, err)
	return func() { f.Close() }
}

func contract(t *testing.T, name string) engine.Contract {
	t.Helper()
	c, err := engine.ByName(name)
	must(t, err)
	return c
}

// engineState writes what an engine of contract name that stopped as s leaves, plus a
// content blob, so worker/ is not just the bolt files.
func engineState(t *testing.T, name string, s enginetest.State) (string, engine.Contract) {
	t.Helper()
	dir := t.TempDir()
	c := contract(t, name)
	must(t, enginetest.WriteState(dir, c, s))
	mustWrite(t, filepath.Join(dir, "worker/content/blobs/sha256/aa"), []byte("layer"), 0o644)
	return dir, c
}

func truncate(t *testing.T, p string, size int64) {
	t.Helper()
	must(t, os.Truncate(p, size))
}

// The table of on-disk states, per engine contract, and what the save pre-flight says.
func TestCheckCleanShutdownByContract(t *testing.T) {
	const (
		containerd = "worker/containerdmeta.db"
		snapshots  = "worker/snapshots/metadata.db"
	)
	type tc struct {
		contract string
		state    enginetest.State
		mutate   func(t *testing.T, dir string) // after the state is written
		want     error                          // nil: clean
		reason   string                         // in the error
	}
	cases := map[string]tc{
		// v0.19.0 - v0.19.3: no dagql-cache.db, no record: the lock file gone is the proxy.
		"v0.19.0 clean":             {contract: "v0.19.0"},
		"v0.19.0 killed":            {contract: "v0.19.0", state: enginetest.Killed, want: ErrUnclean, reason: "left by a killed engine"},
		"v0.19.0 solver cache torn": {contract: "v0.19.0", mutate: func(t *testing.T, d string) { truncate(t, filepath.Join(d, "cache.db"), 3*4096) }, want: ErrCorruptState, reason: "cache.db is truncated"},
		// A dagql-cache.db the release never reads is left alone.
		"v0.19.0 stray dagql db": {contract: "v0.19.0", mutate: func(t *testing.T, d string) { mustWrite(t, filepath.Join(d, EngineStateDB), []byte("junk"), 0o644) }},

		// v0.19.4 - v0.20.x: dagql-cache.db holds only `calls`; still no record.
		"v0.19.4 clean":         {contract: "v0.19.4"},
		"v0.19.5 clean":         {contract: "v0.19.5"},
		"v0.20 clean":           {contract: "v0.20"},
		"v0.20 killed":          {contract: "v0.20", state: enginetest.Killed, want: ErrUnclean, reason: "left by a killed engine"},
		"v0.20 no dagql db yet": {contract: "v0.20", mutate: func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, EngineStateDB))) }},
		"v0.20 dagql db without calls": {contract: "v0.20", mutate: func(t *testing.T, d string) { must(t, enginetest.WriteFixture(d, "meta16-clean.db")) },
			want: ErrCorruptState, reason: `no table "calls"`},
		"v0.20 dagql db truncated": {contract: "v0.20", mutate: func(t *testing.T, d string) { truncate(t, filepath.Join(d, EngineStateDB), 3*4096) },
			want: ErrCorruptState, reason: "truncated"},
		"v0.20 dagql db not sqlite": {contract: "v0.20", mutate: func(t *testing.T, d string) {
			mustWrite(t, filepath.Join(d, EngineStateDB), []byte(strings.Repeat("not sqlite", 20)), 0o644)
		}, want: ErrCorruptState, reason: "not a SQLite 3 database"},

		// v0.21.x: meta.schema_version "16" and meta.clean_shutdown "1" from a clean Close.
		"v0.21 clean":  {contract: "v0.21"},
		"v0.21 killed": {contract: "v0.21", state: enginetest.Killed, want: ErrUnclean, reason: "left by a killed engine"},
		"v0.21 killed, lock file removed": {contract: "v0.21", state: enginetest.Killed, mutate: func(t *testing.T, d string) {
			must(t, os.Remove(filepath.Join(d, EngineLockFile)))
		}, want: ErrUnclean, reason: `clean_shutdown="0"`},
		"v0.21 no clean_shutdown row": {contract: "v0.21", mutate: func(t *testing.T, d string) { must(t, enginetest.WriteFixture(d, "meta16-noclean.db")) },
			want: ErrUnclean, reason: "no clean_shutdown record"},
		"v0.21 no dagql db": {contract: "v0.21", mutate: func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, EngineStateDB))) },
			want: ErrUnclean, reason: "no clean-shutdown record"},
		"v0.21 schema 17 (written by a newer engine)": {contract: "v0.21", mutate: func(t *testing.T, d string) { must(t, enginetest.WriteFixture(d, "meta17-clean.db")) },
			want: ErrUnclean, reason: "would wipe this cache"},
		"v0.21 dagql db truncated": {contract: "v0.21", mutate: func(t *testing.T, d string) { truncate(t, filepath.Join(d, EngineStateDB), 2*4096) },
			want: ErrCorruptState, reason: "dagql-cache.db"},
		"v0.21 dagql db cut mid-page": {contract: "v0.21", mutate: func(t *testing.T, d string) { truncate(t, filepath.Join(d, EngineStateDB), 5*4096+100) },
			want: ErrCorruptState, reason: "truncated"},
		"v0.21 dagql db without meta": {contract: "v0.21", mutate: func(t *testing.T, d string) { must(t, enginetest.WriteFixture(d, "calls.db")) },
			want: ErrCorruptState, reason: `no table "meta"`},
		// Committed WAL frames are what the engine reads on its next open.
		"v0.21 clean record in the WAL": {contract: "v0.21", mutate: func(t *testing.T, d string) { copyFixture(t, d, "walclean") }},
		"v0.21 dirty record in the WAL": {contract: "v0.21", mutate: func(t *testing.T, d string) { copyFixture(t, d, "walunclean") },
			want: ErrUnclean, reason: `clean_shutdown="0"`},
		// A torn last WAL frame does not count: SQLite discards it too, so the file's "0" holds.
		"v0.21 torn WAL frame": {contract: "v0.21", mutate: func(t *testing.T, d string) {
			copyFixture(t, d, "walclean")
			wal := filepath.Join(d, EngineStateDB+"-wal")
			data, err := os.ReadFile(wal)
			must(t, err)
			data[len(data)-1] ^= 0xff
			must(t, os.WriteFile(wal, data, 0o644))
		}, want: ErrUnclean, reason: `clean_shutdown="0"`},

		// v1.0.0-beta.8+: schema "17".
		"v1.0-beta.8 clean":  {contract: "v1.0-beta.8"},
		"v1.0-beta.8 killed": {contract: "v1.0-beta.8", state: enginetest.Killed, want: ErrUnclean},
		"v1.0-beta.8 schema 16 (written by an older engine)": {contract: "v1.0-beta.8", mutate: func(t *testing.T, d string) { must(t, enginetest.WriteFixture(d, "meta16-clean.db")) },
			want: ErrUnclean, reason: `schema_version="16", but engine v1.0.0-beta.8 - v1.0.0-beta.10 expects "17"`},
		"v1.0-beta.1 clean (schema 16)": {contract: "v1.0-beta.1"},

		// Bolt DBs, whatever the contract: torn, missing, garbage, held open.
		"v0.21 bolt DB truncated to its meta pages": {contract: "v0.21", mutate: func(t *testing.T, d string) { truncate(t, filepath.Join(d, containerd), 2*4096) },
			want: ErrCorruptState, reason: containerd},
		"v0.21 bolt DB cut in half": {contract: "v0.21", mutate: func(t *testing.T, d string) {
			p := filepath.Join(d, snapshots)
			fi, err := os.Stat(p)
			must(t, err)
			truncate(t, p, fi.Size()/2)
		}, want: ErrCorruptState, reason: snapshots},
		"v0.21 bolt DB pages overwritten": {contract: "v0.21", mutate: func(t *testing.T, d string) {
			p := filepath.Join(d, containerd)
			data, err := os.ReadFile(p)
			must(t, err)
			for i := 2 * 4096; i < len(data); i++ {
				data[i] = 0xa5
			}
			must(t, os.WriteFile(p, data, 0o644))
		}, want: ErrCorruptState, reason: containerd},
		"v0.21 bolt DB garbage": {contract: "v0.21", mutate: func(t *testing.T, d string) {
			mustWrite(t, filepath.Join(d, containerd), []byte(strings.Repeat("x", 16384)), 0o644)
		}, want: ErrCorruptState, reason: containerd},
		"v0.21 bolt DB empty": {contract: "v0.21", mutate: func(t *testing.T, d string) { truncate(t, filepath.Join(d, containerd), 0) },
			want: ErrCorruptState, reason: "is empty"},
		"v0.21 bolt DB missing": {contract: "v0.21", mutate: func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "worker/snapshots/metadata.db"))) },
			want: ErrCorruptState, reason: "snapshots/metadata.db is missing"},
		"v0.20 worker metadata missing": {contract: "v0.20", mutate: func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "worker/metadata_v2.db"))) },
			want: ErrCorruptState, reason: "metadata_v2.db is missing"},
		"v0.20 solver cache missing": {contract: "v0.20", mutate: func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "cache.db"))) },
			want: ErrCorruptState, reason: "cache.db is missing"},
		"no worker dir": {contract: "v0.21", mutate: func(t *testing.T, d string) { must(t, os.RemoveAll(filepath.Join(d, "worker"))) },
			want: ErrEmpty, reason: "worker does not exist"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir, c := engineState(t, tc.contract, tc.state)
			if tc.mutate != nil {
				tc.mutate(t, dir)
			}
			before := dirDigest(t, dir)
			err := CheckCleanShutdown(dir, c)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("CheckCleanShutdown = %v, want clean", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("CheckCleanShutdown = %v, want %v", err, tc.want)
			case tc.want != nil && !strings.Contains(err.Error(), tc.reason):
				t.Fatalf("CheckCleanShutdown = %v, want the reason to contain %q", err, tc.reason)
			case errors.Is(err, ErrEngineRunning):
				t.Fatalf("CheckCleanShutdown = %v: nothing holds a lock here", err)
			}
			if after := dirDigest(t, dir); after != before {
				t.Error("the check changed the state dir")
			}
			// Whatever is on disk, a live engine holding the lock wins.
			release := holdLock(t, dir)
			defer release()
			if err := CheckCleanShutdown(dir, c); !errors.Is(err, ErrEngineRunning) {
				t.Fatalf("lock held: %v, want ErrEngineRunning", err)
			}
		})
	}
}

// A bolt DB held open read-write by another process (an engine whose lock file is gone, or
// any other writer) is not copied: its pages may change under the copy.
func TestCheckCleanShutdownBoltDBHeldOpen(t *testing.T) {
	dir, c := engineState(t, "v0.21", enginetest.Clean)
	db, err := bolt.Open(filepath.Join(dir, "worker/containerdmeta.db"), 0o644, nil)
	must(t, err)
	defer db.Close()
	if err := CheckCleanShutdown(dir, c); !errors.Is(err, ErrEngineRunning) || !strings.Contains(err.Error(), "containerdmeta.db") {
		t.Fatalf("CheckCleanShutdown = %v, want ErrEngineRunning naming containerdmeta.db", err)
	}
}

// The check never creates the engine's lock file (the engine would then find it and, before
// v0.21, a later check would take it for a killed engine's).
func TestCheckCleanShutdownCreatesNoLockFile(t *testing.T) {
	dir, c := engineState(t, "v0.19.5", enginetest.Clean)
	if err := CheckCleanShutdown(dir, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, EngineLockFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the check created the engine's lock file: %v", err)
	}
}

// An I/O error reading the state is "unknown": neither clean nor a verdict on the engine.
func TestCheckCleanShutdownUnreadableIsNotAVerdict(t *testing.T) {
	dir, c := engineState(t, "v0.21", enginetest.Clean)
	p := filepath.Join(dir, EngineStateDB)
	must(t, os.Chmod(p, 0))
	err := withoutDACOverride(t, func() error { return CheckCleanShutdown(dir, c) })
	if err == nil || errors.Is(err, ErrUnclean) || errors.Is(err, ErrEngineRunning) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("CheckCleanShutdown = %v, want a permission error that is not ErrUnclean", err)
	}
}

// dirDigest hashes every regular file's path, size and content under dir.
func dirDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Write([]byte(p))
		h.Write(data)
		return nil
	})
	must(t, err)
	return string(h.Sum(nil))
}

// withoutDACOverride runs f on a locked OS thread whose effective capabilities lack
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file modes apply even to root. The thread is
// discarded afterwards (not unlocked), so no other goroutine inherits the reduced set.
func withoutDACOverride(t *testing.T, f func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			ch <- err
			return
		}
		for _, c := range []uint{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			ch <- err
			return
		}
		ch <- f()
	}()
	return <-ch
}
