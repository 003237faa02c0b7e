// Package simulate replays a CI job trace against a model of a Karpenter NodePool and compares
// three ways of running it: Karpenter alone, a static warm pool, and warmpool's scaling policy
// (the real controller/scaling/policy, evaluated every interval). It answers "how long would jobs
// have waited, and what would the nodes have cost" before anyone changes a cluster.
//
// The model is discrete-event and deterministic: the same trace and Config always give the same
// Report, so results can be compared across changes to the policy.
//
//   - A node is billed from the moment it is requested and is Ready Config.Boot later.
//   - A Ready node runs Config.JobsPerNode jobs at once. Jobs start first come, first served on a
//     Ready node with a free slot; among those, the busiest node first, then the oldest (the
//     bin-packing a CI cluster uses so that empty nodes can be consolidated).
//   - Karpenter provisions for pending pods only: when jobs wait and the free and booting slots
//     cannot take them all, it requests the nodes for the rest. It removes a node that has been
//     empty for Config.ConsolidateAfter (consolidationPolicy WhenEmpty). Provisioning batch
//     windows (1 s idle, 10 s max) are not modelled.
//   - A static pool keeps N nodes Ready from t=0 that are never removed; above them Karpenter
//     behaves as alone.
//   - warmpool starts with the warm floor Ready (the pool ran at its floor before the trace) and
//     every Config.Interval calls policy.Decide with the waiting and running job counts. Below
//     the desired count it requests nodes (placeholder pods); above it, it removes empty Ready nodes
//     at once, never one running a job and never one still booting. Jobs the headroom cannot take
//     still make Karpenter provision (placeholders are preempted, real pods provision), and
//     Karpenter does not consolidate an empty node while the desired count covers it (the
//     queue-aware disruption budget). The real actuator (placeholder pods) leaves that removal
//     to Karpenter's consolidateAfter, so the model bills warmpool slightly less than a cluster
//     would, and with ConsolidateAfter at or above the policy's scale-down stabilization it can
//     drop a node that Karpenter alone would still have had.
//
// Node time is counted up to the horizon (Config.Horizon, by default the moment the last job
// would end had nothing waited) or the moment the last job really ended, whichever is later, so
// every strategy pays for the same span. A job's start counts as a warm start when its node had
// already completed a job: that node's Dagger cache is warm.
package simulate

//go:generate go run ./gen -out ../../../deploy/traces
