package copier

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// copyFixture copies a testdata engine dir, so tests can add lock or
// marker files without touching testdata.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(filepath.Join("testdata/sqlite", name))
	must(t, err)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join("testdata/sqlite", name, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644))
	}
	return dir
}

// holdLock flocks the engine lock through its own open file description,
// as a running engine in another process (or pod) would.
func holdLock(t *testing.T, dir string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, EngineLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	must(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	return func() { f.Close() }
}

func TestCheckCleanShutdownMarkerFile(t *testing.T) {
	dir := t.TempDir()
	if err := CheckCleanShutdown(dir, ""); !errors.Is(err, ErrUnclean) {
		t.Fatalf("no marker: %v, want ErrUnclean", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, EngineLockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the check created the engine's lock file")
	}
	mustWrite(t, filepath.Join(dir, DefaultCleanShutdownMarker), nil, 0o644)
	if err := CheckCleanShutdown(dir, ""); err != nil {
		t.Fatalf("marker present: %v", err)
	}
	if err := CheckCleanShutdown(dir, "custom-marker"); !errors.Is(err, ErrUnclean) {
		t.Fatalf("custom marker missing: %v, want ErrUnclean", err)
	}
	must(t, os.Mkdir(filepath.Join(dir, "dir-marker"), 0o755))
	if err := CheckCleanShutdown(dir, "dir-marker"); !errors.Is(err, ErrUnclean) {
		t.Fatalf("directory as marker: %v, want ErrUnclean", err)
	}

	release := holdLock(t, dir)
	if err := CheckCleanShutdown(dir, ""); !errors.Is(err, ErrEngineRunning) {
		t.Fatalf("lock held: %v, want ErrEngineRunning", err)
	}
	release()
	// An engine that exited without deleting its lock file: not running.
	if err := CheckCleanShutdown(dir, ""); err != nil {
		t.Fatalf("lock file present but free: %v", err)
	}
}

// The engine's real marker: meta.clean_shutdown in dagql-cache.db, written
// by real SQLite (testdata/sqlite/gen.py).
func TestCheckCleanShutdownEngineDB(t *testing.T) {
	cases := []struct {
		fixture string
		want    error
	}{
		{"clean", nil},
		{"unclean", ErrUnclean},
		{"nokey", ErrUnclean},
		{"rowid", nil},
		{"big", nil},
		{"walclean", nil},          // the file says 0, a committed WAL frame says 1
		{"walunclean", ErrUnclean}, // the file says 1, a committed WAL frame says 0
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			dir := copyFixture(t, tc.fixture)
			if err := CheckCleanShutdown(dir, ""); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("CheckCleanShutdown = %v, want %v", err, tc.want)
			}
			// A marker file does not override what the engine will read.
			mustWrite(t, filepath.Join(dir, DefaultCleanShutdownMarker), nil, 0o644)
			if err := CheckCleanShutdown(dir, ""); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("with a marker file: %v, want %v", err, tc.want)
			}
			release := holdLock(t, dir)
			defer release()
			if err := CheckCleanShutdown(dir, ""); !errors.Is(err, ErrEngineRunning) {
				t.Fatalf("lock held: %v, want ErrEngineRunning", err)
			}
		})
	}
}

// A torn last WAL frame (bad checksum) does not count: SQLite would discard
// it, so the database file's own value ("0") applies.
func TestCheckCleanShutdownTornWAL(t *testing.T) {
	dir := copyFixture(t, "walclean")
	wal := filepath.Join(dir, EngineStateDB+"-wal")
	data, err := os.ReadFile(wal)
	must(t, err)
	data[len(data)-1] ^= 0xff
	must(t, os.WriteFile(wal, data, 0o644))
	if err := CheckCleanShutdown(dir, ""); !errors.Is(err, ErrUnclean) {
		t.Fatalf("CheckCleanShutdown = %v, want ErrUnclean", err)
	}
}

// An unreadable database is "unknown", not "unclean": a distinct error.
func TestCheckCleanShutdownGarbageDB(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, EngineStateDB), []byte(strings.Repeat("not sqlite", 20)), 0o644)
	err := CheckCleanShutdown(dir, "")
	if err == nil || errors.Is(err, ErrUnclean) || errors.Is(err, ErrEngineRunning) {
		t.Fatalf("CheckCleanShutdown = %v, want a plain read error", err)
	}
}
