package copier

// A read-only reader for just enough of the SQLite file format
// (https://www.sqlite.org/fileformat2.html) to look up one row of a small
// key/value table: the engine's clean-shutdown record. A SQLite library would
// be a cgo or a very large dependency for one lookup; the format is stable
// and documented. The reader follows b-tree pages and overflow chains, and
// overlays committed WAL frames, which is what SQLite itself shows the engine
// on its next open.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

const (
	maxSQLitePayload = 64 << 20 // no marker row comes near this
	maxBtreeDepth    = 32
)

type sqliteFile struct {
	f        *os.File
	pageSize int
	usable   int
	// headerSize is the database size in pages from the file header (0 if not valid there).
	headerSize uint32
	wal        *os.File
	walPages   map[uint32]int64 // page number -> offset of its newest committed image in wal
	walSize    uint32           // database size in pages after the last committed WAL frame, 0 without one
	seen       int              // pages visited, to stop on cyclic corruption
}

// errSQLiteFormat marks what the reader found wrong with the file's contents (as opposed to
// an I/O error while reading it): a file that is not a SQLite database, a torn or truncated
// one, or one without the table asked for.
var errSQLiteFormat = errors.New("malformed SQLite database")

// sqliteTableRows reads every record of table and returns how many there are: a walk of
// every page of that b-tree, so a torn or truncated table is an error, never a short count.
func sqliteTableRows(path, table string) (int, error) {
	db, err := openSQLite(path)
	if err != nil {
		return 0, err
	}
	defer db.close()
	root, err := db.tableRoot(table)
	if err != nil {
		return 0, err
	}
	n := 0
	err = db.walk(root, 0, func([]any) error { n++; return nil })
	return n, err
}

// sqliteKeyValues reads a (key, value) table whole, as the engine's meta table is.
func sqliteKeyValues(path, table string) (map[string]string, error) {
	db, err := openSQLite(path)
	if err != nil {
		return nil, err
	}
	defer db.close()
	root, err := db.tableRoot(table)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	err = db.walk(root, 0, func(rec []any) error {
		if len(rec) < 2 {
			return fmt.Errorf("%w: a %s row has %d columns, want 2", errSQLiteFormat, table, len(rec))
		}
		k, ok := rec[0].(string)
		if !ok {
			return fmt.Errorf("%w: a %s key is not text", errSQLiteFormat, table)
		}
		if _, dup := kv[k]; !dup {
			kv[k] = sqliteString(rec[1])
		}
		return nil
	})
	return kv, err
}

// sqliteMetaValue returns the value column of the row whose first column is
// key in table (a WITHOUT ROWID table or an ordinary one, with columns
// (key, value)).
func sqliteMetaValue(path, table, key string) (string, bool, error) {
	db, err := openSQLite(path)
	if err != nil {
		return "", false, err
	}
	defer db.close()
	root, err := db.tableRoot(table)
	if err != nil {
		return "", false, err
	}
	var val string
	found := false
	err = db.walk(root, 0, func(rec []any) error {
		if len(rec) < 2 || found {
			return nil
		}
		if k, ok := rec[0].(string); ok && k == key {
			found = true
			val = sqliteString(rec[1])
		}
		return nil
	})
	return val, found, err
}

func sqliteString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return fmt.Sprint(v)
	case float64:
		return fmt.Sprint(v)
	case []byte:
		return string(v)
	}
	return ""
}

