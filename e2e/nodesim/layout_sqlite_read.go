package nodesim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// sqliteDB is a database read back: the committed state, WAL included.
type sqliteDB struct {
	data     []byte
	walPages map[uint32][]byte
	pageSize int
}

// readSQLite reads path and its -wal. Anything outside what nodesim writes (overflow pages,
// a non-UTF-8 encoding) is an error, as a database the engine could not open would be.
func readSQLite(path string) (*sqliteDB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 100 || string(data[:16]) != "SQLite format 3\x00" {
		return nil, fmt.Errorf("%s: not a SQLite 3 database", path)
	}
	ps := int(binary.BigEndian.Uint16(data[16:]))
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps&(ps-1) != 0 || data[20] != 0 {
		return nil, fmt.Errorf("%s: unsupported page layout (size %d, reserved %d)", path, ps, data[20])
	}
	if enc := binary.BigEndian.Uint32(data[56:]); enc != 1 {
		return nil, fmt.Errorf("%s: text encoding %d is not UTF-8", path, enc)
	}
	db := &sqliteDB{data: data, pageSize: ps, walPages: map[uint32][]byte{}}
	wal, err := os.ReadFile(path + "-wal")
	if errors.Is(err, os.ErrNotExist) {
		return db, nil
	}
	if err != nil {
		return nil, err
	}
	db.overlayWAL(wal)
	return db, nil
}

// overlayWAL applies the frames up to the last valid commit frame; anything after it (a torn
// or uncommitted transaction, an invalid header) is ignored, as SQLite's recovery does.
func (db *sqliteDB) overlayWAL(wal []byte) {
	if len(wal) < 32 || binary.BigEndian.Uint32(wal) != walMagicLE ||
		int(binary.BigEndian.Uint32(wal[8:])) != db.pageSize {
		return
	}
	s0, s1 := walChecksum(0, 0, wal[:24])
	if s0 != binary.BigEndian.Uint32(wal[24:]) || s1 != binary.BigEndian.Uint32(wal[28:]) {
		return
	}
	pending := map[uint32][]byte{}
	for off := 32; off+24+db.pageSize <= len(wal); off += 24 + db.pageSize {
		fh, page := wal[off:off+24], wal[off+24:off+24+db.pageSize]
		if !bytes.Equal(fh[8:16], wal[16:24]) {
			return
		}
		s0, s1 = walChecksum(s0, s1, fh[:8])
		s0, s1 = walChecksum(s0, s1, page)
		if s0 != binary.BigEndian.Uint32(fh[16:]) || s1 != binary.BigEndian.Uint32(fh[20:]) {
			return
		}
		pending[binary.BigEndian.Uint32(fh)] = page
		if binary.BigEndian.Uint32(fh[4:]) != 0 {
			for n, p := range pending {
				db.walPages[n] = p
			}
			clear(pending)
		}
	}
}

func (db *sqliteDB) page(n uint32) ([]byte, error) {
	if p, ok := db.walPages[n]; ok {
		return p, nil
	}
	off := int(n-1) * db.pageSize
	if n == 0 || off+db.pageSize > len(db.data) {
		return nil, fmt.Errorf("page %d is past the end of the file", n)
	}
	return db.data[off : off+db.pageSize], nil
}

