package copier

import (
	"fmt"
	"strings"
	"testing"
)

// The big fixture's meta table spans interior pages (1 KiB pages, 3000 rows)
// and holds a value that spills into an overflow chain.
func TestSQLiteReaderMultiPageAndOverflow(t *testing.T) {
	db := "testdata/sqlite/big/dagql-cache.db"
	for _, i := range []int{0, 1, 49, 50, 1234, 2999} {
		key := fmt.Sprintf("key%05d", i)
		got, found, err := sqliteMetaValue(db, "meta", key)
		want := strings.Repeat(fmt.Sprint(i), i%50+1)
		if err != nil || !found || got != want {
			t.Errorf("%s = %q, %v, %v; want %q", key, got, found, err, want)
		}
	}
	big, found, err := sqliteMetaValue(db, "meta", "big")
	if err != nil || !found || big != strings.Repeat("0123456789", 2000)+"end" {
		t.Errorf("overflowing value: found=%v err=%v len=%d", found, err, len(big))
	}
	if _, found, err := sqliteMetaValue(db, "meta", "key03000"); found || err != nil {
		t.Errorf("absent key: found=%v err=%v", found, err)
	}
	if _, _, err := sqliteMetaValue(db, "no_such_table", "x"); err == nil {
		t.Error("absent table: no error")
	}
}

func TestSQLiteVarint(t *testing.T) {
	cases := []struct {
		in   []byte
		want uint64
		n    int
	}{
		{[]byte{0x05}, 5, 1},
		{[]byte{0x81, 0x00}, 128, 2},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ^uint64(0), 9},
		{[]byte{0x81}, 0, 0}, // truncated
	}
	for _, c := range cases {
		if v, n := sqliteVarint(c.in); v != c.want || n != c.n {
			t.Errorf("varint(%x) = %d, %d; want %d, %d", c.in, v, n, c.want, c.n)
		}
	}
}
