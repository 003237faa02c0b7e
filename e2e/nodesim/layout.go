package nodesim

// What a real Dagger Engine release leaves in its state dir (/var/lib/dagger), per contract
// (volumes/engine): the bolt DBs it opens at start, dagql-cache.db in that release's shape,
// overlay snapshots with the engine's opaque-directory xattr and whiteouts, a content store,
// worker/workerid and secret-salt. Facts from dagger/dagger: engine/server/server.go (paths,
// initBoltDBs, initLocalCacheState, secret-salt), dagql/db/schema.sql (v0.19.4 - v0.20: calls),
// dagql/persistdb/schema.sql (v0.21+: meta, results, result_snapshot_links),
// internal/buildkit/snapshot/diffapply_linux.go (trusted.overlay.opaque).

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/engine"
)

const (
	// snapshotsDir holds the overlay snapshotter's snapshots, one dir per id with fs/ and work/.
	snapshotsDir = "worker/snapshots/snapshots"
	// xattrOpaque marks an overlay directory whose lower layers are hidden; the engine sets it
	// with value "y" (diffapply_linux.go). Only a process with CAP_SYS_ADMIN sees or sets it.
	xattrOpaque = "trusted.overlay.opaque"
	secretSalt  = "secret-salt"
	workerID    = "worker/workerid"
	// executorOrigin names the node whose engine built the cache (not an engine file: tests
	// use it to tell a restored cache from a fresh one).
	executorOrigin = "worker/executor/origin"
)

// The tables of dagql-cache.db that nodesim models, declared as the release declares them
// (sqlite_schema stores the statement without IF NOT EXISTS). v0.21+ has more tables
// (eq_classes, terms, ...); they stay out, since nothing warmpool reads depends on them.
const (
	ddlCalls    = "CREATE TABLE calls (\n    call_key TEXT PRIMARY KEY,\n    storage_key TEXT NOT NULL,\n    expiration INTEGER NOT NULL\n) STRICT, WITHOUT ROWID"
	ddlCallsIdx = "CREATE INDEX calls_exp_idx ON calls(expiration)"
	ddlMeta     = "CREATE TABLE meta (\n    key TEXT PRIMARY KEY,\n    value TEXT NOT NULL\n) STRICT, WITHOUT ROWID"
	ddlResults  = "CREATE TABLE results (\n    id INTEGER PRIMARY KEY,\n    call_frame_json TEXT NOT NULL,\n    self_payload BLOB NOT NULL,\n" +
		"    output_effect_ids_json TEXT NOT NULL DEFAULT '[]',\n    expires_at_unix INTEGER NOT NULL DEFAULT 0,\n" +
		"    created_at_unix_nano INTEGER NOT NULL,\n    last_used_at_unix_nano INTEGER NOT NULL,\n" +
		"    record_type TEXT NOT NULL DEFAULT '',\n    description TEXT NOT NULL DEFAULT ''\n) STRICT"
	ddlSnapshotLinks = "CREATE TABLE result_snapshot_links (\n    result_id INTEGER NOT NULL,\n    ref_key TEXT NOT NULL,\n    role TEXT NOT NULL,\n" +
		"    PRIMARY KEY(result_id, ref_key, role),\n    FOREIGN KEY(result_id) REFERENCES results(id) ON DELETE CASCADE\n) STRICT, WITHOUT ROWID"
)

// dagqlState is what dagql-cache.db holds, as the engine would read it at start.
type dagqlState struct {
	present bool
	// err: the file exists but the engine could not open or read it.
	err                          error
	schemaVersion, cleanShutdown string
	hasSchema, hasClean          bool
	// calls (v0.19.4 - v0.20) or results (v0.21+) rows.
	entries int
	// refs are the snapshot ids persisted results name (result_snapshot_links.ref_key); the
	// v0.21+ import fails if one is missing from worker/ (dagger#13952).
	refs []string
	// results and links are the rows, kept to write the database back on a warm start.
	results, links, calls [][]any
}

// diskState is what the engine finds in its state dir at start.
type diskState struct {
	// boltErr: a bolt DB of the contract failed to open.
	boltErr error
	dagql   dagqlState
	// missingRefs are refs (dagql.refs) whose snapshot is not on disk.
	missingRefs []string
	// snapshots is the number of snapshot dirs, what dagger_local_cache_entries counts.
	snapshots int
}

// probeDisk reads the state dir. Bolt DBs are checked by openBoltDBs, which the engine does
// first; boltErr is filled by the caller.
func probeDisk(dir string, c engine.Contract) diskState {
	st := diskState{}
	if c.DagqlDB != engine.DagqlNone {
		st.dagql = readDagql(filepath.Join(dir, engine.DagqlFile), c)
	}
	st.snapshots = countSnapshots(dir)
	for _, ref := range st.dagql.refs {
		if fi, err := os.Stat(filepath.Join(dir, snapshotsDir, ref, "fs")); err != nil || !fi.IsDir() {
			st.missingRefs = append(st.missingRefs, ref)
		}
	}
	return st
}

func countSnapshots(dir string) int {
	ents, err := os.ReadDir(filepath.Join(dir, snapshotsDir))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}

// openBoltDBs opens every bolt DB of the contract read-write, as the engine does at start
// (creating missing ones, initialising empty ones), and returns them open: the engine holds
// them, with bbolt's flock, while it runs. A panic in bbolt on a torn file is an error, as
// initBoltDBs recovers it.
func openBoltDBs(dir string, c engine.Contract) (dbs []*bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic while initializing boltdbs: %v", r)
		}
		if err != nil {
			closeBoltDBs(dbs)
			dbs = nil
		}
	}()
	for _, rel := range c.BoltDBs {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return dbs, err
		}
		db, err := bolt.Open(p, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: true, NoGrowSync: true})
		if err != nil {
			return dbs, fmt.Errorf("opening %s: %w", rel, err)
		}
		dbs = append(dbs, db)
	}
	return dbs, nil
}

