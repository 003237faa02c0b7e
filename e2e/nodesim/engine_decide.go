package nodesim

import (
	"fmt"
	"strings"

	"warmpool.io/warmpool/volumes/engine"
)

// Why an engine discarded its cache at start. From v0.21 these are the reasons the engine
// logs with engine.WipeLogLine (engine/server/server.go, localCacheStateResetReason, and
// "dagql_" + dagql.CachePersistenceResetReason); before v0.21 the engine logs
// "failed to initialize boltdbs, resetting all local cache state" (WipeBoltDBs) or, for a
// dagql-cache.db it cannot open, removes just that file (DagqlDBReset, the worker is kept).
const (
	WipeBoltInit         = "boltdb_init_failed"
	WipeDagqlOpen        = "dagql_open_failed"
	WipeSchemaMismatch   = "dagql_schema_mismatch"
	WipeUncleanShutdown  = "dagql_unclean_shutdown"
	WipeImportFailure    = "dagql_import_failure"
	WipeBoltDBs          = "failed to initialize boltdbs"
	DagqlDBReset         = "failed to create dagql cache"
	wipeLogLineBeforeV21 = "failed to initialize boltdbs, resetting all local cache state"
)

// wipeScope is what a start deletes.
type wipeScope int

const (
	keepAll wipeScope = iota
	// wipeLocalState: worker/ and the dagql-cache.db* files; secret-salt stays (v0.21+).
	wipeLocalState
	// wipeRoot: every entry of the state dir (before v0.21, on a bolt DB that fails to open).
	wipeRoot
	// resetDagqlDB: only dagql-cache.db, recreated empty; the worker stays (v0.19.4 - v0.20,
	// on a dagql-cache.db that fails to open).
	resetDagqlDB
)

// startVerdict is what the engine does with the cache it finds.
type startVerdict struct {
	scope wipeScope
	// reason is one of the Wipe* constants (or DagqlDBReset); detail adds the error.
	reason, detail string
	// corruptDBReset is what dagger_local_cache_corrupt_db_reset reports.
	corruptDBReset bool
}

// wiped reports whether the verdict discards the worker (the local cache).
func (v startVerdict) wiped() bool { return v.scope == wipeLocalState || v.scope == wipeRoot }

// logLine is what the release logs for the verdict ("" for none).
func (v startVerdict) logLine(c engine.Contract) string {
	switch {
	case !v.wiped() && v.scope != resetDagqlDB:
		return ""
	case v.scope == resetDagqlDB:
		return "failed to create dagql cache, attempting to recover by removing existing cache db: " + v.detail
	case c.CleanExit == engine.CleanRecord:
		return fmt.Sprintf("%s reason=%s error=%q", engine.WipeLogLine, v.reason, v.detail)
	default:
		return fmt.Sprintf("%s error=%q", wipeLogLineBeforeV21, v.detail)
	}
}

// decideStart decides, exactly as the release does at start, whether it keeps the cache it
// finds. The order is the engine's: bolt DBs first, then dagql-cache.db's open, schema
// version, clean-shutdown record and import; the first failure decides.
//
// Before v0.21 nothing records a clean shutdown, so a cache left by a killed engine (its lock
// file still there) is reused: only a bolt DB that fails to open discards it.
func decideStart(c engine.Contract, st diskState) startVerdict {
	if c.CleanExit != engine.CleanRecord {
		switch {
		case st.boltErr != nil:
			return startVerdict{scope: wipeRoot, reason: WipeBoltDBs, detail: st.boltErr.Error(), corruptDBReset: true}
		case c.DagqlDB == engine.DagqlCalls && st.dagql.err != nil:
			return startVerdict{scope: resetDagqlDB, reason: DagqlDBReset, detail: st.dagql.err.Error()}
		}
		return startVerdict{}
	}
	switch {
	case st.boltErr != nil:
		return startVerdict{scope: wipeLocalState, reason: WipeBoltInit, detail: st.boltErr.Error(), corruptDBReset: true}
	case st.dagql.err != nil:
		return startVerdict{scope: wipeLocalState, reason: WipeDagqlOpen, detail: st.dagql.err.Error()}
	// An absent row wipes nothing: a database without meta rows (a fresh one, or one an
	// older release wrote) is reused.
	case st.dagql.hasSchema && st.dagql.schemaVersion != c.SchemaVersion:
		return startVerdict{scope: wipeLocalState, reason: WipeSchemaMismatch,
			detail: fmt.Sprintf("expected schema_version %q, found %q", c.SchemaVersion, st.dagql.schemaVersion)}
	case st.dagql.hasClean && st.dagql.cleanShutdown != "1":
		return startVerdict{scope: wipeLocalState, reason: WipeUncleanShutdown, detail: fmt.Sprintf("clean_shutdown=%q", st.dagql.cleanShutdown)}
	case len(st.missingRefs) > 0:
		// dagger#13952: a persisted result names a snapshot that is not on disk.
		return startVerdict{scope: wipeLocalState, reason: WipeImportFailure,
			detail: "persisted results name missing snapshots " + strings.Join(st.missingRefs, ", ")}
	}
	return startVerdict{}
}
