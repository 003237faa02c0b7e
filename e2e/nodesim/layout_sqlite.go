package nodesim

// The engine's dagql-cache.db is SQLite (modernc.org/sqlite in the engine, WAL mode). The
// module has no SQLite library (a cgo or a very large dependency for a simulator), so nodesim
// writes and reads the few small tables it models itself, following the documented file
// format (https://www.sqlite.org/fileformat2.html): one leaf page per table, records that never
// spill to overflow pages, and a write-ahead log whose committed frames override the main
// file, as SQLite shows them to the next connection. The files open in the sqlite3 CLI
// (layout_test.go checks PRAGMA integrity_check) and in warmpool's own read-only reader
// (volumes/copier/sqlite.go), which is what the product sees.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

const (
	sqlitePageSize = 4096
	// sqliteVersionNumber is written at offset 96 as the library that last wrote the file.
	sqliteVersionNumber = 3046000
	// A WAL whose magic has the low bit clear uses little-endian checksums, what SQLite
	// writes on x86 and arm64.
	walMagicLE = 0x377f0682
	walVersion = 3007000
)

// sqlTable is one table (or index) of a database nodesim writes.
type sqlTable struct {
	name    string
	tblName string // the table an index belongs to; name for a table
	index   bool   // a CREATE INDEX entry
	sql     string // as stored in sqlite_schema
	// withoutRowid tables and indexes are index b-trees whose records are whole keys;
	// ordinary tables are table b-trees keyed by rowid.
	withoutRowid bool
	rows         [][]any // int64, string, []byte or nil; for a rowid table, rowid is 1-based row order
}

// encodeRecord encodes one record: a header of serial types, then the values.
func encodeRecord(vals []any) ([]byte, error) {
	var hdr, body []byte
	for _, v := range vals {
		switch v := v.(type) {
		case nil:
			hdr = appendSQLiteVarint(hdr, 0)
		case int64:
			switch {
			case v == 0:
				hdr = appendSQLiteVarint(hdr, 8)
			case v == 1:
				hdr = appendSQLiteVarint(hdr, 9)
			case v >= -128 && v <= 127:
				hdr = appendSQLiteVarint(hdr, 1)
				body = append(body, byte(v))
			case v >= -32768 && v <= 32767:
				hdr = appendSQLiteVarint(hdr, 2)
				body = binary.BigEndian.AppendUint16(body, uint16(v))
			case v >= -(1<<31) && v < 1<<31:
				hdr = appendSQLiteVarint(hdr, 4)
				body = binary.BigEndian.AppendUint32(body, uint32(v))
			default:
				hdr = appendSQLiteVarint(hdr, 6)
				body = binary.BigEndian.AppendUint64(body, uint64(v))
			}
		case string:
			hdr = appendSQLiteVarint(hdr, uint64(2*len(v)+13))
			body = append(body, v...)
		case []byte:
			hdr = appendSQLiteVarint(hdr, uint64(2*len(v)+12))
			body = append(body, v...)
		default:
			return nil, fmt.Errorf("sqlite record: unsupported value %T", v)
		}
	}
	// The header size counts its own varint; it is small, so one byte unless the header
	// reaches 127 bytes.
	n := len(hdr) + 1
	if n > 127 {
		n++
	}
	out := appendSQLiteVarint(nil, uint64(n))
	if len(out)+len(hdr) != n {
		return nil, errors.New("sqlite record: header too large")
	}
	return append(append(out, hdr...), body...), nil
}

// appendSQLiteVarint appends SQLite's big-endian varint (not Go's little-endian one).
func appendSQLiteVarint(b []byte, v uint64) []byte {
	if v > 1<<56-1 {
		// Nine bytes: eight of seven bits, then a full byte.
		var tmp [9]byte
		tmp[8] = byte(v)
		v >>= 8
		for i := 7; i >= 0; i-- {
			tmp[i] = byte(v&0x7f) | 0x80
			v >>= 7
		}
		return append(b, tmp[:]...)
	}
	var tmp [9]byte
	i := 8
	tmp[i] = byte(v & 0x7f)
	v >>= 7
	for v > 0 {
		i--
		tmp[i] = byte(v&0x7f) | 0x80
		v >>= 7
	}
	return append(b, tmp[i:]...)
}

func readSQLiteVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < 9; i++ {
		if i >= len(b) {
			return 0, 0
		}
		if i == 8 {
			return v<<8 | uint64(b[i]), 9
		}
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// compareKeys orders index records as SQLite's BINARY collation does: NULL < numbers < text
// < blobs, numbers by value, text and blobs bytewise, column by column.
func compareKeys(a, b []any) int {
	rank := func(v any) int {
		switch v.(type) {
		case nil:
			return 0
		case int64:
			return 1
		case string:
			return 2
		default:
			return 3
		}
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		if ra, rb := rank(a[i]), rank(b[i]); ra != rb {
			return ra - rb
		}
		switch x := a[i].(type) {
		case int64:
			if y := b[i].(int64); x != y {
				if x < y {
					return -1
				}
				return 1
			}
		case string:
			if c := strings.Compare(x, b[i].(string)); c != 0 {
				return c
			}
		case []byte:
			if c := bytes.Compare(x, b[i].([]byte)); c != 0 {
				return c
			}
		}
	}
	return len(a) - len(b)
}

// leafPage lays out one b-tree leaf page. hdrOff is 100 on page 1 (the file header precedes
// the b-tree header).
func leafPage(page []byte, hdrOff int, typ byte, cells [][]byte) error {
	ptr := hdrOff + 8
	end := len(page)
	if ptr+2*len(cells) > end {
		return errors.New("too many cells for one page")
	}
	for i, c := range cells {
		end -= len(c)
		if end < ptr+2*len(cells) {
			return fmt.Errorf("cells do not fit in one %d-byte page", len(page))
		}
		copy(page[end:], c)
		binary.BigEndian.PutUint16(page[ptr+2*i:], uint16(end))
	}
	page[hdrOff] = typ
	binary.BigEndian.PutUint16(page[hdrOff+3:], uint16(len(cells)))
	binary.BigEndian.PutUint16(page[hdrOff+5:], uint16(end))
	return nil
}

// tablePage renders one table's rows as the cells of its leaf page.
func tablePage(t sqlTable) ([]byte, error) {
	page := make([]byte, sqlitePageSize)
	var cells [][]byte
	if t.withoutRowid || t.index {
		rows := append([][]any(nil), t.rows...)
		sort.SliceStable(rows, func(i, j int) bool { return compareKeys(rows[i], rows[j]) < 0 })
		// Largest local payload of an index cell before it spills (file format, 1.6).
		maxLocal := (sqlitePageSize-12)*64/255 - 23
		for _, r := range rows {
			rec, err := encodeRecord(r)
			if err != nil {
				return nil, err
			}
			if len(rec) > maxLocal {
				return nil, fmt.Errorf("%s: a %d-byte record would overflow", t.name, len(rec))
			}
			cells = append(cells, append(appendSQLiteVarint(nil, uint64(len(rec))), rec...))
		}
		return page, leafPage(page, 0, 10, cells)
	}
	for i, r := range t.rows {
		rec, err := encodeRecord(r)
		if err != nil {
			return nil, err
		}
		if len(rec) > sqlitePageSize-35 {
			return nil, fmt.Errorf("%s: a %d-byte record would overflow", t.name, len(rec))
		}
		c := appendSQLiteVarint(nil, uint64(len(rec)))
		c = appendSQLiteVarint(c, uint64(i+1))
		cells = append(cells, append(c, rec...))
	}
	return page, leafPage(page, 0, 13, cells)
}

// buildSQLite renders a whole database: page 1 holds the header and sqlite_schema, page i+2
// the i-th table. wal marks the file as in WAL mode (journal_mode=WAL, which the engine sets).
func buildSQLite(tables []sqlTable, wal bool) ([]byte, error) {
	npages := 1 + len(tables)
	db := make([]byte, npages*sqlitePageSize)
	var schemaCells [][]byte
	for i, t := range tables {
		page, err := tablePage(t)
		if err != nil {
			return nil, err
		}
		copy(db[(i+1)*sqlitePageSize:], page)
		typ, tbl := "table", t.name
		if t.index {
			typ, tbl = "index", t.tblName
		}
		rec, err := encodeRecord([]any{typ, t.name, tbl, int64(i + 2), t.sql})
		if err != nil {
			return nil, err
		}
		c := appendSQLiteVarint(nil, uint64(len(rec)))
		c = appendSQLiteVarint(c, uint64(i+1))
		schemaCells = append(schemaCells, append(c, rec...))
	}
	if err := leafPage(db[:sqlitePageSize], 100, 13, schemaCells); err != nil {
		return nil, fmt.Errorf("sqlite_schema: %w", err)
	}
	h := db[:100]
	copy(h, "SQLite format 3\x00")
	binary.BigEndian.PutUint16(h[16:], sqlitePageSize)
	mode := byte(1)
	if wal {
		mode = 2
	}
	h[18], h[19] = mode, mode
	h[21], h[22], h[23] = 64, 32, 32
	binary.BigEndian.PutUint32(h[24:], 1)              // file change counter
	binary.BigEndian.PutUint32(h[28:], uint32(npages)) // size in pages
	binary.BigEndian.PutUint32(h[40:], 1)              // schema cookie
	binary.BigEndian.PutUint32(h[44:], 4)              // schema format
	binary.BigEndian.PutUint32(h[56:], 1)              // UTF-8
	binary.BigEndian.PutUint32(h[92:], 1)              // version-valid-for = change counter
	binary.BigEndian.PutUint32(h[96:], sqliteVersionNumber)
	return db, nil
}

func walChecksum(s0, s1 uint32, b []byte) (uint32, uint32) {
	for i := 0; i+8 <= len(b); i += 8 {
		s0 += binary.LittleEndian.Uint32(b[i:]) + s1
		s1 += binary.LittleEndian.Uint32(b[i+4:]) + s0
	}
	return s0, s1
}

// buildWAL renders a write-ahead log holding one committed transaction that replaces the
// given pages (page number -> image). dbPages is the database size after the commit.
func buildWAL(pages map[uint32][]byte, dbPages uint32, salt1, salt2 uint32) []byte {
	hdr := make([]byte, 32)
	binary.BigEndian.PutUint32(hdr[0:], walMagicLE)
	binary.BigEndian.PutUint32(hdr[4:], walVersion)
	binary.BigEndian.PutUint32(hdr[8:], sqlitePageSize)
	binary.BigEndian.PutUint32(hdr[16:], salt1)
	binary.BigEndian.PutUint32(hdr[20:], salt2)
	s0, s1 := walChecksum(0, 0, hdr[:24])
	binary.BigEndian.PutUint32(hdr[24:], s0)
	binary.BigEndian.PutUint32(hdr[28:], s1)
	out := hdr
	nums := make([]uint32, 0, len(pages))
	for n := range pages {
		nums = append(nums, n)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for i, n := range nums {
		fh := make([]byte, 24)
		binary.BigEndian.PutUint32(fh[0:], n)
		if i == len(nums)-1 {
			binary.BigEndian.PutUint32(fh[4:], dbPages) // the commit frame
		}
		binary.BigEndian.PutUint32(fh[8:], salt1)
		binary.BigEndian.PutUint32(fh[12:], salt2)
		s0, s1 = walChecksum(s0, s1, fh[:8])
		s0, s1 = walChecksum(s0, s1, pages[n])
		binary.BigEndian.PutUint32(fh[16:], s0)
		binary.BigEndian.PutUint32(fh[20:], s1)
		out = append(append(out, fh...), pages[n]...)
	}
	return out
}
