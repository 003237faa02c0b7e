// Package enginetest writes Dagger Engine state dirs as a real engine of a given contract
// leaves them, for tests of everything that reads one (the save pre-flight, the cache Jobs,
// the node simulator): real bolt files written by go.etcd.io/bbolt, and dagql-cache.db files
// written by real SQLite (testdata/gen.py; no SQLite library is in go.mod, so they are
// committed and embedded).
package enginetest

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/engine"
)

//go:embed testdata/*.db
var fixtures embed.FS

// State is what a stopped engine left behind.
type State int

const (
	// Clean: the engine returned from main normally: lock file deleted, bolt DBs closed and,
	// from v0.21, meta.clean_shutdown = "1".
	Clean State = iota
	// Killed: SIGKILL while running: the lock file stays (unlocked), and from v0.21
	// meta.clean_shutdown stays "0" as written at start.
	Killed
)

// WriteState writes into dir the state of an engine of contract c that stopped as s: every
// bolt DB of c.BoltDBs, dagql-cache.db of c's kind, and for Killed the lock file. Nothing
// holds the lock; see HoldLock for a running engine.
func WriteState(dir string, c engine.Contract, s State) error {
	for _, rel := range c.BoltDBs {
		if err := WriteBoltDB(filepath.Join(dir, rel)); err != nil {
			return err
		}
	}
	if err := WriteDagqlDB(dir, c, s); err != nil {
		return err
	}
	if s == Killed {
		if err := os.WriteFile(filepath.Join(dir, engine.LockFile), nil, 0o600); err != nil {
			return fmt.Errorf("writing the lock file a killed engine leaves, %w", err)
		}
	}
	return nil
}

// WriteBoltDB writes a real bolt file at p (parents created) with a few nested buckets and
// keys, as buildkit's metadata stores hold, and closes it.
func WriteBoltDB(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("creating the dir of %s, %w", p, err)
	}
	db, err := bolt.Open(p, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("creating bolt DB %s, %w", p, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"v1", "_main"} {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			nested, err := b.CreateBucketIfNotExists([]byte("buildkit"))
			if err != nil {
				return err
			}
			// Enough data to span several pages, so a truncated copy loses some of them.
			for i := range 500 {
				if err := nested.Put(fmt.Appendf(nil, "key-%05d", i), fmt.Appendf(nil, "value-%05d-%0100d", i, i)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing bolt DB %s, %w", p, err)
	}
	return nil
}

// DagqlFixture is the embedded dagql-cache.db of contract c in state s ("" for DagqlNone).
func DagqlFixture(c engine.Contract, s State) (string, error) {
	switch c.DagqlDB {
	case engine.DagqlNone:
		return "", nil
	case engine.DagqlCalls:
		// No clean-shutdown record before v0.21: a killed engine leaves the same table.
		return "calls.db", nil
	case engine.DagqlMeta:
		state := "clean"
		if s == Killed {
			state = "dirty"
		}
		name := "meta" + c.SchemaVersion + "-" + state + ".db"
		if _, err := fs.Stat(fixtures, "testdata/"+name); err != nil {
			return "", fmt.Errorf("no dagql fixture for schema %q (regenerate testdata with gen.py), %w", c.SchemaVersion, err)
		}
		return name, nil
	}
	return "", fmt.Errorf("unknown dagql DB kind %d", c.DagqlDB)
}

// WriteDagqlDB writes dir/dagql-cache.db for contract c in state s (nothing for DagqlNone)
// and removes WAL leftovers, which SQLite would replay over it.
func WriteDagqlDB(dir string, c engine.Contract, s State) error {
	name, err := DagqlFixture(c, s)
	if err != nil || name == "" {
		return err
	}
	return WriteFixture(dir, name)
}

// WriteFixture writes the embedded dagql fixture name (e.g. "meta16-noclean.db") as
// dir/dagql-cache.db.
func WriteFixture(dir, name string) error {
	data, err := fixtures.ReadFile("testdata/" + name)
	if err != nil {
		return fmt.Errorf("reading dagql fixture, %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s, %w", dir, err)
	}
	p := filepath.Join(dir, engine.DagqlFile)
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(p + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s%s, %w", p, suffix, err)
		}
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("writing %s, %w", p, err)
	}
	return nil
}

// HoldLock creates dir/dagger-engine.lock and flocks it as a running engine does (gofrs/flock
// TryLock, i.e. flock(2) LOCK_EX|LOCK_NB, in cmd/engine/main.go). The lock lasts until the
// returned file is closed. flock(2) locks conflict between open file descriptions, so a check
// in the same process sees it held.
func HoldLock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, engine.LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the engine lock, %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s, %w", f.Name(), err)
	}
	return f, nil
}
