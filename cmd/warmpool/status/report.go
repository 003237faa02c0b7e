// Package status answers "what is each warmpool pool doing, and why" from what the cluster
// holds: the config, the NodePools and nodes, the scaling state recorded on each pool's headroom
// object, the cache snapshots, the outcomes recorded on nodes, and the Events. Gather reads them
// into a Report through a client.Reader (no writes, no watches); Render and the JSON/YAML
// encodings print it. `warmpool status` and `warmpool snapshots` are built on it.
//
// What the cluster does not hold is said to be unknown, never guessed: a queue source's last
// reading lives only in the leading controller's memory (and its metrics endpoint), and a kind
// the caller may not read is named in Report.Unknown.
package status

import "time"

// Report is the whole answer, one stable shape for the table, JSON and YAML. Times are absolute;
// ages are computed from GatheredAt when rendering, so a Report reads the same later.
type Report struct {
	GatheredAt time.Time `json:"gatheredAt"`
	// Namespace is warmpool's namespace (its ConfigMap, headroom objects, snapshots).
	Namespace string `json:"namespace"`
	Config    Config `json:"config"`
	Pools     []Pool `json:"pools"`
	// Metrics says where the queue sources' readings came from: the controller's metrics
	// endpoint that was read, or "" when none was (the readings are then unknown).
	Metrics string `json:"metrics,omitempty"`
	// Unknown lists what could not be read (a Forbidden, a kind the cluster does not serve, an
	// endpoint that did not answer). The report is partial when it is not empty.
	Unknown []Unknown `json:"unknown,omitempty"`
	// UnattributedEvents are cache Events of nodes that are gone and whose pool nothing in the
	// cluster names any more (shown so that a failed save is not hidden).
	UnattributedEvents []Event `json:"unattributedEvents,omitempty"`
}

// Config is the warmpool ConfigMap as found.
type Config struct {
	// ConfigMap is namespace/name.
	ConfigMap string `json:"configMap"`
	// Found: the ConfigMap exists and could be read.
	Found bool `json:"found"`
	// Error is why its config.yaml is not in force ("" when it parsed); the controller then
	// keeps the last good config it had.
	Error string `json:"error,omitempty"`
}

// Unknown is one thing the report could not read.
type Unknown struct {
	// What names the kind or endpoint ("VolumeSnapshot", "Event", "metrics").
	What string `json:"what"`
	// Namespace the read was in; "" for cluster-scoped kinds.
	Namespace string `json:"namespace,omitempty"`
	Reason    string `json:"reason"`
}

// Pool is one pool's state.
type Pool struct {
	Name string `json:"name"`
	// InConfig: the pool is in the config in force; false for a NodePool warmpool left behind
	// (or when the config could not be read).
	InConfig bool      `json:"inConfig"`
	NodePool *NodePool `json:"nodePool,omitempty"`
	Nodes    Nodes     `json:"nodes"`
	Scaling  Scaling   `json:"scaling"`
	Sources  []Source  `json:"sources,omitempty"`
	Cache    Cache     `json:"cache"`
	// Events are the newest Events about the pool's objects (NodePool, nodes, NodeClaims,
	// snapshots, headroom), newest first.
	Events []Event `json:"events,omitempty"`
	// Unknown names the sections of this pool that could not be read (see Report.Unknown).
	Unknown []string `json:"unknown,omitempty"`
}

// NodePool is the pool's Karpenter NodePool.
type NodePool struct {
	Name string `json:"name"`
	// NodeClass is Kind/name of the node class it references.
	NodeClass string `json:"nodeClass"`
	// NodeClassReady is the node class's Ready condition ("True", "False", "Unknown"), "" when
	// the node class could not be read or reports none; NodeClassFound says it exists.
	NodeClassFound bool   `json:"nodeClassFound"`
	NodeClassReady string `json:"nodeClassReady,omitempty"`
	// Busy is "true" or "false" as the scaling controller last decided (the NodePool's
	// warmpool.io/busy annotation; "false" too when it is absent but the pool's scaling state
	// is recorded: the controller writes it only once a pool was busy), "" when it never did.
	Busy string `json:"busy,omitempty"`
	// Budgets are the disruption budgets in force, as Karpenter reads them (the busy budget
	// first while busy).
	Budgets       []Budget `json:"budgets,omitempty"`
	Consolidation string   `json:"consolidation,omitempty"`
	// LimitNodes is the NodePool's node limit ("" when none).
	LimitNodes string `json:"limitNodes,omitempty"`
}

// Budget is one Karpenter disruption budget.
type Budget struct {
	Nodes    string   `json:"nodes"`
	Reasons  []string `json:"reasons,omitempty"`
	Schedule string   `json:"schedule,omitempty"`
	Duration string   `json:"duration,omitempty"`
}

