package simulate

import (
	"cmp"
	"slices"
	"time"
)

// Karpenter in the model: provisioning for pending jobs and placeholders, and WhenEmpty
// consolidation bounded by the disruption budget.

// consolidatable is Karpenter's Empty candidate: Ready, no job, no placeholder, not pinned.
func (s *sim) consolidatable(n *node) bool {
	return n.ready <= s.now && n.running == 0 && !n.held && !n.pinned
}

// consolidate is Karpenter's Empty consolidation (consolidationPolicy WhenEmpty). A node empty
// for ConsolidateAfter becomes a candidate; if the budget allows, Karpenter picks it, waits
// ValidationDelay, checks again (still empty, budget still allows) and deletes it. The budget
// (allowance) bounds both steps: picks already made keep their place, oldest node first, and a
// pick beyond it is dropped, so a blocking budget drops every pick.
func (s *sim) consolidate() {
	var candidates []*node
	for _, n := range s.alive {
		if !s.consolidatable(n) || s.now-n.emptySince < s.cfg.ConsolidateAfter {
			n.commandAt = never
			continue
		}
		candidates = append(candidates, n)
	}
	slices.SortStableFunc(candidates, func(a, b *node) int {
		return cmp.Compare(rank(a.commandAt == never), rank(b.commandAt == never))
	})
	allowed := s.allowance()
	var removed []*node
	for i, n := range candidates {
		if i >= allowed {
			n.commandAt = never
			continue
		}
		if n.commandAt == never {
			n.commandAt = s.now
		}
		if s.now-n.commandAt >= s.cfg.ValidationDelay {
			removed = append(removed, n)
		}
	}
	for _, n := range removed {
		s.remove(n)
	}
}

// provision is Karpenter's reaction to pending pods: jobs that neither a free slot nor a booting
// node can take get new nodes, up to the pool's limit.
func (s *sim) provision() {
	if len(s.waiting) == 0 {
		return
	}
	free := 0
	for _, n := range s.alive {
		free += s.cfg.JobsPerNode - n.running
	}
	need := len(s.waiting) - free
	for need > 0 && len(s.alive) < s.limit {
		s.launch(s.now)
		need -= s.cfg.JobsPerNode
	}
}

// launch requests a node at at. With warmpool's cache restore it restores the pool's cache
// after booting, and takes jobs (is "ready") only then, warm.
func (s *sim) launch(at time.Duration) *node {
	ready := at + s.cfg.Boot
	if s.restores {
		ready += s.cfg.Restore
	}
	n := &node{id: len(s.nodes), requested: at, ready: ready, emptySince: ready, commandAt: never, warm: s.restores,
		booted: at + s.cfg.Boot, decide: s.restores && s.cfg.ColdWhenWaiting && s.cfg.Restore > 0}
	s.nodes = append(s.nodes, n)
	s.alive = append(s.alive, n)
	return n
}

// remove deletes n. With warmpool's cache lifecycle a node that ran a job is saved first: it is
// billed for Config.Save more, though no job can use it (it is tainted as disrupted).
func (s *sim) remove(n *node) {
	n.gone, n.removed = true, s.now
	if s.restores && n.used {
		n.removed += s.cfg.Save
	}
	s.alive = slices.DeleteFunc(s.alive, func(m *node) bool { return m == n })
}

// rank orders false before true.
func rank(b bool) int {
	if b {
		return 1
	}
	return 0
}
