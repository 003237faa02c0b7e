package cachejob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/engine"
)

// RestoreMarker is the file, relative to the cache dir, in which a restore leaves its restore
// ID, and which `warmpool cache verify` looks for once the engine is Ready.
//
// It sits in worker/ because that is what every engine release deletes, whole, when it
// discards a cache at start: v0.21+ removes worker/ and the dagql-cache.db* files when its
// local cache state is invalid (bolt DB init failure, dagql schema or clean-shutdown mismatch,
// an import failure as in dagger #13952) and recreates an empty worker/ to start again
// (engine/server/server.go initLocalCacheState, removeLocalCacheStateOnDisk, mkdirBaseDirs);
// v0.19 and v0.20 remove every entry of the state dir when a bolt DB fails to open. In normal
// operation the engine only writes inside worker/'s subdirectories (snapshots/, content/,
// executor/, ...) and leaves unknown files at its top alone. So the marker still in place,
// with this restore's ID, once the engine serves, means the engine started on the restored
// cache and kept it.
const RestoreMarker = engine.WorkerDir + "/.warmpool-restored"

// maxRestoreID bounds a restore ID: it travels as a Job argument and is read back whole. It
// leaves room for a VolumeSnapshot name (up to 253) plus a node UID, which is what the restore
// controller uses.
const maxRestoreID = 512

// checkRestoreID accepts printable ASCII without spaces, so the marker holds one line and an
// ID reads the same in the Job's args, its log and the marker.
func checkRestoreID(id string, required bool) error {
	if id == "" {
		if required {
			return &UsageError{errors.New("missing --restore-id")}
		}
		return nil
	}
	if len(id) > maxRestoreID {
		return &UsageError{fmt.Errorf("--restore-id: %d characters, at most %d", len(id), maxRestoreID)}
	}
	for _, r := range id {
		if r <= ' ' || r > '~' {
			return &UsageError{fmt.Errorf("--restore-id %q: only printable ASCII without spaces", id)}
		}
	}
	return nil
}

// validateRestore is validate plus the restore ID, so a bad ID is refused before any copy.
func (o RestoreOptions) validateRestore() error {
	if err := o.validate(false); err != nil {
		return err
	}
	return checkRestoreID(o.RestoreID, false)
}

// markRestored writes RestoreMarker with o.RestoreID into the restored cache, durably: the
// marker is written to a temporary file, fsync'd, renamed into place and its directory
// fsync'd (and the cache dir too when worker/ had to be created), so a node that loses power
// after the restore reported success still holds it. Without a restore ID nothing is written
// and the restore can never verify warm (logged).
func (o RestoreOptions) markRestored(logf func(string, ...any)) error {
	if o.RestoreID == "" {
		logf("no --restore-id: no restore marker written, so this restore cannot be verified")
		return nil
	}
	if err := writeMarker(o.CacheDir, o.RestoreID); err != nil {
		// Fail closed: a restore that cannot be marked can never be verified warm.
		err = fmt.Errorf("writing the restore marker %s in %s: %w", RestoreMarker, o.CacheDir, err)
		logf("%v", err)
		return err
	}
	logf("wrote restore marker %s: %s", RestoreMarker, o.RestoreID)
	return nil
}

