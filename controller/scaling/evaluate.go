package scaling

// The decision step: the pool's policy, compiled once per config and jobs per node, decides
// the desired nodes and the busy state from the queue counts and the fleet.

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
)

// evaluation is one pool's evaluation: what was read, what the policy decided, and what was in
// force before, as the steps after the decision need it.
type evaluation struct {
	pool        *config.Pool
	jobsPerNode int
	fleet       fleet
	counts      queue.Counts
	known       bool
	// arrivals are the times jobs were queued since the previous evaluation (queue.Tracker).
	arrivals []time.Time
	// resumedFrom says where a pool's first evaluation in this process resumed from ("" after).
	resumedFrom string
	// retry is set when a step could not finish and should be tried again soon (the instance
	// types to derive jobs per node from were unavailable).
	retry bool
	// at is the evaluation's time; next is when it must run again without any event (next.go;
	// zero: never), and ageOut when the pool's queue reading ages out if no timer watches that.
	at, next, ageOut time.Time

	decision    policy.Decision
	prevDesired int
	// prev is the busy budget in force before this evaluation, busy the one it decided.
	prev, busy nodepools.BusyBudget
	// recorded is the policy state (JSON) to record on the headroom object.
	recorded string
	// spareEvent is set when the spare changed and its Event is due (see spareEventDue), with
	// the spare last reported before it.
	spareEvent bool
	prevSpare  int
}

// spareEventEvery rate-limits the Events of a pool's spare changes: one per pool per this
// interval, unless what sets the spare (Decision.SpareFrom) changes. A rate hovering at a
// quantile's edge would otherwise write an Event every few evaluations.
const spareEventEvery = 5 * time.Minute

