package nodesim

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/copier"
	"warmpool.io/warmpool/volumes/engine"
)

// startEngine runs the engine's start on dir as nodesim does for a pod (lock, then the cache),
// without a cluster.
func startEngine(t *testing.T, dir string, c engine.Contract) (*engineProc, startVerdict, diskState) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, engine.LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("locking: %v", err)
	}
	p := &engineProc{dir: dir, contract: c, node: "node-a", lock: lock}
	v, st, err := openCache(p)
	if err != nil {
		p.release()
		t.Fatal(err)
	}
	t.Cleanup(p.release)
	return p, v, st
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestV021LifecycleOnDisk: the v0.21 engine's start, graceful stop, kill and restart, seen
// on disk and through warmpool's own clean-shutdown check (volumes/copier).
func TestV021LifecycleOnDisk(t *testing.T) {
	c := contract(t, "v0.21.8")
	dir := t.TempDir()
	p, v, st := startEngine(t, dir, c)
	if v.scope != keepAll || st.snapshots != 0 {
		t.Fatalf("first start: verdict %+v, %d snapshots found; want a plain cold start", v, st.snapshots)
	}
	for _, rel := range append(append([]string{}, c.BoltDBs...), engine.DagqlFile, workerID, secretSalt, engine.LockFile) {
		if !exists(t, filepath.Join(dir, rel)) {
			t.Errorf("%s missing after the start", rel)
		}
	}
	opaque := make([]byte, 8)
	n, err := unix.Getxattr(filepath.Join(dir, snapshotsDir, "2/fs/var/cache/apk"), xattrOpaque, opaque)
	if err != nil || string(opaque[:n]) != "y" {
		t.Errorf("opaque dir xattr %s = %q (%v), want y", xattrOpaque, opaque[:max(n, 0)], err)
	}
	var whiteout unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, snapshotsDir, "2/fs/etc/os-release"), &whiteout); err != nil ||
		whiteout.Mode&unix.S_IFMT != unix.S_IFCHR || whiteout.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d (%v), want a 0/0 character device", whiteout.Mode, whiteout.Rdev, err)
	}
	if err := copier.CheckCleanShutdown(dir, c); !errors.Is(err, copier.ErrEngineRunning) {
		t.Errorf("while running, CheckCleanShutdown = %v, want ErrEngineRunning", err)
	}
	salt, _ := os.ReadFile(filepath.Join(dir, secretSalt))

	// Killed: the lock is dropped, the file stays, the log says clean_shutdown "0".
	p.release()
	if !exists(t, filepath.Join(dir, engine.LockFile)) {
		t.Error("a killed engine's lock file is gone")
	}
	if err := copier.CheckCleanShutdown(dir, c); !errors.Is(err, copier.ErrUnclean) {
		t.Errorf("after a kill, CheckCleanShutdown = %v, want ErrUnclean", err)
	}
	p, v, _ = startEngine(t, dir, c)
	if v.reason != WipeUncleanShutdown {
		t.Fatalf("start after a kill: verdict %+v, want %s", v, WipeUncleanShutdown)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, secretSalt)); !bytes.Equal(got, salt) {
		t.Error("the wipe replaced secret-salt; the engine keeps it")
	}

	// Graceful stop: clean_shutdown "1", the lock file deleted; the next start keeps it all.
	if err := p.exit(); err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(dir, engine.LockFile)) || exists(t, filepath.Join(dir, engine.DagqlFile+"-wal")) {
		t.Error("a graceful stop left the lock file or the write-ahead log")
	}
	if err := copier.CheckCleanShutdown(dir, c); err != nil {
		t.Errorf("after a graceful stop, CheckCleanShutdown = %v, want nil", err)
	}
	origin, _ := os.ReadFile(filepath.Join(dir, executorOrigin))
	p, v, st = startEngine(t, dir, c)
	if v.scope != keepAll || st.snapshots != 3 || st.dagql.entries != 3 {
		t.Fatalf("start after a graceful stop: verdict %+v, %d snapshots, %d results; want all kept", v, st.snapshots, st.dagql.entries)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, executorOrigin)); !bytes.Equal(got, origin) {
		t.Error("a kept cache was rewritten")
	}
	if err := p.exit(); err != nil {
		t.Fatal(err)
	}

	// dagger#13952: a clean record, but a leased snapshot is missing.
	if err := os.RemoveAll(filepath.Join(dir, snapshotsDir, "3")); err != nil {
		t.Fatal(err)
	}
	if err := copier.CheckCleanShutdown(dir, c); err != nil {
		t.Fatalf("the record is clean, CheckCleanShutdown = %v", err)
	}
	p, v, _ = startEngine(t, dir, c)
	if v.reason != WipeImportFailure || !strings.Contains(v.detail, "3") {
		t.Fatalf("start with a missing leased snapshot: verdict %+v, want %s naming snapshot 3", v, WipeImportFailure)
	}
	if err := p.exit(); err != nil {
		t.Fatal(err)
	}

	// A torn bolt DB.
	if err := os.WriteFile(filepath.Join(dir, c.BoltDBs[0]), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, v, _ = startEngine(t, dir, c)
	if v.reason != WipeBoltInit || !v.corruptDBReset {
		t.Fatalf("start on a torn bolt DB: verdict %+v, want %s", v, WipeBoltInit)
	}
}

