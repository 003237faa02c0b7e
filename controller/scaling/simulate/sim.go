package simulate

import (
	"container/heap"
	"math"
	"time"

	"warmpool.io/warmpool/controller/scaling/policy"
)

// never is "no such event".
const never = time.Duration(math.MaxInt64)

// node is one NodeClaim: requested, then Ready at ready, then possibly removed.
type node struct {
	id        int
	requested time.Duration
	ready     time.Duration
	removed   time.Duration
	gone      bool
	pinned    bool // a static-pool node: Karpenter never consolidates it
	running   int
	completed int // jobs that finished here
	// warm is the node's cache: warm once a job finished here, or from the start on a node that
	// restored the pool's cache (or existed before the trace); a job started while it is cold
	// pays Config.ColdCost.
	warm bool
	// used is true once a job ran here: only such a node has anything new to save.
	used bool
	// booted is when the node itself is up; with a queue-aware restore (Config.ColdWhenWaiting)
	// decide is true until then, when the node either restores or starts cold at once.
	booted time.Duration
	decide bool
	// held is true while a warmpool placeholder pod sits on (or is nominated to) the node. Its
	// priority (-1000) still gives it a positive eviction cost, so Karpenter does not count the
	// node as empty.
	held      bool
	heldSince time.Duration
	// emptySince is the node's last pod event (Karpenter's lastPodEventTime): when its last job
	// ended or its placeholder went, or when it became Ready if neither ever happened.
	emptySince time.Duration
	// commandAt is when Karpenter chose the node for an Empty consolidation command (never when
	// it has not); the command runs after Config.ValidationDelay if it is still valid then.
	commandAt time.Duration
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
	bootWaits      int // jobs that started on a node that was not usable when they arrived
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
	// busy is whether warmpool's last evaluation put its busy budget on the NodePool
	// (policy.Busy); see allowance. Never set for the other strategies.
	busy bool

	now         time.Duration
	nextArrival int
	nextTick    time.Duration
	waiting     []int // job indices, first come first served
	running     finishQueue
	nodes       []*node // every node ever requested, by id
	alive       []*node // booting or Ready, by id
	done        int
	lastFinish  time.Duration
	// restores is whether new nodes restore the pool's cache (warmpool's cache lifecycle).
	restores bool
	// seen is how many arrivals the policy has been told of; arrivals is a reused buffer.
	seen     int
	arrivals []time.Time

	res poolResult
}

// simulatePool runs strategy over jobs. pol is used by Warmpool only; static is the static pool
// size for StaticPool.
func simulatePool(jobs []Job, strategy Strategy, c Config, pol *policy.Policy, static int, horizon time.Duration) poolResult {
	s := &sim{
		cfg: c, strategy: strategy, jobs: jobs, horizon: horizon, limit: c.nodeLimit(), pol: pol,
		now:      -1, // so that events at t=0 are "after now"
		restores: strategy == KarpenterRestore || strategy == Warmpool,
	}
	s.res.waits = make([]time.Duration, len(jobs))

	// Nodes that exist before the trace starts are Ready at t=0 and billed from t=0.
	initial := 0
	switch strategy {
	case StaticPool:
		initial = static
	case Warmpool:
		floor, window := pol.WarmMinimumAt(c.Start)
		initial, s.desired, s.busy = floor, floor, policy.Busy(0, 0, window)
	}
	// They ran before the trace, so their caches are warm: a static pool's persistent nodes,
	// and warmpool's floor, restored when it was launched.
	for range initial {
		n := s.launch(0)
		n.ready, n.emptySince, n.warm = 0, 0, true
		n.pinned = strategy == StaticPool
		n.held = strategy == Warmpool
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
		case n.decide:
			t = min(t, n.booted)
		case n.ready > s.now:
			t = min(t, n.ready)
		case n.commandAt != never:
			t = min(t, n.commandAt+s.cfg.ValidationDelay)
		case s.consolidatable(n):
			// A deadline already passed (held by warmpool's budget) waits for the evaluation
			// that lifts the budget, which is an event of its own.
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
// start, the policy evaluates, placeholders follow it, Karpenter consolidates, Karpenter
// provisions.
func (s *sim) step() {
	for len(s.running) > 0 && s.running[0].end <= s.now {
		r := heap.Pop(&s.running).(runningJob)
		r.node.running--
		r.node.completed++
		r.node.warm = true
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
	s.restoreOrCold()
	s.place()
	if s.strategy == Warmpool {
		if s.nextTick <= s.now {
			s.evaluate()
			s.nextTick += s.cfg.Interval
		}
		s.placeholders()
	}
	s.consolidate()
	s.provision()
	s.res.peak = max(s.res.peak, len(s.alive))
}

// place starts waiting jobs, oldest first, on Ready nodes with a free slot. The scheduler
// prefers a node that fits without preemption: the busiest such node first (bin-packing), then
// the oldest; only when none fits does a job preempt a placeholder.
func (s *sim) place() {
	for len(s.waiting) > 0 {
		var best *node
		for _, n := range s.alive {
			if n.ready > s.now || n.running >= s.cfg.JobsPerNode {
				continue
			}
			if best == nil || best.held && !n.held || best.held == n.held && n.running > best.running {
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
		if best.ready > s.jobs[j].Arrival {
			s.res.bootWaits++
		}
		d := s.jobs[j].Duration
		if best.warm {
			s.res.warm++
		} else {
			d += s.cfg.ColdCost
		}
		best.running++
		best.used = true
		best.held = false // preempted
		heap.Push(&s.running, runningJob{end: s.now + d, job: j, node: best})
	}
}

// restoreOrCold decides, for nodes that booted now, between the restore and a cold start: with
// Config.ColdWhenWaiting a node starts cold at once when jobs wait that the usable nodes' free
// slots cannot take, since those jobs would otherwise wait for the restore too.
func (s *sim) restoreOrCold() {
	for _, n := range s.alive {
		if !n.decide || n.booted > s.now {
			continue
		}
		n.decide = false
		free := 0
		for _, m := range s.alive {
			if m.ready <= s.now {
				free += s.cfg.JobsPerNode - m.running
			}
		}
		if len(s.waiting) > free {
			n.ready, n.emptySince, n.warm = s.now, s.now, false
		}
	}
}
