package simulate

import (
	"cmp"
	"container/heap"
	"math"
	"slices"
	"time"

	"warmpool.io/warmpool/controller/scaling/policy"
)

// never is "no such event".
const never = time.Duration(math.MaxInt64)

// node is one NodeClaim: requested, then Ready at ready, then possibly removed.
type node struct {
	id         int
	requested  time.Duration
	ready      time.Duration
	removed    time.Duration
	gone       bool
	pinned     bool // a static-pool node: Karpenter never consolidates it
	running    int
	completed  int           // jobs that finished here: the node's cache is warm once this is > 0
	emptySince time.Duration // when running last dropped to 0 (or ready, if it never ran)
}

type runningJob struct {
	end  time.Duration
	job  int
	node *node
}

// finishQueue orders running jobs by end, then by job index so equal ends finish in a fixed order.
type finishQueue []runningJob

func (q finishQueue) Len() int { return len(q) }
func (q finishQueue) Less(i, j int) bool {
	if q[i].end != q[j].end {
		return q[i].end < q[j].end
	}
	return q[i].job < q[j].job
}
func (q finishQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *finishQueue) Push(x any)   { *q = append(*q, x.(runningJob)) }
func (q *finishQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// poolResult is one strategy on one pool.
type poolResult struct {
	waits          []time.Duration // by index into the pool's jobs
	nodeTime       time.Duration
	starts, warm   int
	launched, peak int
	end            time.Duration
}

// sim runs one strategy on one pool's jobs (sorted by arrival).
type sim struct {
	cfg      Config
	strategy Strategy
	jobs     []Job
	horizon  time.Duration
	limit    int

	pol     *policy.Policy
	state   policy.State
	desired int

	now         time.Duration
	nextArrival int
	nextTick    time.Duration
	waiting     []int // job indices, first come first served
	running     finishQueue
	nodes       []*node // every node ever requested, by id
	alive       []*node // booting or Ready, by id
	done        int
	lastFinish  time.Duration

	res poolResult
}

// simulatePool runs strategy over jobs. pol is used by Warmpool only; static is the static pool
// size for StaticPool.
func simulatePool(jobs []Job, strategy Strategy, c Config, pol *policy.Policy, static int, horizon time.Duration) poolResult {
	s := &sim{
		cfg: c, strategy: strategy, jobs: jobs, horizon: horizon, limit: c.nodeLimit(), pol: pol,
		now: -1, // so that events at t=0 are "after now"
	}
	s.res.waits = make([]time.Duration, len(jobs))

	// Nodes that exist before the trace starts are Ready at t=0 and billed from t=0.
	initial := 0
	switch strategy {
	case StaticPool:
		initial = static
	case Warmpool:
		initial, _ = pol.WarmMinimumAt(c.Start)
		s.desired = initial
	}
	for range initial {
		n := s.launch(0)
		n.ready, n.emptySince, n.pinned = 0, 0, strategy == StaticPool
	}

	for {
		t := s.nextEvent()
		if t == never || (s.done == len(s.jobs) && t > s.horizon) {
			break
		}
		s.now = t
		s.step()
	}

	end := max(s.horizon, s.lastFinish)
	for _, n := range s.nodes {
		until := end
		if n.gone {
			until = min(n.removed, end)
		}
		s.res.nodeTime += until - n.requested
	}
	s.res.end = end
	s.res.launched = len(s.nodes)
	return s.res
}

func (s *sim) nextEvent() time.Duration {
	t := never
	if s.nextArrival < len(s.jobs) {
		t = s.jobs[s.nextArrival].Arrival
	}
	if len(s.running) > 0 {
		t = min(t, s.running[0].end)
	}
	for _, n := range s.alive {
		switch {
		case n.ready > s.now:
			t = min(t, n.ready)
		case n.running == 0 && !n.pinned:
			// A deadline already passed (held by warmpool's budget) is re-checked at every step.
			if d := n.emptySince + s.cfg.ConsolidateAfter; d > s.now {
				t = min(t, d)
			}
		}
	}
	if s.strategy == Warmpool {
		t = min(t, s.nextTick)
	}
	return t
}

// step handles everything that happens at s.now, in a fixed order: jobs finish, jobs arrive, jobs
// start, the policy evaluates, Karpenter consolidates, Karpenter provisions.
func (s *sim) step() {
	for len(s.running) > 0 && s.running[0].end <= s.now {
		r := heap.Pop(&s.running).(runningJob)
		r.node.running--
		r.node.completed++
		if r.node.running == 0 {
			r.node.emptySince = s.now
		}
		s.done++
		s.lastFinish = s.now
	}
	for s.nextArrival < len(s.jobs) && s.jobs[s.nextArrival].Arrival <= s.now {
		s.waiting = append(s.waiting, s.nextArrival)
		s.nextArrival++
	}
	s.place()
	if s.strategy == Warmpool && s.nextTick <= s.now {
		s.evaluate()
		s.nextTick += s.cfg.Interval
	}
	s.consolidate()
	s.provision()
	s.res.peak = max(s.res.peak, len(s.alive))
}

// place starts waiting jobs, oldest first, on Ready nodes with a free slot: the busiest such node
// first (bin-packing), then the oldest.
func (s *sim) place() {
	for len(s.waiting) > 0 {
		var best *node
		for _, n := range s.alive {
			if n.ready > s.now || n.running >= s.cfg.JobsPerNode {
				continue
			}
			if best == nil || n.running > best.running {
				best = n
			}
		}
		if best == nil {
			return
		}
		j := s.waiting[0]
		s.waiting = s.waiting[1:]
		s.res.waits[j] = s.now - s.jobs[j].Arrival
		s.res.starts++
		if best.completed > 0 {
			s.res.warm++
		}
		best.running++
		heap.Push(&s.running, runningJob{end: s.now + s.jobs[j].Duration, job: j, node: best})
	}
}

// evaluate is one warmpool reconcile: decide, then request nodes up to Desired (placeholder pods)
// or remove empty nodes down to it. Busy nodes are never removed, and neither are nodes still
// booting (Karpenter does not cancel a launch in flight).
func (s *sim) evaluate() {
	d, st := s.pol.Decide(policy.Input{
		Now:          s.cfg.Start.Add(s.now),
		Queued:       len(s.waiting),
		Running:      len(s.running),
		Known:        true,
		CurrentNodes: len(s.alive),
	}, s.state)
	s.state, s.desired = st, d.Desired
	for len(s.alive) < s.desired {
		s.launch(s.now)
	}
	surplus := len(s.alive) - s.desired
	if surplus <= 0 {
		return
	}
	for _, n := range s.emptyNodes(func(*node) bool { return true }) {
		if surplus == 0 {
			break
		}
		s.remove(n)
		surplus--
	}
}

// consolidate is Karpenter's WhenEmpty consolidation. Under warmpool, its disruption budget
// blocks it while the desired count covers the node.
func (s *sim) consolidate() {
	expired := func(n *node) bool { return s.now-n.emptySince >= s.cfg.ConsolidateAfter }
	for _, n := range s.emptyNodes(expired) {
		if s.strategy == Warmpool && len(s.alive) <= s.desired {
			return
		}
		s.remove(n)
	}
}

// emptyNodes lists Ready, empty, unpinned nodes that pass keep, longest empty first.
func (s *sim) emptyNodes(keep func(*node) bool) []*node {
	var out []*node
	for _, n := range s.alive {
		if n.ready <= s.now && n.running == 0 && !n.pinned && keep(n) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *node) int {
		return cmp.Or(cmp.Compare(a.emptySince, b.emptySince), cmp.Compare(a.id, b.id))
	})
	return out
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

func (s *sim) launch(at time.Duration) *node {
	n := &node{id: len(s.nodes), requested: at, ready: at + s.cfg.Boot, emptySince: at + s.cfg.Boot}
	s.nodes = append(s.nodes, n)
	s.alive = append(s.alive, n)
	return n
}

func (s *sim) remove(n *node) {
	n.gone, n.removed = true, s.now
	s.alive = slices.DeleteFunc(s.alive, func(m *node) bool { return m == n })
}
