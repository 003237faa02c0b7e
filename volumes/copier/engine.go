package copier

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"warmpool.io/warmpool/volumes/engine"
)

const (
	// EngineLockFile is flocked by a running engine (gofrs/flock, i.e. flock(2), in
	// cmd/engine/main.go) and deleted when main returns normally.
	EngineLockFile = engine.LockFile
	// EngineStateDB is the engine's dagql cache database (SQLite, WAL mode) at the root of
	// its state dir, since v0.19.4.
	EngineStateDB = engine.DagqlFile
)

// boltOpenTimeout bounds the wait for a bolt file's shared lock. The engine holds an
// exclusive flock on each bolt DB while it runs, so a lock not granted at once means a
// process still has the DB open read-write.
const boltOpenTimeout = 200 * time.Millisecond

var (
	// ErrEngineRunning: an engine holds the lock on the cache dir (or a bolt DB in it). A copy
	// taken now restores cold (and may be torn).
	ErrEngineRunning = errors.New("dagger engine is running (cache lock held)")
	// ErrUnclean: the engine did not leave through its graceful path, so its next start wipes
	// this cache (or the cache is not one worth saving); saving it is wasted work.
	ErrUnclean = errors.New("dagger engine did not shut down cleanly")
	// ErrCorruptState: a file the engine reads at start is torn, truncated or not what the
	// contract says; the engine would wipe the cache or fail to start on it. It wraps
	// ErrUnclean, so callers that only ask "clean?" refuse it too.
	ErrCorruptState = fmt.Errorf("%w: engine state is corrupt or partial", ErrUnclean)
	// ErrEmpty: the dir holds no worker/ (snapshots, content, metadata): the engine never
	// started there, or it is not the engine's state dir. It wraps ErrUnclean: an empty copy
	// would replace the newest good snapshot of its key.
	ErrEmpty = fmt.Errorf("%w: no engine cache", ErrUnclean)
)

// CheckCleanShutdown is the pre-flight of a save: it tells whether the cache at dir is one
// an engine of contract c would reuse on its next start. nil means clean; every other answer
// means "do not save", and errors.Is tells which:
//
//   - ErrEngineRunning: dagger-engine.lock (or a bolt DB) is locked by a live process.
//   - ErrUnclean: the lock file is there but free (the engine deletes it only when main
//     returns normally, so a killed engine left it); or, for a CleanRecord contract,
//     meta.clean_shutdown is not "1" (or absent, or no dagql-cache.db at all), or
//     meta.schema_version is not the contract's (the engine would wipe the cache).
//   - ErrCorruptState (wraps ErrUnclean): a bolt DB of c.BoltDBs is missing while worker/ exists,
//     torn, truncated or unreadable as bolt; dagql-cache.db is torn, truncated, not SQLite or
//     lacks the contract's table. The file is named.
//   - ErrEmpty (wraps ErrUnclean): no worker/ dir at all.
//   - any other error: an I/O failure reading the state ("unknown"); callers treat it as not
//     clean.
//
// For LockGone contracts (before v0.21) there is no record of a clean exit: the lock file
// being gone is the proxy, and the bolt DBs opening (with every bucket walked) is the check
// that nothing was cut short. A dagql-cache.db that pre-v0.21 engines would silently
// recreate is still required to read whole: a torn file there means the exit was not the
// graceful one it looked like.
//
// Nothing in dir is created or written (bolt files are opened read-only). The check is a
// point in time: the controller must keep the engine from starting until the copy is done.
func CheckCleanShutdown(dir string, c engine.Contract) error {
	lock := filepath.Join(dir, engine.LockFile)
	switch held, err := engineLockHeld(lock); {
	case err != nil:
		return err
	case held:
		return fmt.Errorf("%w: %s", ErrEngineRunning, lock)
	}
	if _, err := os.Lstat(lock); err == nil {
		return fmt.Errorf("%w: lock file %s left by a killed engine (it is deleted only when the engine's main returns normally)", ErrUnclean, lock)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checking %s, %w", lock, err)
	}

	worker := filepath.Join(dir, engine.WorkerDir)
	if fi, err := os.Stat(worker); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist (the engine creates it at start)", ErrEmpty, worker)
	} else if err != nil {
		return fmt.Errorf("checking %s, %w", worker, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrCorruptState, worker)
	}
	// Every bolt DB must be there: the engine creates each at start, so a missing one means
	// a partial dir (the engine would start it empty and orphan what the others reference).
	for _, rel := range c.BoltDBs {
		if err := checkBoltDB(filepath.Join(dir, rel)); err != nil {
			return err
		}
	}

	db := filepath.Join(dir, engine.DagqlFile)
	_, statErr := os.Stat(db)
	if statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("checking %s, %w", db, statErr)
	}
	exists := statErr == nil
	switch c.DagqlDB {
	case engine.DagqlCalls:
		if exists {
			if _, err := sqliteTableRows(db, "calls"); err != nil {
				return sqliteErr(db, "reading table calls", err)
			}
		}
	case engine.DagqlMeta:
		if !exists {
			if c.CleanExit == engine.CleanRecord {
				return fmt.Errorf("%w: %s does not exist, so there is no clean-shutdown record", ErrUnclean, db)
			}
			break
		}
		meta, err := sqliteKeyValues(db, "meta")
		if err != nil {
			return sqliteErr(db, "reading table meta", err)
		}
		// The engine checks the schema first and wipes on a mismatch (dagql/cache.go NewCache).
		if v, ok := meta[engine.MetaSchemaVersion]; ok && v != c.SchemaVersion {
			return fmt.Errorf("%w: %s has %s=%q, but engine %s expects %q and would wipe this cache at start",
				ErrUnclean, db, engine.MetaSchemaVersion, v, c.Range(), c.SchemaVersion)
		}
		if c.CleanExit == engine.CleanRecord {
			v, ok := meta[engine.MetaCleanShutdown]
			if !ok {
				return fmt.Errorf("%w: %s has no %s record", ErrUnclean, db, engine.MetaCleanShutdown)
			}
			if v != "1" {
				return fmt.Errorf("%w: %s records %s=%q", ErrUnclean, db, engine.MetaCleanShutdown, v)
			}
		}
	}
	return nil
}