func closeBoltDBs(dbs []*bolt.DB) {
	for _, db := range dbs {
		_ = db.Close()
	}
}

// fillBoltDBs writes a few buckets and keys into the open DBs, so a copy that loses or tears
// one is not trivially equal to an empty file.
func fillBoltDBs(dbs []*bolt.DB, snapshots []string, node string) error {
	for _, db := range dbs {
		err := db.Update(func(tx *bolt.Tx) error {
			v1, err := tx.CreateBucketIfNotExists([]byte("v1"))
			if err != nil {
				return err
			}
			snaps, err := v1.CreateBucketIfNotExists([]byte("snapshots"))
			if err != nil {
				return err
			}
			for _, id := range snapshots {
				if err := snaps.Put([]byte(id), []byte("committed")); err != nil {
					return err
				}
			}
			meta, err := tx.CreateBucketIfNotExists([]byte("meta"))
			if err != nil {
				return err
			}
			return meta.Put([]byte("origin"), []byte(node))
		})
		if err != nil {
			return fmt.Errorf("writing %s: %w", db.Path(), err)
		}
	}
	return nil
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// writeWorker writes what builds leave under worker/: three overlay snapshots (files, a
// symlink, a hardlink, opaque directories and whiteouts), content blobs named by their
// digest, a cache mount, the executor dir and workerid. It returns the snapshot ids. Contents
// are random, so a restored copy is recognisably this one.
func writeWorker(dir, node string) ([]string, error) {
	w := func(rel string, data []byte) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	}
	for _, blob := range [][]byte{random(64 << 10), random(16 << 10)} {
		sum := sha256.Sum256(blob)
		if err := w("worker/content/blobs/sha256/"+hex.EncodeToString(sum[:]), blob); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		"1/fs/etc/os-release":             []byte("ID=wolfi\n"),
		"1/fs/usr/bin/app":                random(12 << 10),
		"2/fs/var/cache/apk/APKINDEX.tar": random(4 << 10),
		"2/fs/etc/app.conf":               []byte("mode=build\n"),
		"3/fs/src/main.go":                []byte("package main\n"),
		"3/fs/out/app":                    random(8 << 10),
	}
	for rel, data := range files {
		if err := w(filepath.Join(snapshotsDir, rel), data); err != nil {
			return nil, err
		}
	}
	ids := []string{"1", "2", "3"}
	for _, id := range ids {
		if err := os.MkdirAll(filepath.Join(dir, snapshotsDir, id, "work"), 0o700); err != nil {
			return nil, err
		}
	}
	snap := func(rel string) string { return filepath.Join(dir, snapshotsDir, rel) }
	if err := os.Symlink("app", snap("1/fs/usr/bin/app-link")); err != nil {
		return nil, err
	}
	if err := os.Link(snap("1/fs/usr/bin/app"), snap("1/fs/usr/bin/app-hardlink")); err != nil {
		return nil, err
	}
	// Upper layers: an opaque directory hides everything below it, a whiteout (a 0/0
	// character device) deletes one lower file.
	for _, rel := range []string{"2/fs/var/cache/apk", "3/fs/src"} {
		if err := unix.Setxattr(snap(rel), xattrOpaque, []byte("y"), 0); err != nil {
			return nil, fmt.Errorf("marking %s opaque (needs CAP_SYS_ADMIN): %w", rel, err)
		}
	}
	for _, rel := range []string{"2/fs/etc/os-release", "3/fs/out/app.tmp"} {
		if err := os.MkdirAll(filepath.Dir(snap(rel)), 0o755); err != nil {
			return nil, err
		}
		if err := unix.Mknod(snap(rel), unix.S_IFCHR|0o000, 0); err != nil {
			return nil, fmt.Errorf("writing whiteout %s (needs CAP_MKNOD): %w", rel, err)
		}
	}
	if err := w("worker/cachemounts/go-build/01/01ab-d", random(2<<10)); err != nil {
		return nil, err
	}
	if err := w(executorOrigin, []byte(node+"\n")); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, workerID)); errors.Is(err, os.ErrNotExist) {
		if err := w(workerID, []byte(hex.EncodeToString(random(12)))); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// ensureSecretSalt keeps a 32-byte secret-salt and replaces anything else, as the engine does.
func ensureSecretSalt(dir string) error {
	p := filepath.Join(dir, secretSalt)
	if b, err := os.ReadFile(p); err == nil && len(b) == 32 {
		return nil
	}
	return os.WriteFile(p, random(32), 0o600)
}

func randUint32() uint32 {
	b := random(4)
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func writeFileAtomic(p string, data []byte) error {
	tmp := p + ".nodesim"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// wipe applies a verdict's scope to the state dir.
func wipe(dir string, scope wipeScope) error {
	switch scope {
	case wipeRoot:
		// Every entry of the root, one by one (the root is often a mount), the lock file
		// included (engine/server/server.go before v0.21).
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	case wipeLocalState:
		if err := os.RemoveAll(filepath.Join(dir, engine.WorkerDir)); err != nil {
			return fmt.Errorf("remove worker state: %w", err)
		}
		fallthrough
	case resetDagqlDB:
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(filepath.Join(dir, engine.DagqlFile+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove dagql persistence state: %w", err)
			}
		}
	}
	return nil
}
