package copier

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

const (
	// ManifestName is the file, at the root of a copy, that says the copy is
	// complete. It is written last; a tree without it is never restored.
	ManifestName = ".warmpool-manifest.json"
	// manifestTemp is where the manifest is written before the rename that
	// publishes it. A leftover temp file means nothing: it is not the manifest.
	manifestTemp = ManifestName + ".tmp"

	// FormatVersion is the manifest format this package writes and reads.
	FormatVersion = 1
)

// DefaultChecksumGlobs select the files whose SHA-256 goes into the manifest:
// the engine's databases (bolt, SQLite and their WAL/SHM files). They are
// small next to the content store and snapshots, and they are what makes a
// restored cache warm or cold, so they are worth re-reading on verify. Other
// files carry size+mtime only, to keep full copies at disk speed.
var DefaultChecksumGlobs = []string{"*.db", "*.db-wal", "*.db-shm", "*.sqlite*"}

// EntryType is the kind of a manifest entry.
type EntryType string

const (
	TypeFile    EntryType = "file"
	TypeDir     EntryType = "dir"
	TypeSymlink EntryType = "symlink"
	TypeChar    EntryType = "char"
	TypeBlock   EntryType = "block"
	TypeFIFO    EntryType = "fifo"
)

// Manifest describes a complete copy. Its presence at the root of a tree is
// the only proof that the copy finished and was made durable.
type Manifest struct {
	FormatVersion int `json:"formatVersion"`
	// ID names this copy (random, unique). A file's content written by the
	// copy carries it as its Origin.
	ID            string `json:"id,omitempty"`
	EngineVersion string `json:"engineVersion"`
	Architecture  string `json:"architecture"`
	SourceNode    string `json:"sourceNode,omitempty"`
	// Created is when the copy finished (the manifest's own time).
	Created time.Time `json:"created"`
	// Duration is how long Copy took, in nanoseconds on the wire.
	Duration time.Duration `json:"durationNs"`
	Totals   Totals        `json:"totals"`
	Stats    Stats         `json:"stats"`
	// Warnings lists non-fatal problems (ownership or xattrs that could not be
	// applied, special files that could not be created), capped at
	// maxWarnings; Stats carries the full counts.
	Warnings []string `json:"warnings,omitempty"`
	// Entries are sorted by Path. The root directory itself is not an entry.
	Entries []Entry `json:"entries"`
}

// Totals count what the source tree holds.
type Totals struct {
	Files     int64 `json:"files"` // regular files, hardlink secondaries excluded
	Dirs      int64 `json:"dirs"`  // root excluded
	Symlinks  int64 `json:"symlinks"`
	Hardlinks int64 `json:"hardlinks"` // extra names of an already-counted file
	Specials  int64 `json:"specials"`  // device nodes and FIFOs that were recreated
	Bytes     int64 `json:"bytes"`     // logical size of the regular files
}

// Entry is one path in the copy.
type Entry struct {
	Path string    `json:"path"` // slash-separated, relative to the root
	Type EntryType `json:"type"`
	Size int64     `json:"size,omitempty"`
	// Mode is st_mode & 07777: permission bits plus setuid/setgid/sticky.
	Mode uint32 `json:"mode"`
	// MtimeNs is the modification time in nanoseconds since the Unix epoch;
	// negative before 1970.
	MtimeNs int64  `json:"mtimeNs"`
	UID     uint32 `json:"uid,omitempty"`
	GID     uint32 `json:"gid,omitempty"`
	// Target is a symlink's target, verbatim.
	Target string `json:"target,omitempty"`
	// Link names the entry this one is a hardlink of (same inode).
	Link string `json:"link,omitempty"`
	// Rdev is a device node's device number.
	Rdev uint64 `json:"rdev,omitempty"`
	// SHA256 (hex) is set for files matched by the checksum globs.
	SHA256 string `json:"sha256,omitempty"`
	// Origin is the ID of the save that wrote a file's content or a
	// symlink: the same path with the same Origin in two manifests is the
	// same bytes, or target, and extended attributes (see Baseline). A
	// restore keeps its source's origins; a manifest written before origins
	// existed (for symlinks: before they had them) has none, and its files
	// and symlinks are never skipped.
	Origin string `json:"origin,omitempty"`
}

// ModTime returns the entry's mtime as a time.Time.
func (e Entry) ModTime() time.Time { return time.Unix(0, e.MtimeNs) }

// Linux names are bytes, not UTF-8, and image layers do carry Latin-1 file
// names. encoding/json would turn such bytes into U+FFFD, and the copy would
// then never verify ("missing"). So a path or target that is not valid UTF-8
// is also written exactly, base64-encoded, in pathBytes/targetBytes; path and
// target keep a readable approximation.
type entryAlias Entry

type entryWire struct {
	entryAlias
	PathBytes   []byte `json:"pathBytes,omitempty"`
	TargetBytes []byte `json:"targetBytes,omitempty"`
}

