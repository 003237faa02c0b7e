package copier

import (
	"bufio"
	"bytes"
	"reflect"
	"testing"
	"time"
)

// FuzzReadManifest feeds arbitrary bytes to the manifest decoder. It must
// never panic, and whatever it accepts must survive a round trip through the
// encoder unchanged (so a manifest Verify accepts is one Copy could write).
// Seeds: testdata/fuzz/FuzzReadManifest plus the ones below.
func FuzzReadManifest(f *testing.F) {
	f.Add([]byte(`{"formatVersion":1,"engineVersion":"v0.21.8","architecture":"amd64","created":"2026-01-02T03:04:05.123456789Z","durationNs":1500000000,"totals":{"files":1,"dirs":1,"symlinks":1,"hardlinks":1,"specials":0,"bytes":5},"stats":{"copiedFiles":1},"entries":[
{"path":"a","type":"dir","mode":1517,"mtimeNs":-1},
{"path":"a/f.db","type":"file","size":5,"mode":420,"mtimeNs":1,"uid":1,"gid":2,"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
{"path":"a/h","type":"file","size":5,"mode":420,"mtimeNs":1,"link":"a/f.db"},
{"path":"l","type":"symlink","mode":511,"mtimeNs":0,"target":"a/f.db","targetBytes":"/w8="},
{"path":"w","type":"char","mode":0,"mtimeNs":0}]}`))
	f.Add([]byte(`{"formatVersion":1,"entries":[]}`))
	f.Add([]byte(`{"formatVersion":1,"entries":[{"path":"x","pathBytes":"eP8=","type":"fifo","mode":384,"mtimeNs":0}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := encodeManifest(w, &m); err != nil {
			t.Fatalf("encoding an accepted manifest: %v", err)
		}
		w.Flush()
		m2, err := ParseManifest(buf.Bytes())
		if err != nil {
			t.Fatalf("re-parsing our own encoding: %v\n%s", err, buf.Bytes())
		}
		normalize(&m)
		normalize(&m2)
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}

// normalize erases differences JSON cannot carry: nil vs empty slices and
// the time zone representation.
func normalize(m *Manifest) {
	m.Created = m.Created.UTC().Round(0)
	if m.Created.IsZero() {
		m.Created = time.Time{}
	}
	if len(m.Entries) == 0 {
		m.Entries = nil
	}
	if len(m.Warnings) == 0 {
		m.Warnings = nil
	}
}