func writeMarker(cacheDir, id string) error {
	worker := filepath.Join(cacheDir, engine.WorkerDir)
	created := false
	if _, err := os.Lstat(worker); errors.Is(err, fs.ErrNotExist) {
		// A cache saved before the engine made worker/ (or a test's): create it as the
		// engine does (mkdirBaseDirs, 0700), so the marker has a place.
		if err := os.Mkdir(worker, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", worker, err)
		}
		created = true
	} else if err != nil {
		return fmt.Errorf("reading %s: %w", worker, err)
	}
	final := filepath.Join(cacheDir, RestoreMarker)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	_, werr := f.WriteString(id + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, final)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", final, werr)
	}
	if err := syncDir(worker); err != nil {
		return err
	}
	if created {
		return syncDir(cacheDir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s to sync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// CacheDir is the engine's cache directory on the node (mounted read-only).
	CacheDir string
	// RestoreID is the ID the restore wrote (RestoreOptions.RestoreID).
	RestoreID string
	// Log receives what was found, one line each; nil discards it.
	Log io.Writer
}

// Verify tells whether the engine kept the cache the restore with o.RestoreID put in place,
// by looking for that restore's marker (RestoreMarker). The returned JobResult is always set;
// the error says why the result is not "warm".
//
//   - Marker present with this ID: "warm", the engine started on the restored cache and kept it.
//   - Marker gone (worker/ reset or missing), a marker of another restore, or no cache dir at
//     all: "wiped", with what was found as the reason.
//   - Anything that cannot be read (permissions, I/O, a marker that is not a file): "failed",
//     the verdict is unknown; it says nothing about the snapshot.
//
// Precondition: the engine pod is Ready. The engine keeps or wipes its cache during start-up,
// in server.NewServer (initLocalCacheState), before cmd/engine/main.go serves its API, and the
// readiness probe `dagger core version` needs that API: a verify run earlier may find a marker
// the engine is about to delete.
func Verify(ctx context.Context, o VerifyOptions) (volumes.JobResult, error) {
	res := volumes.JobResult{Result: volumes.ResultFailed}
	if o.CacheDir == "" {
		err := &UsageError{errors.New("missing --cache-dir")}
		return withReason(res, err), err
	}
	if err := checkRestoreID(o.RestoreID, true); err != nil {
		return withReason(res, err), err
	}
	if err := ctx.Err(); err != nil {
		return withReason(res, err), err
	}
	logf := Options{Log: o.Log}.logger()
	verdict, err := verify(o.CacheDir, o.RestoreID)
	if err != nil {
		logf("%v", err)
		return withReason(res, err), err
	}
	res.Result = verdict.result
	logf("%s: %s", verdict.result, verdict.reason)
	res = withReason(res, errors.New(verdict.reason))
	if verdict.result == volumes.ResultWiped {
		return res, errors.New(res.Reason)
	}
	return res, nil
}

type verdict struct{ result, reason string }

// maxMarker bounds what is read of a marker: ours hold one ID and a newline.
const maxMarker = maxRestoreID + 2

// verify reads the evidence; an error means it could not be read (no verdict).
func verify(cacheDir, id string) (verdict, error) {
	fi, err := os.Stat(cacheDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return verdict{volumes.ResultWiped, fmt.Sprintf("cache dir %s does not exist: the restored cache is gone", cacheDir)}, nil
	case err != nil:
		return verdict{}, fmt.Errorf("reading cache dir %s: %w", cacheDir, err)
	case !fi.IsDir():
		return verdict{}, fmt.Errorf("cache dir %s is not a directory (%s)", cacheDir, fi.Mode().Type())
	}
	marker := filepath.Join(cacheDir, RestoreMarker)
	data, err := readMarker(marker)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return markerGone(cacheDir)
	case err != nil:
		return verdict{}, fmt.Errorf("reading restore marker %s: %w", marker, err)
	}
	found := strings.TrimSuffix(string(data), "\n")
	if found != id {
		return verdict{volumes.ResultWiped, fmt.Sprintf("the cache in place is not this restore's: %s names restore %q, not %q", RestoreMarker, found, id)}, nil
	}
	return verdict{volumes.ResultWarm, fmt.Sprintf("%s names this restore (%s): the engine started on the restored cache and kept it", RestoreMarker, id)}, nil
}

func readMarker(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMarker+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxMarker {
		// Not one of ours (an ID is at most maxRestoreID): it names no restore.
		return data[:maxMarker], nil
	}
	return data, nil
}

// markerGone says what a missing marker means: worker/ is still there (the engine recreates
// it right after a wipe), or it is gone too. An unreadable worker/ is no verdict.
func markerGone(cacheDir string) (verdict, error) {
	worker := filepath.Join(cacheDir, engine.WorkerDir)
	_, err := os.Lstat(worker)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return verdict{volumes.ResultWiped, fmt.Sprintf("the engine discarded the restored cache: %s/ is missing (and the restore marker %s with it)", engine.WorkerDir, RestoreMarker)}, nil
	case err != nil:
		return verdict{}, fmt.Errorf("reading %s: %w", worker, err)
	}
	return verdict{volumes.ResultWiped, fmt.Sprintf("the engine discarded the restored cache at start: %s/ was reset (the restore marker %s is gone)", engine.WorkerDir, RestoreMarker)}, nil
}

// VerifyExitCode is the contract's exit code for a verify result: ExitOK for warm, ExitWiped
// for wiped, ExitFailed otherwise (usage errors are mapped by the caller, as for ExitCode).
func VerifyExitCode(r volumes.JobResult) int {
	switch r.Result {
	case volumes.ResultWarm:
		return volumes.ExitOK
	case volumes.ResultWiped:
		return volumes.ExitWiped
	default:
		return volumes.ExitFailed
	}
}