// TestV019KilledCacheIsReused: before v0.21 nothing records a clean exit, so a killed
// engine's cache (lock file left) is reused; only a torn bolt DB wipes, and then everything.
func TestV019KilledCacheIsReused(t *testing.T) {
	c := contract(t, "v0.19.7")
	dir := t.TempDir()
	p, _, _ := startEngine(t, dir, c)
	for _, rel := range append(append([]string{}, c.BoltDBs...), engine.DagqlFile) {
		if !exists(t, filepath.Join(dir, rel)) {
			t.Errorf("%s missing after the start", rel)
		}
	}
	salt, _ := os.ReadFile(filepath.Join(dir, secretSalt))
	p.release()
	if !exists(t, filepath.Join(dir, engine.LockFile)) {
		t.Fatal("a killed engine's lock file is gone")
	}
	if err := copier.CheckCleanShutdown(dir, c); !errors.Is(err, copier.ErrUnclean) {
		t.Errorf("after a kill, CheckCleanShutdown = %v, want ErrUnclean (the lock file is the only proxy)", err)
	}
	p, v, st := startEngine(t, dir, c)
	if v.scope != keepAll || st.snapshots != 3 {
		t.Fatalf("start after a kill: verdict %+v, %d snapshots; want the cache reused", v, st.snapshots)
	}
	if err := p.exit(); err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(dir, engine.LockFile)) {
		t.Error("a graceful stop left the lock file")
	}
	if err := copier.CheckCleanShutdown(dir, c); err != nil {
		t.Errorf("after a graceful stop, CheckCleanShutdown = %v, want nil", err)
	}
	if err := os.Truncate(filepath.Join(dir, "worker/metadata_v2.db"), 100); err != nil {
		t.Fatal(err)
	}
	_, v, _ = startEngine(t, dir, c)
	if v.scope != wipeRoot || !v.corruptDBReset {
		t.Fatalf("start on a torn bolt DB: verdict %+v, want the whole root wiped", v)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, secretSalt)); bytes.Equal(got, salt) {
		t.Error("secret-salt survived a pre-v0.21 bolt reset, which removes every root entry")
	}
}

// TestDagqlDBIsRealSQLite: the files nodesim writes open in SQLite itself, which replays the
// write-ahead log exactly as the engine's SQLite would.
func TestDagqlDBIsRealSQLite(t *testing.T) {
	sqlite, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Fatalf("this test checks nodesim's files with the sqlite3 CLI: %v", err)
	}
	query := func(db string, sql ...string) string {
		t.Helper()
		out, err := exec.Command(sqlite, append([]string{db}, sql...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sqlite3 %v: %v: %s", sql, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		version, running, stopped string
	}{
		{"v0.20.8", "3", "3"},
		{"v0.21.8", "16|0|3", "16|1|3"},
		{"v1.0.0-beta.10", "17|0|3", "17|1|3"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			c := contract(t, tc.version)
			snaps := []string{"1", "2", "3"}
			sql := "SELECT count(*) FROM calls"
			if c.DagqlDB == engine.DagqlMeta {
				sql = "SELECT (SELECT value FROM meta WHERE key='schema_version'), (SELECT value FROM meta WHERE key='clean_shutdown'), (SELECT count(*) FROM results JOIN result_snapshot_links ON id = result_id)"
			}
			st := freshDagql(c, snaps)
			for _, running := range []bool{true, false} {
				dir := t.TempDir()
				if err := writeDagql(dir, c, st, running); err != nil {
					t.Fatal(err)
				}
				// nodesim's own reader first: sqlite3 checkpoints the log away on close.
				back := readDagql(filepath.Join(dir, engine.DagqlFile), c)
				if back.err != nil || back.entries != 3 {
					t.Fatalf("read back: %+v", back)
				}
				db := filepath.Join(dir, engine.DagqlFile)
				if got := query(db, "PRAGMA integrity_check"); got != "ok" {
					t.Errorf("integrity_check: %s", got)
				}
				want := map[bool]string{true: tc.running, false: tc.stopped}[running]
				if got := query(db, sql); got != want {
					t.Errorf("running=%v: %s = %q, want %q", running, sql, got, want)
				}
			}
		})
	}
}