// MarshalJSON encodes the entry losslessly (see entryWire).
func (e Entry) MarshalJSON() ([]byte, error) { return json.Marshal(e.wire()) }

// UnmarshalJSON restores exact bytes from pathBytes/targetBytes when present.
func (e *Entry) UnmarshalJSON(data []byte) error {
	var w entryWire
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*e = w.entry()
	return nil
}

func (e *Entry) wire() entryWire {
	w := entryWire{entryAlias: entryAlias(*e)}
	if !utf8.ValidString(e.Path) {
		w.PathBytes = []byte(e.Path)
		w.Path = strings.ToValidUTF8(e.Path, "\uFFFD")
	}
	if !utf8.ValidString(e.Target) {
		w.TargetBytes = []byte(e.Target)
		w.Target = strings.ToValidUTF8(e.Target, "\uFFFD")
	}
	return w
}

func (w *entryWire) entry() Entry {
	e := Entry(w.entryAlias)
	if w.PathBytes != nil {
		e.Path = string(w.PathBytes)
	}
	if w.TargetBytes != nil {
		e.Target = string(w.TargetBytes)
	}
	return e
}

// manifestWire decodes a manifest with its entries in their wire form, in
// one pass: through Entry.UnmarshalJSON, encoding/json would scan each entry
// again and start a decoder per entry, which made reading the manifest of a
// 22k-entry cache take a few hundred milliseconds of a 2-core node's CPU (an
// incremental save reads it once, a restore three times). Its Entries shadow
// the embedded Manifest's.
type manifestWire struct {
	manifestFields
	Entries []entryWire `json:"entries"`
}

// manifestFields is Manifest without its methods (it has none that encoding/json uses, but
// an alias keeps it so).
type manifestFields Manifest

// ReadManifest reads and validates the manifest at the root of dir. A missing
// manifest (or a missing dir) is ErrNoManifest; an unreadable or invalid one
// is a *CorruptError.
func ReadManifest(dir string) (Manifest, error) {
	p := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%w at %s", ErrNoManifest, p)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("reading manifest %s: %w", p, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return Manifest{}, &CorruptError{Path: ManifestName, Reason: err.Error()}
	}
	return m, nil
}

// ParseManifest decodes and validates a manifest. Validation matters because
// entries drive what Verify opens and what an incremental copy trusts: paths
// must stay inside the tree, types must be known, and hardlinks must point at
// an earlier regular file.
func ParseManifest(data []byte) (Manifest, error) {
	// Unknown fields are accepted: FormatVersion gates incompatible changes,
	// and a newer writer adding a field must not turn every restore by an
	// older Job into a cold start.
	// encodeManifest writes an entry per line: sized from the lines, the
	// entries are not regrown (and copied) a dozen times as they decode.
	w := manifestWire{Entries: make([]entryWire, 0, bytes.Count(data, []byte{'\n'}))}
	if err := json.Unmarshal(data, &w); err != nil {
		return Manifest{}, fmt.Errorf("decoding manifest: %w", err)
	}
	m := Manifest(w.manifestFields)
	if w.Entries != nil {
		m.Entries = make([]Entry, len(w.Entries))
		for i := range w.Entries {
			m.Entries[i] = w.Entries[i].entry()
		}
	}
	if err := m.validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func (m *Manifest) validate() error {
	if m.FormatVersion != FormatVersion {
		return fmt.Errorf("unsupported manifest format version %d (want %d)", m.FormatVersion, FormatVersion)
	}
	seen := make(map[string]int, len(m.Entries)) // path -> index
	prev := ""
	for i, e := range m.Entries {
		if err := validPath(e.Path); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if i > 0 && e.Path <= prev {
			return fmt.Errorf("entry %d: %q is out of order or duplicated", i, e.Path)
		}
		prev = e.Path
		if e.Mode&^07777 != 0 {
			return fmt.Errorf("entry %q: mode %o has bits outside 07777", e.Path, e.Mode)
		}
		if e.Size < 0 || (e.Size != 0 && e.Type != TypeFile) {
			return fmt.Errorf("entry %q: size %d not valid for a %s", e.Path, e.Size, e.Type)
		}
		if e.Target != "" && e.Type != TypeSymlink {
			return fmt.Errorf("entry %q: only symlinks have a target", e.Path)
		}
		if e.Rdev != 0 && e.Type != TypeChar && e.Type != TypeBlock {
			return fmt.Errorf("entry %q: only device nodes have rdev", e.Path)
		}
		if e.SHA256 != "" {
			if e.Type != TypeFile {
				return fmt.Errorf("entry %q: only regular files have a checksum", e.Path)
			}
			if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 || strings.ToLower(e.SHA256) != e.SHA256 {
				return fmt.Errorf("entry %q: checksum %q is not lowercase hex SHA-256", e.Path, e.SHA256)
			}
		}
		switch e.Type {
		case TypeFile, TypeDir, TypeChar, TypeBlock, TypeFIFO:
		case TypeSymlink:
			if e.Target == "" {
				return fmt.Errorf("entry %q: symlink without a target", e.Path)
			}
		default:
			return fmt.Errorf("entry %q: unknown type %q", e.Path, e.Type)
		}
		if e.Link != "" && e.Type != TypeFile {
			return fmt.Errorf("entry %q: only regular files can be hardlinks", e.Path)
		}
		// A path's parent must be a directory entry (or the root): otherwise
		// a manifest could smuggle "a/b" under a symlink "a".
		if dir := path.Dir(e.Path); dir != "." {
			if j, ok := seen[dir]; !ok || m.Entries[j].Type != TypeDir {
				return fmt.Errorf("entry %q: parent %q is not a directory entry", e.Path, dir)
			}
		}
		seen[e.Path] = i
	}
	// The primary of a hardlink group is the first name met in the walk,
	// which is not path order ("a/c" is walked before "a.b"), so links are
	// checked once every path is known.
	for _, e := range m.Entries {
		if e.Link == "" {
			continue
		}
		j, ok := seen[e.Link]
		if !ok || e.Link == e.Path || m.Entries[j].Type != TypeFile || m.Entries[j].Link != "" {
			return fmt.Errorf("entry %q: hardlink to %q, which is not a primary regular file entry", e.Path, e.Link)
		}
	}
	return nil
}

// validPath accepts clean, relative, slash-separated paths that stay inside
// the tree and are not the manifest's own names.
func validPath(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("empty path")
	case path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("path %q is not clean and relative", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path %q contains NUL", p)
	case p == ManifestName || p == manifestTemp:
		return fmt.Errorf("path %q is reserved", p)
	}
	return nil
}

// writeManifest publishes m at dir: write a temp file, fsync it, rename it
// over ManifestName, fsync dir. After a crash either the old state (no
// manifest, since Copy removed it first) or the complete new manifest exists.
// Entries are streamed one by one so a million-entry manifest does not need
// a second in-memory copy of itself as one JSON buffer.
func writeManifest(dir string, m *Manifest, beforePublish func() error) (err error) {
	tmp := filepath.Join(dir, manifestTemp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating manifest temp file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	var created unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &created); err != nil {
		return fmt.Errorf("stat manifest temp file: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := encodeManifest(w, m); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing manifest: %w", err)
	}
	if _, err := ctimeAfter(f, created.Ctim.Nano()); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing manifest: %w", err)
	}
	if beforePublish != nil {
		if err := beforePublish(); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestName)); err != nil {
		return fmt.Errorf("publishing manifest: %w", err)
	}
	return syncDir(dir)
}

