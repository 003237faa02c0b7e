// Package engine is the table of Dagger Engine release contracts: for each supported range of
// engine releases, what the engine leaves in its state dir, how a clean exit is recognised on
// disk, which schema its dagql cache expects, which metrics it exports and what its image
// holds. Every part of warmpool that depends on the engine's behaviour (config validation, the
// save pre-flight, the drain hook, the restore verdict, the node simulator) reads it from here,
// so supporting a new release is one row.
//
// Facts are from the dagger/dagger source at each tag (paths in the comments). No release
// bounds its graceful stop by time while clients stay attached: v0.21+ strips the 5-minute
// gracefulStopTimeout, and before v0.21 the gRPC stop that precedes the capped one is unbounded
// too (cmd/engine/main.go, engine/server/server.go). A client still attached when the pod's
// grace period ends means SIGKILL.
package engine

import (
	"errors"
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// CleanExit is how a cleanly stopped engine is recognised on disk.
type CleanExit int

const (
	// LockGone: no record of a clean shutdown exists (before v0.21). The engine deletes
	// dagger-engine.lock only when main returns normally (cmd/engine/main.go), so the lock
	// file being gone, with every bolt DB opening read-only without error, is the proxy.
	LockGone CleanExit = iota
	// CleanRecord: the lock is free and dagql-cache.db holds meta.clean_shutdown = "1",
	// written only by (*Cache).Close after the state was persisted (dagql/cache.go, v0.21+).
	CleanRecord
)

func (c CleanExit) String() string {
	if c == CleanRecord {
		return "clean-shutdown record"
	}
	return "lock file gone"
}

// DagqlDB is what the engine keeps in dagql-cache.db (SQLite) at the root of its state dir.
type DagqlDB int

const (
	// DagqlNone: no dagql-cache.db (v0.19.0 - v0.19.3).
	DagqlNone DagqlDB = iota
	// DagqlCalls: one table calls(call_key, storage_key, expiration), no meta (v0.19.4 - v0.20.x).
	DagqlCalls
	// DagqlMeta: a meta(key, value) table with schema_version and clean_shutdown (v0.21+).
	DagqlMeta
)

// Files in the engine's state dir (/var/lib/dagger) that the contracts name.
const (
	LockFile  = "dagger-engine.lock"
	DagqlFile = "dagql-cache.db"
	// WorkerDir holds snapshots, the content store and containerd metadata; a wipe deletes it
	// with the dagql-cache.db* files (engine/server/server.go, initLocalCacheState).
	WorkerDir = "worker"
	// MetaCleanShutdown and MetaSchemaVersion are keys of dagql-cache.db's meta table
	// (dagql/persistdb/queries.go).
	MetaCleanShutdown = "clean_shutdown"
	MetaSchemaVersion = "schema_version"
	// WipeLogLine is what v0.21+ logs when it discards its cache at start.
	WipeLogLine = "local cache state invalid; resetting worker and dagql persistence state"
)

// Metric names the engine serves on _EXPERIMENTAL_DAGGER_METRICS_ADDR (cmd/engine/metrics.go).
const (
	MetricConnectedClients  = "dagger_connected_clients"
	MetricLocalCacheEntries = "dagger_local_cache_entries"
	MetricDagqlCacheEntries = "dagger_dagql_cache_entries"
	MetricCorruptDBReset    = "dagger_local_cache_corrupt_db_reset"
)

// Bolt DBs the engine opens at start; one that fails to open makes it wipe everything
// ("failed to initialize boltdbs", engine/server/server.go initBoltDBs).
var (
	// v0.21+ opens the containerd metadata and the snapshotter's metadata only; it still
	// names worker/metadata_v2.db but never opens it (engine/server/server.go at v0.21.0,
	// v0.21.8, v1.0.0-beta.10), so a v0.21 cache need not have one.
	boltWorker = []string{"worker/containerdmeta.db", "worker/snapshots/metadata.db"}
	// Before v0.21 the solver cache (cache.db, bboltcachestorage) sat at the root, and the
	// worker's cache metadata in worker/metadata_v2.db.
	boltWithSolver = []string{"cache.db", "worker/containerdmeta.db", "worker/metadata_v2.db", "worker/snapshots/metadata.db"}
)

// Contract is what one range of engine releases does with its cache.
type Contract struct {
	// Name identifies the row (engine.contract in the config may name it for a release that
	// is not in the table yet).
	Name string
	// From and Through bound the releases (inclusive), as Dagger tags them.
	From, Through string
	CleanExit     CleanExit
	DagqlDB       DagqlDB
	// SchemaVersion is the meta.schema_version the engine expects; another value makes it
	// wipe its cache at start (dagql/cache.go cachePersistenceSchemaVersion). Empty before v0.21.
	SchemaVersion string
	// BoltDBs are the bolt files, relative to the state dir, the engine opens at start.
	BoltDBs []string
	// Metrics are the metric names the release exports.
	Metrics []string
	// HTTPClient is the HTTP client the engine image ships ("wget" in the Alpine images up to
	// v0.19.7, "" in the Wolfi images from v0.19.8, build/builder.go).
	HTTPClient string
}

// Has reports whether the release exports the metric name.
func (c Contract) Has(metric string) bool {
	for _, m := range c.Metrics {
		if m == metric {
			return true
		}
	}
	return false
}

// Range renders the releases the contract covers.
func (c Contract) Range() string { return c.From + " - " + c.Through }

var (
	metricsV019   = []string{MetricConnectedClients, MetricLocalCacheEntries}
	metricsV0195  = append(append([]string{}, metricsV019...), MetricCorruptDBReset)
	metricsV020   = append(append([]string{}, metricsV0195...), MetricDagqlCacheEntries)
	contractTable = []Contract{
		{Name: "v0.19.0", From: "v0.19.0", Through: "v0.19.3", CleanExit: LockGone, DagqlDB: DagqlNone, BoltDBs: boltWithSolver, Metrics: metricsV019, HTTPClient: "wget"},
		{Name: "v0.19.4", From: "v0.19.4", Through: "v0.19.4", CleanExit: LockGone, DagqlDB: DagqlCalls, BoltDBs: boltWithSolver, Metrics: metricsV019, HTTPClient: "wget"},
		{Name: "v0.19.5", From: "v0.19.5", Through: "v0.19.7", CleanExit: LockGone, DagqlDB: DagqlCalls, BoltDBs: boltWithSolver, Metrics: metricsV0195, HTTPClient: "wget"},
		{Name: "v0.19.8", From: "v0.19.8", Through: "v0.19.11", CleanExit: LockGone, DagqlDB: DagqlCalls, BoltDBs: boltWithSolver, Metrics: metricsV0195},
		{Name: "v0.20", From: "v0.20.0", Through: "v0.20.8", CleanExit: LockGone, DagqlDB: DagqlCalls, BoltDBs: boltWithSolver, Metrics: metricsV020},
		{Name: "v0.21", From: "v0.21.0", Through: "v0.21.8", CleanExit: CleanRecord, DagqlDB: DagqlMeta, SchemaVersion: "16", BoltDBs: boltWorker, Metrics: metricsV020},
		{Name: "v1.0-beta.1", From: "v1.0.0-beta.1", Through: "v1.0.0-beta.7", CleanExit: CleanRecord, DagqlDB: DagqlMeta, SchemaVersion: "16", BoltDBs: boltWorker, Metrics: metricsV020},
		{Name: "v1.0-beta.8", From: "v1.0.0-beta.8", Through: "v1.0.0-beta.10", CleanExit: CleanRecord, DagqlDB: DagqlMeta, SchemaVersion: "17", BoltDBs: boltWorker, Metrics: metricsV020},
	}
)

// Current is the newest stable release the table knows: the default of examples and docs.
const Current = "v0.21.8"

// ErrUnsupported: the version is in no row of the table.
var ErrUnsupported = errors.New("engine version not in warmpool's table of engine contracts")

// Contracts returns a copy of the table, oldest first.
func Contracts() []Contract { return append([]Contract(nil), contractTable...) }

// Supported renders the supported ranges for an error message.
func Supported() string {
	parts := make([]string, 0, len(contractTable))
	for _, c := range contractTable {
		parts = append(parts, c.Range())
	}
	return strings.Join(parts, ", ")
}

// ForVersion returns the contract of an engine release ("v0.21.8" or "0.21.8").
func ForVersion(version string) (Contract, error) {
	v, err := semver.StrictNewVersion(strings.TrimPrefix(version, "v"))
	if err != nil {
		return Contract{}, fmt.Errorf("%w: %q is not a release version (vMAJOR.MINOR.PATCH[-PRERELEASE]; supported: %s)", ErrUnsupported, version, Supported())
	}
	for _, c := range contractTable {
		from := semver.MustParse(c.From)
		through := semver.MustParse(c.Through)
		if !v.LessThan(from) && !v.GreaterThan(through) {
			return c, nil
		}
	}
	return Contract{}, fmt.Errorf("%w: %s (supported: %s)", ErrUnsupported, version, Supported())
}

// ByName returns the contract a config names explicitly (engine.contract).
func ByName(name string) (Contract, error) {
	for _, c := range contractTable {
		if c.Name == name {
			return c, nil
		}
	}
	names := make([]string, 0, len(contractTable))
	for _, c := range contractTable {
		names = append(names, c.Name)
	}
	return Contract{}, fmt.Errorf("%w: no contract named %q (one of %s)", ErrUnsupported, name, strings.Join(names, ", "))
}

// Resolve is the contract of a pool's engine: the named one when the config names one (a
// release newer than the table, declared by the user to behave like a known one), else the
// version's row.
func Resolve(version, name string) (Contract, error) {
	if name != "" {
		return ByName(name)
	}
	return ForVersion(version)
}
