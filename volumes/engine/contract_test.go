package engine

import (
	"errors"
	"strings"
	"testing"
)

func TestForVersionRowEdges(t *testing.T) {
	cases := []struct {
		version   string
		row       string
		cleanExit CleanExit
		dagql     DagqlDB
		schema    string
	}{
		{"v0.19.0", "v0.19.0", LockGone, DagqlNone, ""},
		{"v0.19.3", "v0.19.0", LockGone, DagqlNone, ""},
		{"v0.19.4", "v0.19.4", LockGone, DagqlCalls, ""}, // dagql-cache.db appears
		{"0.19.4", "v0.19.4", LockGone, DagqlCalls, ""},  // the v is optional
		{"v0.19.5", "v0.19.5", LockGone, DagqlCalls, ""},
		{"v0.19.7", "v0.19.5", LockGone, DagqlCalls, ""},
		{"v0.19.8", "v0.19.8", LockGone, DagqlCalls, ""}, // Wolfi images
		{"v0.19.11", "v0.19.8", LockGone, DagqlCalls, ""},
		{"v0.20.0", "v0.20", LockGone, DagqlCalls, ""},
		{"v0.20.8", "v0.20", LockGone, DagqlCalls, ""},
		{"v0.21.0", "v0.21", CleanRecord, DagqlMeta, "16"},
		{"v0.21.8", "v0.21", CleanRecord, DagqlMeta, "16"},
		{"v1.0.0-beta.1", "v1.0-beta.1", CleanRecord, DagqlMeta, "16"},
		{"v1.0.0-beta.7", "v1.0-beta.1", CleanRecord, DagqlMeta, "16"},
		{"v1.0.0-beta.8", "v1.0-beta.8", CleanRecord, DagqlMeta, "17"},
		{"v1.0.0-beta.10", "v1.0-beta.8", CleanRecord, DagqlMeta, "17"},
	}
	for _, tc := range cases {
		c, err := ForVersion(tc.version)
		if err != nil {
			t.Errorf("ForVersion(%q): %v", tc.version, err)
			continue
		}
		if c.Name != tc.row || c.CleanExit != tc.cleanExit || c.DagqlDB != tc.dagql || c.SchemaVersion != tc.schema {
			t.Errorf("ForVersion(%q) = row %q (%v, dagql %d, schema %q), want row %q (%v, dagql %d, schema %q)",
				tc.version, c.Name, c.CleanExit, c.DagqlDB, c.SchemaVersion, tc.row, tc.cleanExit, tc.dagql, tc.schema)
		}
	}
}

// What each row says about the image and the bolt DBs, at the edges where they change.
func TestForVersionFacts(t *testing.T) {
	for version, want := range map[string]string{"v0.19.7": "wget", "v0.19.8": "", "v0.21.8": ""} {
		if c, _ := ForVersion(version); c.HTTPClient != want {
			t.Errorf("%s HTTP client %q, want %q", version, c.HTTPClient, want)
		}
	}
	for version, solver := range map[string]bool{"v0.19.0": true, "v0.20.8": true, "v0.21.0": false, "v1.0.0-beta.10": false} {
		c, _ := ForVersion(version)
		has := false
		for _, db := range c.BoltDBs {
			has = has || db == "cache.db"
		}
		if has != solver {
			t.Errorf("%s bolt DBs %v: solver cache.db listed %v, want %v", version, c.BoltDBs, has, solver)
		}
	}
	if c, _ := ForVersion("v0.19.4"); c.Has(MetricCorruptDBReset) {
		t.Error("v0.19.4 exports the corrupt-db metric, added in v0.19.5")
	}
	if c, _ := ForVersion("v0.21.8"); !c.Has(MetricDagqlCacheEntries) || !c.Has(MetricConnectedClients) {
		t.Error("v0.21.8 lacks the dagql cache or connected clients metric")
	}
}

func TestForVersionUnsupported(t *testing.T) {
	for _, v := range []string{"v0.18.11", "v0.21.9", "v0.22.0", "v1.0.0", "v1.0.0-beta.11", "v1.0.0-rc.1", "garbage", "", "v0.21", "latest"} {
		_, err := ForVersion(v)
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("ForVersion(%q) = %v, want ErrUnsupported", v, err)
			continue
		}
		if !strings.Contains(err.Error(), "v0.19.0 - v0.19.3") || !strings.Contains(err.Error(), "v1.0.0-beta.8 - v1.0.0-beta.10") {
			t.Errorf("ForVersion(%q) = %v, want it to name the supported ranges", v, err)
		}
	}
}

func TestByNameAndResolve(t *testing.T) {
	for _, c := range Contracts() {
		got, err := ByName(c.Name)
		if err != nil || got.Name != c.Name {
			t.Errorf("ByName(%q) = %q, %v", c.Name, got.Name, err)
		}
		// Every row's bounds resolve to that row.
		for _, v := range []string{c.From, c.Through} {
			if got, err := ForVersion(v); err != nil || got.Name != c.Name {
				t.Errorf("ForVersion(%q) = %q, %v; want row %q", v, got.Name, err, c.Name)
			}
		}
	}
	if _, err := ByName("v0.22"); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "v0.21") {
		t.Errorf("ByName(unknown) = %v, want ErrUnsupported listing the row names", err)
	}

	// A named contract wins over the version: a release newer than the table, declared by the
	// user to behave like a known row.
	c, err := Resolve("v0.21.9", "v0.21")
	if err != nil || c.Name != "v0.21" {
		t.Errorf("Resolve(v0.21.9, v0.21) = %q, %v", c.Name, err)
	}
	if c, err := Resolve("v0.20.3", ""); err != nil || c.Name != "v0.20" {
		t.Errorf("Resolve(v0.20.3, \"\") = %q, %v", c.Name, err)
	}
	if _, err := Resolve("v0.21.9", ""); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Resolve(v0.21.9, \"\") = %v, want ErrUnsupported", err)
	}
	if _, err := Resolve("v0.21.8", "nope"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Resolve(v0.21.8, nope) = %v, want ErrUnsupported", err)
	}
	if c, err := ForVersion(Current); err != nil || c.CleanExit != CleanRecord {
		t.Errorf("Current %s: %v, %v", Current, c.Name, err)
	}
}

// Contracts is a copy: a caller cannot change the table.
func TestContractsIsACopy(t *testing.T) {
	cs := Contracts()
	cs[0].Name = "changed"
	if Contracts()[0].Name == "changed" {
		t.Error("Contracts returned the table itself")
	}
}