// ctimeAfter returns f's change time once it is later than t, touching its mode
// until the clock that stamps ctimes (coarse: a tick of a few milliseconds)
// moves on. With t the ctime f was created with, every file the copy wrote
// before the manifest has an earlier ctime than the published manifest,
// which is what ReadBaseline relies on.
func ctimeAfter(f *os.File, t int64) (int64, error) {
	for {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
		}
		if st.Ctim.Nano() > t {
			return st.Ctim.Nano(), nil
		}
		time.Sleep(time.Millisecond)
		if err := f.Chmod(fs.FileMode(st.Mode & 0o777)); err != nil {
			return 0, fmt.Errorf("touching %s: %w", f.Name(), err)
		}
	}
}

// encodeManifest writes m as JSON, one entry per line, without building the
// whole document in memory.
func encodeManifest(w *bufio.Writer, m *Manifest) error {
	head := *m
	head.Entries = nil
	hb, err := json.Marshal(head)
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	// head ends in `"entries":null}`; splice the entries array in its place.
	const tail = `"entries":null}`
	if !strings.HasSuffix(string(hb), tail) {
		return errors.New("encoding manifest: unexpected header layout")
	}
	w.Write(hb[:len(hb)-len(tail)])
	w.WriteString(`"entries":[`)
	for i := range m.Entries {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteByte('\n')
		// The wire form directly: marshaling the Entry would go through
		// MarshalJSON, whose output encoding/json then scans again.
		eb, err := json.Marshal(m.Entries[i].wire())
		if err != nil {
			return fmt.Errorf("encoding manifest entry %q: %w", m.Entries[i].Path, err)
		}
		w.Write(eb)
	}
	if _, err := w.WriteString("\n]}\n"); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	return nil
}

// removeManifest deletes any manifest (and temp) at dir and makes the removal
// durable, so a crash during the copy that follows cannot resurrect it.
func removeManifest(dir string) error {
	removed := false
	for _, n := range []string{ManifestName, manifestTemp} {
		err := os.Remove(filepath.Join(dir, n))
		switch {
		case err == nil:
			removed = true
		case errors.Is(err, fs.ErrNotExist):
		default:
			return fmt.Errorf("removing old manifest %s: %w", filepath.Join(dir, n), err)
		}
	}
	if !removed {
		return nil
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s to sync: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