// sqliteErr classifies a failure to read dagql-cache.db: an I/O error is "unknown", anything
// the reader found wrong with the contents is ErrCorruptState.
func sqliteErr(db, doing string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s from %s, %w", doing, db, err)
	}
	return fmt.Errorf("%w: %s from %s: %v", ErrCorruptState, doing, db, err)
}

// engineLockHeld tries to take the engine's lock without waiting. The lock is flock(2),
// which works across pods on the same node because they share the host's kernel and the
// hostPath inode. An absent lock file is not held (and is not created).
func engineLockHeld(p string) (bool, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("opening engine lock %s, %w", p, err)
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("locking %s, %w", p, err)
	}
	return false, unix.Flock(fd, unix.LOCK_UN)
}

// checkBoltDB opens a bolt DB read-only, as the engine will open it read-write at start, and
// walks every bucket and key in one read transaction.
//
// bbolt's Open validates only the meta pages; a file cut short keeps valid meta pages while
// the pages they point to are gone. So the high-water mark (meta.pgid × page size) must fit
// in the file, and the walk reads every branch and leaf page. Reading a corrupt page through
// bbolt's mmap can fault (SIGBUS past the end of the file) or trip its assertions (panics):
// debug.SetPanicOnFault turns the fault into a panic on this goroutine, and both are
// recovered into ErrCorruptState. tx.Check is not used: it runs in its own goroutine, where such
// a panic would take the process down.
func checkBoltDB(p string) (err error) {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: bolt DB %s is missing (the engine creates it at start)", ErrCorruptState, p)
	case err != nil:
		return fmt.Errorf("checking bolt DB %s, %w", p, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: bolt DB %s is not a regular file", ErrCorruptState, p)
	case fi.Size() == 0:
		return fmt.Errorf("%w: bolt DB %s is empty", ErrCorruptState, p)
	}

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bolt DB %s: reading it faulted: %v", ErrCorruptState, p, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))

	db, err := bolt.Open(p, 0, &bolt.Options{ReadOnly: true, Timeout: boltOpenTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("%w: bolt DB %s is locked by another process", ErrEngineRunning, p)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("opening bolt DB %s, %w", p, err)
		}
		return fmt.Errorf("%w: bolt DB %s does not open: %v", ErrCorruptState, p, err)
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return fmt.Errorf("%w: bolt DB %s: %v", ErrCorruptState, p, err)
	}
	defer tx.Rollback()
	if hw := tx.Size(); hw > fi.Size() {
		return fmt.Errorf("%w: bolt DB %s is truncated: %d bytes, its meta page says %d", ErrCorruptState, p, fi.Size(), hw)
	}
	if err := tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walkBucket(b, 0) }); err != nil {
		return fmt.Errorf("%w: bolt DB %s: %v", ErrCorruptState, p, err)
	}
	return nil
}

// walkBucket visits every key of b and of the buckets nested in it.
func walkBucket(b *bolt.Bucket, depth int) error {
	if depth > 64 {
		return errors.New("buckets nested more than 64 deep (cyclic?)")
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue
		}
		if nested := b.Bucket(k); nested != nil {
			if err := walkBucket(nested, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
