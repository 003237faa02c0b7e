package copier

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const (
	// EngineLockFile is flocked by a running engine (gofrs/flock, i.e.
	// flock(2), in cmd/engine/main.go) and deleted on exit.
	EngineLockFile = "dagger-engine.lock"
	// EngineStateDB is the engine's dagql cache database (SQLite, WAL mode)
	// at the root of its state dir, since v0.21.
	EngineStateDB = "dagql-cache.db"
	// DefaultCleanShutdownMarker is the key of the engine's clean-shutdown
	// record: the row meta(key='clean_shutdown') of EngineStateDB. The engine
	// writes '0' there at start and '1' only after a graceful close has
	// persisted its state; on start it wipes the whole cache unless it reads
	// '1' (dagql/persistdb, internal-docs/cache_persistence.md). It is not a
	// file on disk; see CheckCleanShutdown for the file fallback.
	DefaultCleanShutdownMarker = "clean_shutdown"
)

var (
	// ErrEngineRunning: an engine holds the lock on the cache dir. A copy
	// taken now restores cold (and may be torn).
	ErrEngineRunning = errors.New("dagger engine is running (cache lock held)")
	// ErrUnclean: the engine did not record a clean shutdown, so it will
	// wipe this cache on its next start; saving it is wasted work.
	ErrUnclean = errors.New("dagger engine did not shut down cleanly")
)

// CheckCleanShutdown is the pre-flight of a save: it tells whether the cache
// at dir is one the engine would reuse on its next start.
//
//   - If an engine holds dir/dagger-engine.lock (non-blocking flock fails):
//     ErrEngineRunning. The lock file is never created by this check.
//   - If dir/dagql-cache.db exists, marker (default
//     DefaultCleanShutdownMarker) is looked up in its meta table, reading the
//     committed WAL frames too, exactly as the engine will: a value other
//     than "1", or no such row, is ErrUnclean.
//   - Without that database (an engine older than v0.21, or a wrapper that
//     signals differently), a regular file dir/marker counts as the marker;
//     its absence is ErrUnclean.
//
// Any other failure (an unreadable database) is returned as a plain error:
// it means "unknown", which callers should treat as not clean. The check is a
// point in time: the controller must keep the engine from starting until
// the copy is done.
func CheckCleanShutdown(dir, marker string) error {
	if marker == "" {
		marker = DefaultCleanShutdownMarker
	}
	if err := checkEngineLock(filepath.Join(dir, EngineLockFile)); err != nil {
		return err
	}
	db := filepath.Join(dir, EngineStateDB)
	if _, err := os.Stat(db); err == nil {
		val, found, err := sqliteMetaValue(db, "meta", marker)
		if err != nil {
			return fmt.Errorf("reading clean-shutdown marker %q from %s: %w", marker, db, err)
		}
		if !found {
			return fmt.Errorf("%w: %s has no %q record", ErrUnclean, db, marker)
		}
		if val != "1" {
			return fmt.Errorf("%w: %s records %s=%q", ErrUnclean, db, marker, val)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checking %s: %w", db, err)
	}
	p := filepath.Join(dir, marker)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: neither %s nor marker file %s exists", ErrUnclean, db, p)
	case err != nil:
		return fmt.Errorf("checking marker %s: %w", p, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: marker %s is not a regular file", ErrUnclean, p)
	}
	return nil
}

// checkEngineLock tries to take the engine's lock without waiting. The lock
// is flock(2), which works across pods on the same node because they share
// the host's kernel and the hostPath inode.
func checkEngineLock(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil // the engine deletes its lock file on exit
	}
	if err != nil {
		return fmt.Errorf("opening engine lock %s: %w", p, err)
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%w: %s", ErrEngineRunning, p)
	}
	if err != nil {
		return fmt.Errorf("locking %s: %w", p, err)
	}
	return unix.Flock(fd, unix.LOCK_UN)
}