// records visits every record of the b-tree rooted at root. depth bounds a cyclic tree.
func (db *sqliteDB) records(root uint32, depth int, visit func([]any)) error {
	if depth > 16 {
		return errors.New("b-tree too deep (corrupt?)")
	}
	p, err := db.page(root)
	if err != nil {
		return err
	}
	h := 0
	if root == 1 {
		h = 100
	}
	typ := p[h]
	hsize := 8
	if typ == 2 || typ == 5 {
		hsize = 12
	} else if typ != 10 && typ != 13 {
		return fmt.Errorf("page %d: not a b-tree page (type %d)", root, typ)
	}
	n := int(binary.BigEndian.Uint16(p[h+3:]))
	if h+hsize+2*n > len(p) {
		return fmt.Errorf("page %d: %d cells overflow the page", root, n)
	}
	for i := range n {
		off := int(binary.BigEndian.Uint16(p[h+hsize+2*i:]))
		if off < h+hsize || off >= len(p) {
			return fmt.Errorf("page %d: cell %d at bad offset %d", root, i, off)
		}
		c := p[off:]
		if typ == 2 || typ == 5 {
			if len(c) < 4 {
				return fmt.Errorf("page %d: truncated cell %d", root, i)
			}
			if err := db.records(binary.BigEndian.Uint32(c), depth+1, visit); err != nil {
				return err
			}
			if typ == 5 {
				continue
			}
			c = c[4:]
		}
		size, k := readSQLiteVarint(c)
		if k == 0 {
			return fmt.Errorf("page %d: bad payload size in cell %d", root, i)
		}
		c = c[k:]
		if typ == 13 {
			if _, k = readSQLiteVarint(c); k == 0 {
				return fmt.Errorf("page %d: bad rowid in cell %d", root, i)
			}
			c = c[k:]
		}
		if size > uint64(len(c)) || size > uint64(db.pageSize-35) {
			return fmt.Errorf("page %d: cell %d spills to overflow pages, which nodesim never writes", root, i)
		}
		rec, err := decodeRecord(c[:size])
		if err != nil {
			return fmt.Errorf("page %d cell %d: %w", root, i, err)
		}
		visit(rec)
	}
	if typ == 2 || typ == 5 {
		return db.records(binary.BigEndian.Uint32(p[h+8:]), depth+1, visit)
	}
	return nil
}

func decodeRecord(b []byte) ([]any, error) {
	hlen, n := readSQLiteVarint(b)
	if n == 0 || hlen > uint64(len(b)) || hlen < uint64(n) {
		return nil, errors.New("bad record header")
	}
	hdr, body := b[n:hlen], b[hlen:]
	var rec []any
	for len(hdr) > 0 {
		t, k := readSQLiteVarint(hdr)
		if k == 0 {
			return nil, errors.New("bad serial type")
		}
		hdr = hdr[k:]
		size := 0
		switch {
		case t == 0 || t == 8 || t == 9:
		case t <= 4:
			size = int(t)
		case t == 5:
			size = 6
		case t == 6 || t == 7:
			size = 8
		case t >= 12:
			size = int((t - 12) / 2)
		default:
			return nil, fmt.Errorf("reserved serial type %d", t)
		}
		if size > len(body) {
			return nil, io.ErrUnexpectedEOF
		}
		v := body[:size]
		body = body[size:]
		switch {
		case t == 0:
			rec = append(rec, nil)
		case t == 8 || t == 9:
			rec = append(rec, int64(t-8))
		case t <= 6:
			var x int64
			for _, c := range v {
				x = x<<8 | int64(c)
			}
			if shift := 64 - 8*size; shift > 0 && shift < 64 {
				x = x << shift >> shift
			}
			rec = append(rec, x)
		case t == 7:
			return nil, errors.New("float values are not modelled")
		case t%2 == 0:
			rec = append(rec, bytes.Clone(v))
		default:
			rec = append(rec, string(v))
		}
	}
	return rec, nil
}

// table returns the rows of a table, or found=false when the schema has no such table.
func (db *sqliteDB) table(name string) (rows [][]any, found bool, err error) {
	var root int64
	err = db.records(1, 0, func(r []any) {
		if len(r) >= 4 && r[0] == "table" && r[1] == name {
			root, _ = r[3].(int64)
		}
	})
	if err != nil {
		return nil, false, fmt.Errorf("reading sqlite_schema: %w", err)
	}
	if root <= 0 {
		return nil, false, nil
	}
	err = db.records(uint32(root), 0, func(r []any) { rows = append(rows, r) })
	if err != nil {
		return nil, true, fmt.Errorf("reading table %s: %w", name, err)
	}
	return rows, true, nil
}
