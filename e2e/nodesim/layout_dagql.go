package nodesim

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"warmpool.io/warmpool/volumes/engine"
)

// The engine's dagql cache database as each contract lays it out: read back, written fresh, and
// its tables.

// readDagql reads dagql-cache.db as the release would; c.DagqlDB says which tables it knows.
func readDagql(path string, c engine.Contract) dagqlState {
	st := dagqlState{}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return st
	} else if err != nil {
		return dagqlState{present: true, err: err}
	}
	st.present = true
	db, err := readSQLite(path)
	if err != nil {
		st.err = err
		return st
	}
	fail := func(err error) dagqlState { st.err = err; return st }
	switch c.DagqlDB {
	case engine.DagqlCalls:
		rows, _, err := db.table("calls")
		if err != nil {
			return fail(err)
		}
		st.calls, st.entries = rows, len(rows)
	case engine.DagqlMeta:
		meta, _, err := db.table("meta")
		if err != nil {
			return fail(err)
		}
		for _, r := range meta {
			if len(r) < 2 {
				return fail(errors.New("meta: short row"))
			}
			k, _ := r[0].(string)
			v, ok := r[1].(string)
			if !ok {
				return fail(fmt.Errorf("meta %q: value is not TEXT", k))
			}
			switch k {
			case engine.MetaSchemaVersion:
				st.schemaVersion, st.hasSchema = v, true
			case engine.MetaCleanShutdown:
				st.cleanShutdown, st.hasClean = v, true
			}
		}
		if st.results, _, err = db.table("results"); err != nil {
			return fail(err)
		}
		st.entries = len(st.results)
		if st.links, _, err = db.table("result_snapshot_links"); err != nil {
			return fail(err)
		}
		for _, r := range st.links {
			if len(r) < 2 {
				return fail(errors.New("result_snapshot_links: short row"))
			}
			ref, ok := r[1].(string)
			if !ok {
				return fail(errors.New("result_snapshot_links: ref_key is not TEXT"))
			}
			st.refs = append(st.refs, ref)
		}
	}
	return st
}

// dagqlTables renders the release's dagql-cache.db tables. For v0.21+ meta holds
// schema_version and clean_shutdown = clean.
func dagqlTables(c engine.Contract, st dagqlState, clean string) []sqlTable {
	if c.DagqlDB == engine.DagqlCalls {
		idx := make([][]any, 0, len(st.calls))
		for _, r := range st.calls {
			if len(r) >= 3 {
				idx = append(idx, []any{r[2], r[0]}) // (expiration, call_key): index key + primary key
			}
		}
		return []sqlTable{
			{name: "calls", tblName: "calls", sql: ddlCalls, withoutRowid: true, rows: st.calls},
			{name: "calls_exp_idx", tblName: "calls", index: true, sql: ddlCallsIdx, rows: idx},
		}
	}
	return []sqlTable{
		{name: "meta", tblName: "meta", sql: ddlMeta, withoutRowid: true, rows: [][]any{
			{engine.MetaSchemaVersion, c.SchemaVersion}, {engine.MetaCleanShutdown, clean},
		}},
		{name: "results", tblName: "results", sql: ddlResults, rows: st.results},
		{name: "result_snapshot_links", tblName: "result_snapshot_links", sql: ddlSnapshotLinks, withoutRowid: true, rows: st.links},
	}
}

// freshDagql is the dagql state of a cache built on snapshots: one call or result per
// snapshot, each result linked to its snapshot.
func freshDagql(c engine.Contract, snapshots []string) dagqlState {
	st := dagqlState{}
	now := time.Now()
	for i, id := range snapshots {
		key := hex.EncodeToString(random(16))
		st.calls = append(st.calls, []any{"sha256:" + key, "sha256:" + hex.EncodeToString(random(16)), now.Add(24 * time.Hour).Unix()})
		// results.id is the rowid (INTEGER PRIMARY KEY): the record stores NULL there.
		st.results = append(st.results, []any{nil, `{"field":"withExec","n":` + strconv.Itoa(i) + `}`, []byte(`{"version":1}`), "[]",
			int64(0), now.UnixNano(), now.UnixNano(), "container", "build step " + id})
		st.links = append(st.links, []any{int64(i + 1), id, "snapshot"})
	}
	st.entries = len(snapshots)
	if c.DagqlDB == engine.DagqlCalls {
		st.entries = len(st.calls)
	}
	return st
}

// writeDagql writes dagql-cache.db for the release. For v0.21+ running=true models the
// engine at start: the main file holds the state as last checkpointed (clean_shutdown "1")
// and the write-ahead log the start's clean_shutdown "0", which every reader that replays the
// log (SQLite, the engine, warmpool's reader) sees; a killed engine leaves both. running=false
// is the graceful close: checkpointed with "1", no log.
func writeDagql(dir string, c engine.Contract, st dagqlState, running bool) error {
	if c.DagqlDB == engine.DagqlNone {
		return nil
	}
	p := filepath.Join(dir, engine.DagqlFile)
	tables := dagqlTables(c, st, "1")
	data, err := buildSQLite(tables, true)
	if err != nil {
		return fmt.Errorf("building %s: %w", engine.DagqlFile, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(p + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := writeFileAtomic(p, data); err != nil {
		return err
	}
	if !running || c.DagqlDB != engine.DagqlMeta {
		return nil
	}
	// meta is the first table: page 2.
	page, err := tablePage(dagqlTables(c, st, "0")[0])
	if err != nil {
		return err
	}
	wal := buildWAL(map[uint32][]byte{2: page}, uint32(len(data)/sqlitePageSize), randUint32(), randUint32())
	return writeFileAtomic(p+"-wal", wal)
}
