// Package simulate replays a CI job trace against a model of a Karpenter NodePool and compares
// four ways of running it: Karpenter alone, Karpenter with warmpool's cache restore but no
// headroom, a static warm pool, and warmpool's scaling policy (the real controller/scaling/policy,
// evaluated every interval, fed the trace's arrivals). It answers "how long would jobs have
// waited, how much build time would cold caches have cost, and what would the nodes have cost"
// before anyone changes a cluster.
//
// The model is discrete-event and deterministic: the same trace and Config always give the same
// Report, so results can be compared across changes to the policy.
//
//   - A node is billed from the moment it is requested and is Ready Config.Boot later.
//   - A Ready node runs Config.JobsPerNode jobs at once. Jobs start first come, first served on a
//     Ready node with a free slot: a node that fits without preemption first (the busiest, then
//     the oldest: the bin-packing that lets empty nodes be consolidated), a node holding a
//     warmpool placeholder only when none does.
//   - Karpenter provisions for pending pods only: when jobs wait and the free and booting slots
//     cannot take them all, it requests the nodes for the rest. Provisioning batch windows
//     (1 s idle, 10 s max) are not modelled.
//   - Only Karpenter removes nodes, for every strategy, and only by Empty consolidation
//     (consolidationPolicy WhenEmpty): a Ready node with no pod for Config.ConsolidateAfter
//     (since its last pod event) is picked, re-validated Config.ValidationDelay later (still
//     empty, budget still allows) and deleted. The disruption loop's 10 s polling, termination
//     time and the default 10% budget's pacing are not modelled.
//   - A static pool keeps N nodes Ready from t=0 that are never removed; above them Karpenter
//     behaves as alone.
//   - warmpool starts with the warm floor Ready (the pool ran at its floor before the trace) and
//     every Config.Interval calls policy.Decide with the waiting and running job counts, as its
//     controller does. Its actuators are modelled as they act on a cluster: desired minus busy
//     nodes placeholder pods, one per node, which keep their nodes from counting as empty and,
//     when no empty node is left for one, make Karpenter launch a node; and the queue-aware
//     budget, which blocks Empty consolidation while policy.Busy (jobs queued or running, or a
//     warm window open). warmpool never removes a node itself: when the desired count falls,
//     placeholders go (pending ones first, then the newest), and Karpenter consolidates the
//     nodes they leave once they have been empty for ConsolidateAfter and the budget allows.
//
// The cache: a node's Dagger cache is warm once a job finished on it. Karpenter alone's nodes
// (and the nodes Karpenter adds above a static pool) start cold; a job started on a cold cache
// runs Config.ColdCost longer. With warmpool's cache lifecycle (KarpenterRestore, Warmpool) a new
// node restores the pool's cache for Config.Restore after it boots, its startup taint keeping
// jobs off it meanwhile (Karpenter counts it as capacity on the way), and is warm; the pool is
// assumed to have a snapshot from before the trace. A node that ran a job is saved when
// Karpenter removes it: billed Config.Save more, usable by no job. Config.ColdWhenWaiting models
// a queue-aware restore that starts a node cold at once when a job already waits for it. A static
// pool's nodes and warmpool's initial floor ran before the trace: warm.
//
// Node time is counted up to the horizon (Config.Horizon, by default the moment the last job
// would end had nothing waited) or the moment the last job really ended, whichever is later, so
// every strategy pays for the same span. The job time lost is every wait plus ColdCost per cold
// start. docs/scaling.md has the tables for the committed traces.
package simulate

//go:generate go run ../../../hack/tracegen -out ../../../deploy/traces
