package simulate

import (
	"cmp"
	"slices"

	"warmpool.io/warmpool/controller/scaling/policy"
)

// warmpool in the model: its policy evaluation, its busy budget and its placeholder pods.

// evaluate is one warmpool reconcile: the policy decides the desired count, and the pool's
// budget blocks consolidation while it is busy. It removes nothing itself: scale-down is the
// placeholders going, then Karpenter consolidating the nodes they leave empty.
func (s *sim) evaluate() {
	// The arrivals since the last evaluation, as a queue source reports them.
	s.arrivals = s.arrivals[:0]
	for ; s.seen < s.nextArrival; s.seen++ {
		s.arrivals = append(s.arrivals, s.cfg.Start.Add(s.jobs[s.seen].Arrival))
	}
	d, st := s.pol.Decide(policy.Input{
		Now:          s.cfg.Start.Add(s.now),
		Queued:       len(s.waiting),
		Running:      len(s.running),
		Known:        true,
		CurrentNodes: len(s.alive),
		Arrivals:     s.arrivals,
	}, s.state)
	s.state, s.desired = st, d.Desired
	s.busy = policy.Busy(len(s.waiting), len(s.running), d.WarmWindowActive)
}

// allowance is how many nodes the budgets let Karpenter consolidate now: any number while
// warmpool's busy budget is off, else its nodes value, policy.Surplus of the pool's nodes over
// the last desired count ("0" with the default block budget). The node count is the current
// one: the controller watches Nodes, so a removed node re-renders the budget at once.
func (s *sim) allowance() int {
	if !s.busy {
		return unlimited
	}
	return policy.Surplus(s.cfg.SurplusBudget, len(s.alive), s.desired)
}

// placeholders sizes the headroom as the controller does, desired minus nodes running jobs, one
// placeholder per node. Missing ones land on empty nodes (Ready first, then the oldest) or, when
// none is left, make Karpenter launch a node. Surplus ones go as a ReplicaSet scales down:
// pending ones (on booting nodes) first, then the newest.
func (s *sim) placeholders() {
	busy, held := 0, 0
	for _, n := range s.alive {
		switch {
		case n.running > 0:
			busy++
		case n.held:
			held++
		}
	}
	want := max(0, s.desired-busy)
	if held > want {
		var release []*node
		for _, n := range s.alive {
			if n.held {
				release = append(release, n)
			}
		}
		slices.SortFunc(release, func(a, b *node) int {
			return cmp.Or(
				cmp.Compare(rank(a.ready <= s.now), rank(b.ready <= s.now)), // booting first
				-cmp.Compare(a.heldSince, b.heldSince),
				-cmp.Compare(a.id, b.id))
		})
		for _, n := range release[:held-want] {
			n.held = false
			n.emptySince = max(s.now, n.ready)
		}
		return
	}
	var free []*node
	for _, n := range s.alive {
		if n.running == 0 && !n.held && !n.pinned {
			free = append(free, n)
		}
	}
	slices.SortStableFunc(free, func(a, b *node) int {
		return cmp.Compare(rank(a.ready > s.now), rank(b.ready > s.now)) // Ready first; by id within
	})
	for _, n := range free {
		if held == want {
			return
		}
		n.held, n.heldSince = true, s.now
		held++
	}
	for ; held < want && len(s.alive) < s.limit; held++ {
		n := s.launch(s.now)
		n.held, n.heldSince = true, s.now
	}
}
