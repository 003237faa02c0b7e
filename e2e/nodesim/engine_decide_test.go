package nodesim

import (
	"errors"
	"testing"

	"warmpool.io/warmpool/volumes/engine"
)

func contract(t *testing.T, version string) engine.Contract {
	t.Helper()
	c, err := engine.ForVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDecideStartPerContract: each release keeps or wipes exactly as its source says
// (engine/server/server.go, dagql/cache.go).
func TestDecideStartPerContract(t *testing.T) {
	torn := errors.New("invalid database")
	clean := dagqlState{present: true, hasSchema: true, schemaVersion: "16", hasClean: true, cleanShutdown: "1", entries: 3, refs: []string{"1"}}
	with := func(f func(*dagqlState)) dagqlState { d := clean; f(&d); return d }
	for _, tc := range []struct {
		name, version string
		st            diskState
		scope         wipeScope
		reason        string
	}{
		{"v0.19.0 first start", "v0.19.0", diskState{}, keepAll, ""},
		{"v0.19.7 cache of a killed engine is reused", "v0.19.7", diskState{snapshots: 3, dagql: dagqlState{present: true, entries: 3}}, keepAll, ""},
		{"v0.19.7 torn bolt DB wipes the whole root", "v0.19.7", diskState{snapshots: 3, boltErr: torn}, wipeRoot, WipeBoltDBs},
		{"v0.20 unreadable dagql db is only reset", "v0.20.8", diskState{snapshots: 3, dagql: dagqlState{present: true, err: torn}}, resetDagqlDB, DagqlDBReset},
		{"v0.19.3 has no dagql db to reset", "v0.19.3", diskState{snapshots: 3, dagql: dagqlState{present: true, err: torn}}, keepAll, ""},
		{"v0.21 clean record kept", "v0.21.8", diskState{snapshots: 3, dagql: clean}, keepAll, ""},
		{"v0.21 unclean record wipes", "v0.21.8", diskState{snapshots: 3, dagql: with(func(d *dagqlState) { d.cleanShutdown = "0" })}, wipeLocalState, WipeUncleanShutdown},
		{"v0.21 absent clean row does not wipe", "v0.21.0", diskState{snapshots: 3, dagql: with(func(d *dagqlState) { d.hasClean, d.cleanShutdown = false, "" })}, keepAll, ""},
		{"v0.21 absent schema row does not wipe", "v0.21.0", diskState{snapshots: 3, dagql: with(func(d *dagqlState) { d.hasSchema = false })}, keepAll, ""},
		{"v0.21 schema mismatch wipes before the clean record counts", "v0.21.8", diskState{snapshots: 3, dagql: with(func(d *dagqlState) { d.schemaVersion = "17" })}, wipeLocalState, WipeSchemaMismatch},
		{"v1.0-beta.10 expects schema 17", "v1.0.0-beta.10", diskState{snapshots: 3, dagql: clean}, wipeLocalState, WipeSchemaMismatch},
		{"v0.21 missing leased snapshot fails the import (#13952)", "v0.21.8", diskState{snapshots: 2, dagql: clean, missingRefs: []string{"3"}}, wipeLocalState, WipeImportFailure},
		{"v0.21 unreadable dagql db", "v0.21.8", diskState{snapshots: 3, dagql: dagqlState{present: true, err: torn}}, wipeLocalState, WipeDagqlOpen},
		{"v0.21 torn bolt DB first", "v0.21.8", diskState{snapshots: 3, boltErr: torn, dagql: with(func(d *dagqlState) { d.cleanShutdown = "0" })}, wipeLocalState, WipeBoltInit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := decideStart(contract(t, tc.version), tc.st)
			if v.scope != tc.scope || v.reason != tc.reason {
				t.Errorf("verdict %+v, want scope %d reason %q", v, tc.scope, tc.reason)
			}
			if v.wiped() != (tc.scope == wipeLocalState || tc.scope == wipeRoot) {
				t.Errorf("wiped() = %v for scope %d", v.wiped(), v.scope)
			}
		})
	}
}

func TestWipeLogLineNamesTheReason(t *testing.T) {
	c := contract(t, "v0.21.8")
	v := decideStart(c, diskState{dagql: dagqlState{present: true, hasClean: true, cleanShutdown: "0"}})
	if got, want := v.logLine(c), engine.WipeLogLine+" reason="+WipeUncleanShutdown; len(got) < len(want) || got[:len(want)] != want {
		t.Errorf("log line %q, want it to start with %q", got, want)
	}
	if got := (startVerdict{}).logLine(c); got != "" {
		t.Errorf("a kept cache logs %q, want nothing", got)
	}
}