// Nodes counts the pool's nodes.
type Nodes struct {
	// Current nodes registered with the pool's label; Ready of them; Deleting of them are being
	// removed.
	Current  int `json:"current"`
	Ready    int `json:"ready"`
	Deleting int `json:"deleting"`
	// Launching NodeClaims have no node yet.
	Launching int      `json:"launching"`
	Names     []string `json:"names,omitempty"`
}

// Scaling is what the scaling controller last recorded for the pool.
type Scaling struct {
	// Headroom names the headroom object ("Deployment ns/name", "CapacityBuffer ns/name"); ""
	// when the pool has none (never actuated).
	Headroom string `json:"headroom,omitempty"`
	// Desired nodes as last recorded (nil: unknown), at RecordedAt (the evaluation that wrote it).
	Desired    *int       `json:"desired,omitempty"`
	RecordedAt *time.Time `json:"recordedAt,omitempty"`
	// Spare is the idle nodes the last evaluation kept above the queue's demand (scaling.spare:
	// adaptive, constant or a warm window's), as recorded with Desired; nil when unknown.
	Spare *int `json:"spare,omitempty"`
	// BurstHold is the nodes the burst hold kept (scaling.burstHold: a share of the recent peak
	// demand), as recorded with Desired; nil when unknown.
	BurstHold *int `json:"burstHold,omitempty"`
	// HeadroomReplicas are the headroom's replicas (placeholder pods or CapacityBuffer
	// replicas): the desired nodes not busy with work when the controller last actuated, the
	// spare included.
	HeadroomReplicas *int `json:"headroomReplicas,omitempty"`
	// StateError says why the recorded state could not be read ("" when it was).
	StateError string `json:"stateError,omitempty"`
}

// Source is one queue source of the pool.
type Source struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Queued and Running are its last good reading; StalenessSeconds how old that reading is
	// (-1: it never answered). All nil when unknown (no metrics endpoint read, or no series).
	Queued           *int     `json:"queued,omitempty"`
	Running          *int     `json:"running,omitempty"`
	StalenessSeconds *float64 `json:"stalenessSeconds,omitempty"`
}

// Cache is the pool's cache story.
type Cache struct {
	Enabled bool `json:"enabled"`
	// Snapshots are the pool's newest snapshots (newest first, at most Options.Snapshots);
	// Total counts them all.
	Snapshots []Snapshot `json:"snapshots,omitempty"`
	Total     int        `json:"total"`
	// LastSave and LastRestore are the newest outcomes (nil: none seen).
	LastSave    *Outcome `json:"lastSave,omitempty"`
	LastRestore *Outcome `json:"lastRestore,omitempty"`
	// ColdStarts are the newest nodes that started without a restored cache, and why.
	ColdStarts []Outcome `json:"coldStarts,omitempty"`
}

// Snapshot is one cache VolumeSnapshot.
type Snapshot struct {
	Name          string    `json:"name"`
	Pool          string    `json:"pool"`
	Arch          string    `json:"arch"`
	EngineVersion string    `json:"engineVersion"`
	Created       time.Time `json:"created"`
	// Bytes is the cache size the save copied (nil: not recorded); RestoreSize the volume size
	// the snapshotter reports ("" when not yet).
	Bytes       *int64 `json:"bytes,omitempty"`
	RestoreSize string `json:"restoreSize,omitempty"`
	Ready       bool   `json:"ready"`
	// Good: ready, not quarantined, not failed (a restore may choose it).
	Good             bool   `json:"good"`
	Quarantined      bool   `json:"quarantined"`
	QuarantineReason string `json:"quarantineReason,omitempty"`
	Failed           string `json:"failed,omitempty"`
	Error            string `json:"error,omitempty"`
	Deleting         bool   `json:"deleting,omitempty"`
	// Base is the snapshot this one was saved incrementally from ("" for a full save).
	Base       string `json:"base,omitempty"`
	SourceNode string `json:"sourceNode,omitempty"`
}

// Outcome is one save, restore or cold start of a node.
type Outcome struct {
	Node string `json:"node"`
	// Result: for a save saved|unclean|failed|timeout|lost; for a restore warm|wiped|unverified|
	// verifying|cold; for a cold start the reason (no-snapshot, restore-timeout, ...).
	Result   string    `json:"result"`
	Snapshot string    `json:"snapshot,omitempty"`
	At       time.Time `json:"at,omitzero"`
	// Reason and Message are the Event that told it ("" when only an annotation did).
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Event is one Kubernetes Event.
type Event struct {
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Object  string    `json:"object"`
	Message string    `json:"message"`
	Count   int32     `json:"count,omitempty"`
	Last    time.Time `json:"last"`
}