func openSQLite(path string) (*sqliteFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	db := &sqliteFile{f: f}
	if err := db.readHeader(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := db.readWAL(path + "-wal"); err != nil {
		db.close()
		return nil, fmt.Errorf("%s-wal: %w", path, err)
	}
	if err := db.checkSize(); err != nil {
		db.close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, nil
}

func (db *sqliteFile) close() {
	db.f.Close()
	if db.wal != nil {
		db.wal.Close()
	}
}

func (db *sqliteFile) readHeader() error {
	var h [100]byte
	if _, err := db.f.ReadAt(h[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: shorter than its 100-byte header", errSQLiteFormat)
		}
		return fmt.Errorf("reading database header: %w", err)
	}
	if string(h[:16]) != "SQLite format 3\x00" {
		return fmt.Errorf("%w: not a SQLite 3 database", errSQLiteFormat)
	}
	ps := int(binary.BigEndian.Uint16(h[16:]))
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps&(ps-1) != 0 {
		return fmt.Errorf("%w: invalid page size %d", errSQLiteFormat, ps)
	}
	db.pageSize = ps
	db.usable = ps - int(h[20])
	if db.usable < 480 {
		return fmt.Errorf("%w: invalid usable page size %d", errSQLiteFormat, db.usable)
	}
	if enc := binary.BigEndian.Uint32(h[56:]); enc != 1 && enc != 0 {
		return fmt.Errorf("%w: text encoding %d is not UTF-8", errSQLiteFormat, enc)
	}
	// The in-header database size counts only if the version-valid-for number matches the
	// change counter (file format 1.3.1): older writers did not maintain it.
	if n := binary.BigEndian.Uint32(h[28:]); n != 0 && binary.BigEndian.Uint32(h[24:]) == binary.BigEndian.Uint32(h[92:]) {
		db.headerSize = n
	}
	return nil
}

// checkSize refuses a truncated database: every page up to the database's size (the last
// committed WAL frame's, else the header's) must be in the file or in the WAL. A file cut
// short (a torn copy, a full disk) would otherwise read as a smaller, valid-looking b-tree
// only when the cut falls between the pages a lookup visits.
func (db *sqliteFile) checkSize() error {
	pages := db.headerSize
	if db.walSize != 0 {
		pages = db.walSize
	}
	fi, err := db.f.Stat()
	if err != nil {
		return fmt.Errorf("checking the database size: %w", err)
	}
	inFile := uint32(min(fi.Size()/int64(db.pageSize), math.MaxUint32))
	for n := inFile + 1; n <= pages && n > inFile; n++ {
		if _, ok := db.walPages[n]; !ok {
			return fmt.Errorf("%w: truncated: %d bytes hold %d whole pages of %d, and page %d is not in the WAL", errSQLiteFormat, fi.Size(), inFile, pages, n)
		}
	}
	return nil
}

// readWAL indexes the newest committed image of each page in the WAL. Frames
// count only up to the last commit frame whose salts and running checksum
// are valid: later frames are an uncommitted or torn transaction, which
// SQLite discards too.
func (db *sqliteFile) readWAL(path string) error {
	w, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var hdr [32]byte
	if _, err := w.ReadAt(hdr[:], 0); err != nil {
		w.Close()
		if errors.Is(err, io.EOF) {
			return nil // empty or truncated header: no valid frames
		}
		return err
	}
	var order binary.ByteOrder
	switch binary.BigEndian.Uint32(hdr[:]) {
	case 0x377f0682:
		order = binary.LittleEndian
	case 0x377f0683:
		order = binary.BigEndian
	default:
		w.Close()
		return nil // not a valid WAL: SQLite ignores it
	}
	s0, s1 := walChecksum(order, 0, 0, hdr[:24])
	if s0 != binary.BigEndian.Uint32(hdr[24:]) || s1 != binary.BigEndian.Uint32(hdr[28:]) ||
		int(binary.BigEndian.Uint32(hdr[8:])) != db.pageSize {
		w.Close()
		return nil
	}
	committed := map[uint32]int64{}
	pending := map[uint32]int64{}
	var size uint32
	frame := make([]byte, 24+db.pageSize)
	for off := int64(32); ; off += int64(len(frame)) {
		if _, err := w.ReadAt(frame, off); err != nil {
			break // end of file or a torn last frame
		}
		if !bytes.Equal(frame[8:16], hdr[16:24]) {
			break // salts of an earlier WAL generation
		}
		s0, s1 = walChecksum(order, s0, s1, frame[:8])
		s0, s1 = walChecksum(order, s0, s1, frame[24:])
		if s0 != binary.BigEndian.Uint32(frame[16:]) || s1 != binary.BigEndian.Uint32(frame[20:]) {
			break
		}
		pending[binary.BigEndian.Uint32(frame[0:])] = off + 24
		if commit := binary.BigEndian.Uint32(frame[4:]); commit != 0 { // commit frame: the database size in pages
			size = commit
			for p, o := range pending {
				committed[p] = o
			}
			clear(pending)
		}
	}
	if len(committed) == 0 {
		w.Close()
		return nil
	}
	db.wal, db.walPages, db.walSize = w, committed, size
	return nil
}

func walChecksum(order binary.ByteOrder, s0, s1 uint32, b []byte) (uint32, uint32) {
	for i := 0; i+8 <= len(b); i += 8 {
		s0 += order.Uint32(b[i:]) + s1
		s1 += order.Uint32(b[i+4:]) + s0
	}
	return s0, s1
}

func (db *sqliteFile) page(n uint32) ([]byte, error) {
	if n == 0 {
		return nil, errors.New("page 0 referenced")
	}
	db.seen++
	if db.seen > 1<<20 {
		return nil, errors.New("too many pages visited (cyclic b-tree?)")
	}
	p := make([]byte, db.pageSize)
	if off, ok := db.walPages[n]; ok {
		if _, err := db.wal.ReadAt(p, off); err != nil {
			return nil, fmt.Errorf("reading page %d from WAL: %w", n, err)
		}
		return p, nil
	}
	if _, err := db.f.ReadAt(p, int64(n-1)*int64(db.pageSize)); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: page %d is past the end of the file", errSQLiteFormat, n)
		}
		return nil, fmt.Errorf("reading page %d: %w", n, err)
	}
	return p, nil
}

// tableRoot finds a table's root page in sqlite_schema (page 1), whose rows
// are (type, name, tbl_name, rootpage, sql). For a WITHOUT ROWID table the
// root is that of its primary-key index b-tree, which holds the rows.
func (db *sqliteFile) tableRoot(name string) (uint32, error) {
	var root uint32
	err := db.walk(1, 0, func(rec []any) error {
		if len(rec) >= 4 && rec[0] == "table" && rec[1] == name {
			if r, ok := rec[3].(int64); ok && r > 0 && r <= 1<<31 {
				root = uint32(r)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if root == 0 {
		return 0, fmt.Errorf("%w: no table %q", errSQLiteFormat, name)
	}
	return root, nil
}
