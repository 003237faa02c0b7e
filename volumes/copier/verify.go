package copier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var (
	// ErrNoManifest: the tree has no manifest, so it is an interrupted or
	// foreign copy. A volume without a manifest is never restored.
	ErrNoManifest = errors.New("no warmpool manifest")
	// ErrCorrupt: the manifest is unreadable or the tree does not match it.
	// The concrete error is a *CorruptError naming the first bad path.
	ErrCorrupt = errors.New("copy does not match its manifest")
)

// CorruptError names the first path (in manifest order) that does not match
// the manifest, or the manifest itself when it cannot be decoded.
type CorruptError struct {
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrCorrupt, e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true for every *CorruptError.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Verify checks that dir holds exactly what its manifest describes: every
// entry exists with the recorded type, mode, size, file mtime, symlink target,
// device number and hardlink sharing, and files with a recorded SHA-256 (the
// engine's databases) hash to it. Extra files are not an error: the manifest
// vouches for what it lists. The manifest is returned whenever it could be
// read, so callers can log its engine version even on a mismatch.
//
// The entries are checked by DefaultReadConcurrency workers at once: on a
// volume lazily loaded from an EBS snapshot every first look at an inode or a
// directory block waits on S3 (and through a FUSE mount each is a round trip),
// so one lstat at a time left a restore waiting seconds per ten thousand
// entries before its copy began. The result is the same as a check in
// manifest order: the first bad entry in that order is reported. Hashes are
// computed only once every entry's metadata matched, so no file is read
// through a parent that turned out not to be a real directory.
func Verify(dir string) (Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return Manifest{}, err
	}
	if err := verifyEntries(dir, m.Entries, false); err != nil {
		return m, err
	}
	return m, verifyEntries(dir, m.Entries, true)
}

// verifyEntries checks entries in parallel: their metadata, or (hashes) the
// SHA-256 of those that record one. It returns the error of the first entry in
// manifest order that failed.
func verifyEntries(dir string, entries []Entry, hashes bool) error {
	workers := min(DefaultReadConcurrency, len(entries))
	errs := make([]error, len(entries))
	var next atomic.Int64
	var failed atomic.Int64 // the lowest failed index: entries after it are skipped
	failed.Store(math.MaxInt64)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(entries) || int64(i) >= failed.Load() {
					return
				}
				e := &entries[i]
				var reason string
				var err error
				if hashes {
					reason, err = verifyChecksum(dir, e)
				} else {
					reason, err = verifyEntry(dir, e)
				}
				switch {
				case err != nil:
					errs[i] = fmt.Errorf("verifying %s: %w", filepath.Join(dir, e.Path), err)
				case reason != "":
					errs[i] = &CorruptError{Path: e.Path, Reason: reason}
				default:
					continue
				}
				for {
					f := failed.Load()
					if int64(i) >= f || failed.CompareAndSwap(f, int64(i)) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// verifyEntry returns a mismatch reason, or an error when the check itself
// failed (an I/O error is not evidence of corruption).
func verifyEntry(dir string, e *Entry) (string, error) {
	p := filepath.Join(dir, filepath.FromSlash(e.Path))
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return "missing", nil
		}
		return "", err
	}
	if reason := statMismatch(&st, e); reason != "" {
		return reason, nil
	}
	switch e.Type {
	case TypeSymlink:
		target, err := readlink(p)
		if err != nil {
			return "", err
		}
		if reason := targetMismatch(target, e); reason != "" {
			return reason, nil
		}
	case TypeFile:
		if e.Link != "" {
			var ps unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, filepath.FromSlash(e.Link)), &ps); err != nil || ps.Ino != st.Ino || ps.Dev != st.Dev {
				return notHardlink(e), nil
			}
		}
	}
	return "", nil
}

// statMismatch compares what lstat says of an entry with its manifest entry:
// type, mode, and a device's number or a file's size and mtime, in that
// order. A symlink's target and a file's hardlink sharing need more than its
// own stat and are the caller's (targetMismatch, notHardlink). Verify and a
// restore's copy (expectation) share it, so both refuse the same trees with
// the same reasons.
func statMismatch(st *unix.Stat_t, e *Entry) string {
	if got := typeOf(st.Mode); got != e.Type {
		return fmt.Sprintf("is a %s, manifest says %s", got, e.Type)
	}
	if got := st.Mode & 0o7777; got != e.Mode {
		return fmt.Sprintf("mode %04o, manifest says %04o", got, e.Mode)
	}
	switch e.Type {
	case TypeChar, TypeBlock:
		if uint64(st.Rdev) != e.Rdev {
			return fmt.Sprintf("device %#x, manifest says %#x", st.Rdev, e.Rdev)
		}
	case TypeFile:
		if st.Size != e.Size {
			return fmt.Sprintf("size %d, manifest says %d", st.Size, e.Size)
		}
		if st.Mtim.Nano() != e.MtimeNs {
			return fmt.Sprintf("mtime %d, manifest says %d", st.Mtim.Nano(), e.MtimeNs)
		}
	}
	return ""
}

func targetMismatch(target string, e *Entry) string {
	if target != e.Target {
		return fmt.Sprintf("symlink target %q, manifest says %q", target, e.Target)
	}
	return ""
}

func notHardlink(e *Entry) string { return fmt.Sprintf("not a hardlink of %s", e.Link) }

func checksumMismatch(sum string, e *Entry) string {
	if sum != e.SHA256 {
		return fmt.Sprintf("sha256 %s, manifest says %s", sum, e.SHA256)
	}
	return ""
}

// verifyChecksum hashes a file whose entry records a SHA-256, once its
// metadata was checked (verifyEntry).
func verifyChecksum(dir string, e *Entry) (string, error) {
	if e.Type != TypeFile || e.SHA256 == "" {
		return "", nil
	}
	sum, err := fileSHA256(filepath.Join(dir, filepath.FromSlash(e.Path)))
	if err != nil {
		return "", err
	}
	return checksumMismatch(sum, e), nil
}

func typeOf(mode uint32) EntryType {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return TypeFile
	case unix.S_IFDIR:
		return TypeDir
	case unix.S_IFLNK:
		return TypeSymlink
	case unix.S_IFCHR:
		return TypeChar
	case unix.S_IFBLK:
		return TypeBlock
	case unix.S_IFIFO:
		return TypeFIFO
	}
	return "socket"
}

func fileSHA256(p string) (string, error) {
	fd, err := openSource(p)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