// evaluate decides: the desired nodes, the policy state to record, and the busy budget.
func (c *Controller) evaluate(ps *poolState, ev *evaluation) error {
	name := ev.pool.Name
	// Seeded (resume) or decided in this process: never read from the NodePool here.
	prev := c.cluster.BusyBudget(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	ev.at = c.clk.Now()
	decision, state := ps.policy.Decide(policy.Input{
		Now: ev.at, Queued: ev.counts.Queued, Running: ev.counts.Running, Known: ev.known,
		Arrivals: ev.arrivals,
	}, ps.heldState(ev.at))
	if !ev.known && !ps.known {
		// No reading since this process started (its sources have not answered yet): the
		// policy holds the resumed count, but its hold is not recorded as a recommendation.
		// Otherwise every restart would stretch a scale-down in progress by a whole window,
		// and a crash loop would never let one finish.
		state.History = ps.state.History
	}
	ps.known = ps.known || ev.known
	ev.decision, ev.prevDesired, ev.prev = decision, ps.desired, prev
	ps.state, ps.desired = state, decision.Desired
	if decision.Spare != ps.reportedSpare &&
		(decision.SpareFrom != ps.reportedFrom || !state.LastEvaluation.Before(ps.reportedAt.Add(spareEventEvery))) {
		ev.spareEvent, ev.prevSpare = true, ps.reportedSpare
		ps.reportedSpare, ps.reportedFrom, ps.reportedAt = decision.Spare, decision.SpareFrom, state.LastEvaluation
	}
	// Recorded on the headroom object with the next apply. Not on every evaluation (each moves
	// the history's timestamps): when the count or the end of its hold changes, and, while
	// nodes are desired, once the record is half a window old, so a new process resumes with
	// the recent demand still holding them (a webhook source restarts knowing no job). The
	// state also carries the arrival-rate estimate and the adaptive spare: recorded when the
	// spare changes too, so a new process holds the spare in force while it re-observes (and
	// warmpool status shows the spare in force).
	stale := decision.Desired > 0 && !state.LastEvaluation.Before(ps.recordedAt.Add(ps.policy.Stabilization()/2))
	if decision.Desired != ps.recordedDesired || !decision.StabilizedUntil.Equal(ps.recordedUntil) || ps.recorded == "" || stale ||
		state.SpareSlots != ps.recordedSlots || state.Spare != ps.recordedSpare || state.BurstHold != ps.recordedHold {
		raw, err := json.Marshal(state)
		if err != nil {
			return fmt.Errorf("encoding the scaling state of pool %s, %w", name, err)
		}
		ps.recorded, ps.recordedDesired, ps.recordedUntil, ps.recordedAt = string(raw), decision.Desired, decision.StabilizedUntil, state.LastEvaluation
		ps.recordedSlots, ps.recordedSpare, ps.recordedHold = state.SpareSlots, state.Spare, state.BurstHold
	}
	ev.recorded = ps.recorded
	ev.next = c.nextEvaluation(ps, ev, state)
	// Unknown data changes nothing: not the node count (the policy holds it) and not the
	// budgets, which stay as they were.
	ev.busy.Busy = prev.Busy
	if ev.known {
		ev.busy.Busy = policy.Busy(ev.counts.Queued, ev.counts.Running, decision.WarmWindowActive)
	}
	if ev.busy.Busy {
		ev.busy.Disruptable = policy.Surplus(ev.pool.Scaling.BusyBudget == config.BusyBudgetSurplus, ev.fleet.nodes, decision.Desired)
	}
	return nil
}

// heldState is the policy state to decide from at now: the state of the previous evaluation,
// with its recommendation (Target) recorded once more as still in force at now, or at the
// previous evaluation's next change if that came first. A pool is evaluated when an input
// changes (watches.go) or when its policy's next change comes (next.go), not every few seconds,
// so without this the last recommendation of a high target could be from long before it fell
// (a warm window's start, hours before its end) and the scale-down stabilization would hold
// nothing: it is a window over the targets in force, and until now the previous one was. A pool
// evaluated every interval (jobs, a step) gets no such entry, as before: its recommendations
// are at most an interval old. Nor does the state resumed in a new process (what held while no
// process ran is not known, see policy.Decide), nor one before any queue data was known.
func (ps *poolState) heldState(now time.Time) policy.State {
	s := ps.state
	if !ps.held {
		return s
	}
	at := now
	if !ps.heldUntil.IsZero() && ps.heldUntil.Before(now) {
		at = ps.heldUntil
	}
	s.History = append(slices.Clip(s.History), policy.Recommendation{At: at, Target: ps.heldTarget})
	return s
}

// poolState returns the pool's state, recompiling the policy when the pool's config or its
// jobs per node changed.
func (c *Controller) poolState(p *config.Pool, jobsPerNode int) (*poolState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.pools[p.Name]
	if ok && ps.policyFor == p && ps.jobsPerNode == jobsPerNode {
		return ps, nil
	}
	pol, err := policy.Compile(PolicyConfig(p, jobsPerNode))
	if err != nil {
		return nil, err
	}
	if !ok {
		ps = &poolState{}
		c.pools[p.Name] = ps
	}
	ps.policyFor, ps.jobsPerNode, ps.policy = p, jobsPerNode, pol
	return ps, nil
}

// PolicyConfig maps a pool's scaling config to the policy's, with the jobs per node in force
// (configured, or derived: see jobsPerNode).
func PolicyConfig(p *config.Pool, jobsPerNode int) policy.Config {
	s := p.Scaling
	maxNodes := 1 << 20
	if s.MaxNodes != nil {
		maxNodes = *s.MaxNodes
	}
	stabilization := s.ScaleDownStabilization.Duration
	if stabilization == 0 {
		// The config's 0 means no window (scale down at the next evaluation); the policy reads
		// a zero as its own default, so hand it the shortest window there is.
		stabilization = time.Nanosecond
	}
	return policy.Config{
		JobsPerNode:            max(jobsPerNode, 1),
		WarmMinimum:            s.WarmMinimum,
		WarmWindows:            s.WarmWindows,
		MaxNodes:               maxNodes,
		ScaleDownStabilization: stabilization,
		ScaleDownStep:          s.ScaleDownStep,
		// Warm windows' spares are in WarmWindows; Spare.Max caps them (mode off: none).
		Spare:     policy.SpareFromConfig(s.Spare),
		BurstHold: policy.BurstHoldFromConfig(s.BurstHold),
	}
}
