package copier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// walk visits every record of the b-tree rooted at pgno. Index b-trees keep
// records in interior cells too, so those are visited as well.
func (db *sqliteFile) walk(pgno uint32, depth int, visit func([]any) error) error {
	if depth > maxBtreeDepth {
		return errors.New("b-tree too deep (corrupt?)")
	}
	p, err := db.page(pgno)
	if err != nil {
		return err
	}
	h := 0
	if pgno == 1 {
		h = 100 // the database header precedes page 1's b-tree header
	}
	if len(p) < h+12 {
		return fmt.Errorf("page %d too small", pgno)
	}
	typ := p[h]
	hsize := 8
	switch typ {
	case 2, 5:
		hsize = 12
	case 10, 13:
	default:
		return fmt.Errorf("page %d: not a b-tree page (type %d)", pgno, typ)
	}
	ncells := int(binary.BigEndian.Uint16(p[h+3:]))
	if h+hsize+2*ncells > len(p) {
		return fmt.Errorf("page %d: cell count %d overflows the page", pgno, ncells)
	}
	for i := range ncells {
		off := int(binary.BigEndian.Uint16(p[h+hsize+2*i:]))
		if off < h+hsize || off >= db.usable {
			return fmt.Errorf("page %d: cell %d at bad offset %d", pgno, i, off)
		}
		c := p[off:db.usable]
		if typ == 2 || typ == 5 {
			if len(c) < 4 {
				return fmt.Errorf("page %d: truncated cell %d", pgno, i)
			}
			if err := db.walk(binary.BigEndian.Uint32(c), depth+1, visit); err != nil {
				return err
			}
			if typ == 5 {
				continue // table interior cells hold only a rowid
			}
			c = c[4:]
		}
		plen, n := sqliteVarint(c)
		if n == 0 || plen > maxSQLitePayload {
			return fmt.Errorf("page %d: bad payload size in cell %d", pgno, i)
		}
		c = c[n:]
		if typ == 13 {
			_, n = sqliteVarint(c) // rowid
			if n == 0 {
				return fmt.Errorf("page %d: bad rowid in cell %d", pgno, i)
			}
			c = c[n:]
		}
		payload, err := db.payload(c, int(plen), typ == 13)
		if err != nil {
			return fmt.Errorf("page %d cell %d: %w", pgno, i, err)
		}
		rec, err := sqliteRecord(payload)
		if err != nil {
			return fmt.Errorf("page %d cell %d: %w", pgno, i, err)
		}
		if err := visit(rec); err != nil {
			return err
		}
	}
	if typ == 2 || typ == 5 {
		return db.walk(binary.BigEndian.Uint32(p[h+8:]), depth+1, visit)
	}
	return nil
}

// payload assembles a cell's payload of size p from its local part and, if it
// spills, its overflow page chain (the split rule is from the file format).
func (db *sqliteFile) payload(local []byte, p int, tableLeaf bool) ([]byte, error) {
	u := db.usable
	x := (u-12)*64/255 - 23
	if tableLeaf {
		x = u - 35
	}
	if p <= x {
		if p > len(local) {
			return nil, errors.New("payload overruns the page")
		}
		return local[:p], nil
	}
	m := (u-12)*32/255 - 23
	k := m + (p-m)%(u-4)
	if k > x {
		k = m
	}
	if k+4 > len(local) {
		return nil, errors.New("payload overruns the page")
	}
	out := append(make([]byte, 0, p), local[:k]...)
	next := binary.BigEndian.Uint32(local[k:])
	for len(out) < p {
		pg, err := db.page(next)
		if err != nil {
			return nil, fmt.Errorf("overflow chain: %w", err)
		}
		take := min(u-4, p-len(out))
		out = append(out, pg[4:4+take]...)
		next = binary.BigEndian.Uint32(pg)
	}
	return out, nil
}

// sqliteRecord decodes a record: a header of serial types, then the values.
func sqliteRecord(b []byte) ([]any, error) {
	hlen, n := sqliteVarint(b)
	if n == 0 || hlen > uint64(len(b)) || hlen < uint64(n) {
		return nil, errors.New("bad record header")
	}
	hdr, body := b[n:hlen], b[hlen:]
	var rec []any
	for len(hdr) > 0 {
		t, n := sqliteVarint(hdr)
		if n == 0 {
			return nil, errors.New("bad serial type")
		}
		hdr = hdr[n:]
		var size int
		switch {
		case t == 0 || t == 8 || t == 9:
			size = 0
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
			return nil, errors.New("record body too short")
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
			if shift := 64 - 8*size; shift > 0 { // sign-extend
				x = x << shift >> shift
			}
			rec = append(rec, x)
		case t == 7:
			rec = append(rec, math.Float64frombits(binary.BigEndian.Uint64(v)))
		case t%2 == 0:
			rec = append(rec, bytes.Clone(v))
		default:
			rec = append(rec, string(v))
		}
	}
	return rec, nil
}

// sqliteVarint decodes SQLite's big-endian varint (1–9 bytes; the ninth
// contributes all 8 bits). n is 0 if b is too short.
func sqliteVarint(b []byte) (v uint64, n int) {
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
