package policy

import (
	"strconv"
	"time"
)

// Scale-down keeps the warm nodes. When the headroom shrinks, the ReplicaSet controller picks
// which placeholders go; its default (among Running, Ready placeholders: the most recently
// Ready first) may pick the one on the pool's warmest node, and Karpenter then consolidates that
// node, cache and all. The ReplicaSet controller ranks pods by their
// controller.kubernetes.io/pod-deletion-cost annotation before its other criteria (after only
// unassigned, not Running and not Ready pods, which a settled placeholder is not): lower cost
// goes first. DeletionCost gives a placeholder the cost of the node it holds, so the
// placeholders on the least valuable nodes go first.

// AnnotationDeletionCost is the ReplicaSet controller's annotation (k8s.io/api/core/v1
// PodDeletionCost; beta and on by default since Kubernetes 1.22): an int32, lower deleted first,
// absent means 0.
const AnnotationDeletionCost = "controller.kubernetes.io/pod-deletion-cost"

// NodeCache is what is known of a node's engine cache, from least to most valuable. Values are
// stable: they are part of the costs written on placeholders.
type NodeCache int

const (
	// CacheCold: no cache yet. The node started cold, is still restoring, or its engine
	// discarded the restored copy.
	CacheCold NodeCache = iota
	// CacheRestored: a restored copy is in place, but the engine has not confirmed it kept it
	// (its verification is due, or ran out without an answer).
	CacheRestored
	// CacheWarm: the engine confirmed it started on the restored cache and kept it.
	CacheWarm
	// CacheWorked: the node ran runner jobs, so its cache holds this pool's builds, whatever
	// its restore said.
	CacheWorked
)

// String names the value, for logs and test output.
func (c NodeCache) String() string {
	switch c {
	case CacheCold:
		return "cold"
	case CacheRestored:
		return "restored"
	case CacheWarm:
		return "warm"
	case CacheWorked:
		return "worked"
	}
	return "NodeCache(" + strconv.Itoa(int(c)) + ")"
}

// NodeValue is what makes a node worth keeping: its cache, then its age (an older node is more
// likely to have served jobs, and Karpenter's own scale-down default goes for the newest).
type NodeValue struct {
	Cache NodeCache
	// Created is the Node's creation time.
	Created time.Time
}

// The cost of a placeholder is its node's cache tier times costTierWidth plus an age key that
// grows with the node's age: the minutes from the node's creation to costAgeHorizon. A cost
// depends on its own node only, never on the other nodes of the pool, so it changes only when
// that node's cache does: a node joining or leaving the pool rewrites no other placeholder.
//
// Four tiers of 2^29 fill the non-negative int32 range, and the cold tier starts at 0: a
// placeholder that has no cost yet (just bound, not yet evaluated) ranks with the coldest,
// newest node, as the ReplicaSet controller's default would rank it.
const (
	costTierWidth = 1 << 29
	// costAgeHorizon: minutes from the Unix epoch, so 2^29-1 minutes after it (about the year
	// 3000). A node created after it (a broken clock) gets age key 0, one before the epoch the
	// largest key.
	costAgeHorizon = costTierWidth - 1
)

// DeletionCost is the pod-deletion-cost of a placeholder on a node of value v: a node with a
// more valuable cache always costs more, and among nodes of one cache tier an older one costs
// more. Nodes created in the same minute of one tier cost the same: the ReplicaSet controller's
// later criteria (the most recently Ready placeholder first) break the tie.
func DeletionCost(v NodeValue) int32 {
	tier := min(max(v.Cache, CacheCold), CacheWorked)
	minutes := v.Created.Unix() / 60
	if v.Created.Unix() < 0 && v.Created.Unix()%60 != 0 {
		minutes-- // floor, so the key keeps growing with age before the epoch too
	}
	age := min(max(costAgeHorizon-minutes, 0), costAgeHorizon)
	return int32(int64(tier)*costTierWidth + age)
}

// CacheOfCost is the cache tier a cost written by DeletionCost stands for, and whether the
// value parses as a cost at all. A restarted controller reads back what an earlier process
// learned of a node (it ran jobs) from the placeholder on it.
func CacheOfCost(annotation string) (NodeCache, bool) {
	cost, err := strconv.ParseInt(annotation, 10, 32)
	if err != nil || cost < 0 {
		return CacheCold, false
	}
	return NodeCache(cost / costTierWidth), true
}

// FormatCost is a cost as the annotation's value.
func FormatCost(cost int32) string { return strconv.FormatInt(int64(cost), 10) }
