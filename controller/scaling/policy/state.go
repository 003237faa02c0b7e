package policy

import (
	"slices"
	"time"
)

// MaxHistory bounds State.History so the state fits comfortably in an object annotation
// (about 50 bytes of JSON per entry).
const MaxHistory = 64

// State is what the policy remembers between evaluations of one pool. It is plain data with JSON
// tags so a reconciler can keep it on an annotation; see Policy.Decide for what happens when it is
// lost.
type State struct {
	// Desired is the node count decided by the last evaluation.
	Desired int `json:"desired"`
	// History holds the recommendations (Decision.Target) still inside the stabilization window,
	// oldest first, with strictly decreasing targets: an older recommendation that is not higher
	// than a newer one can never be the window's maximum again, so it is dropped.
	History []Recommendation `json:"history,omitempty"`
	// LastEvaluation is the Now of the last evaluation; zero means the policy never ran for this
	// pool (or its state was lost).
	LastEvaluation time.Time `json:"lastEvaluation,omitzero"`
	// Arrivals is the arrival-rate estimator's memory (adaptive spare only).
	Arrivals Arrivals `json:"arrivals,omitzero"`
	// SpareSlots is the adaptive spare in job slots decided last: held while the arrival rate
	// is unknown, and the anchor of its hysteresis.
	SpareSlots int `json:"spareSlots,omitempty"`
	// Spare is the last decision's spare in nodes (Decision.Spare), recorded for whoever reads
	// the state (warmpool status); Decide does not read it back.
	Spare int `json:"spare,omitempty"`
	// BurstHold is the last decision's burst hold in nodes (Decision.BurstHold), recorded like
	// Spare for whoever reads the state; Decide does not read it back.
	BurstHold int `json:"burstHold,omitempty"`
	// Peaks are the queue demands (Decision.QueueNodes) still inside the burst hold's window,
	// kept as History is (a sliding-window maximum); empty when the hold is off.
	Peaks []Recommendation `json:"peaks,omitempty"`
}

// Recommendation is one evaluation's target, as in the HPA's scale-down stabilization.
type Recommendation struct {
	At     time.Time `json:"at"`
	Target int       `json:"target"`
}

// history is a sliding-window maximum: a monotonic queue of recommendations.
type history []Recommendation

// loadHistory copies prev (never mutating the caller's slice) and repairs anything a hand-edited
// or foreign annotation may contain: negative targets are dropped, entries stamped in the future
// (a clock that went back, another replica's clock) are moved to now so they expire after one
// window instead of lingering, and order is restored.
func loadHistory(prev []Recommendation, now time.Time, window time.Duration) history {
	entries := make([]Recommendation, 0, len(prev)+2)
	for _, r := range prev {
		if r.Target < 0 {
			continue
		}
		if r.At.After(now) {
			r.At = now
		}
		entries = append(entries, r)
	}
	ordered := slices.IsSortedFunc(entries, func(a, b Recommendation) int { return a.At.Compare(b.At) })
	if !ordered {
		slices.SortStableFunc(entries, func(a, b Recommendation) int { return a.At.Compare(b.At) })
	}
	// Rebuilding in place is safe: add writes at most one slot per entry read, never ahead of it.
	h := history(entries[:0])
	for _, r := range entries {
		h = h.add(r)
	}
	return h.prune(now, window)
}

// add appends r, dropping older entries it dominates, and merges entries past MaxHistory.
func (h history) add(r Recommendation) history {
	for len(h) > 0 && h[len(h)-1].Target <= r.Target {
		h = h[:len(h)-1]
	}
	h = append(h, r)
	if len(h) > MaxHistory {
		h = h.merge()
	}
	return h
}

// merge folds the adjacent pair with the smallest target gap into one entry that keeps the older,
// higher target until the newer entry's time. That can only hold nodes longer than the exact
// window maximum, never release them early.
func (h history) merge() history {
	best := 0
	for i := 1; i < len(h)-1; i++ {
		if h[i].Target-h[i+1].Target < h[best].Target-h[best+1].Target {
			best = i
		}
	}
	h[best+1].Target = h[best].Target
	return slices.Delete(h, best, best+1)
}

// prune drops entries that left the window: an entry at At counts while now-At < window.
func (h history) prune(now time.Time, window time.Duration) history {
	i := 0
	for i < len(h) && now.Sub(h[i].At) >= window {
		i++
	}
	return h[i:]
}

// max is the highest recommendation in the window (the head of the queue), or -1 when empty.
func (h history) max() int {
	if len(h) == 0 {
		return -1
	}
	return h[0].Target
}

// heldUntil is when no recommendation of at least level remains in the window (zero if none is).
// Targets decrease along the queue, so the last entry of at least level expires last.
func (h history) heldUntil(level int, window time.Duration) time.Time {
	var until time.Time
	for _, r := range h {
		if r.Target < level {
			break
		}
		until = r.At.Add(window)
	}
	return until
}
