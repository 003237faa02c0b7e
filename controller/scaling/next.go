package scaling

// When a pool is evaluated again without any event. Everything an evaluation reads that can
// change by itself wakes it: queue readings and config changes (Enqueue), the pool's nodes, its
// headroom Deployment, the pods on its nodes and its NodePool appearing (watches.go), its queue
// reading ageing out (ageout.go). What is left is the clock: the policy says when its decision
// would change with nothing else changing (policy.NextChange), and this controller adds the
// deadlines of its own records. Until the earliest of them an idle pool costs nothing.

import (
	"time"

	"warmpool.io/warmpool/controller/scaling/policy"
)

// minRequeue is the requeue of a deadline that already passed (a hold whose window ran out
// while the evaluation actuated): as soon as possible, but positive (a zero RequeueAfter means
// no requeue at all).
const minRequeue = time.Millisecond

// nextEvaluation is when the pool must be evaluated again without any event (zero: never),
// from the evaluation at ev.at that decided state. Called with c.mu held.
//
//   - The policy's next change (a warm window edge, the end of a stabilization hold, the
//     arrival-rate estimate moving); a step-limited scale-down steps once per interval.
//   - Queued or running jobs, or something to retry: the interval. Jobs are what the controller
//     exists for; a new reading or node wakes the pool anyway, the interval is the safety net
//     while it matters most. It also refreshes the record of the state on the headroom object
//     every half stabilization window while jobs hold nodes (evaluate), so a new process
//     resumes with that demand still holding them. A count held by the warm floor or the
//     spare needs no refresh: the config and the recorded spare give it back after a restart.
//   - A change of the spare whose Event was held back (spareEventEvery) is reported when due.
func (c *Controller) nextEvaluation(ps *poolState, ev *evaluation, state policy.State) time.Time {
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	d := ev.decision
	change := ps.policy.NextChange(ev.at, d, state)
	step := !change.IsZero() && !change.After(ev.at) // a step of a scale-down: one per interval
	short := step || ev.retry || ev.known && (ev.counts.Queued > 0 || ev.counts.Running > 0)
	if !step {
		earliest(change)
	}
	if short {
		earliest(ev.at.Add(c.interval))
	}
	// What the next evaluation takes for in force until it (heldState): only for a pool not
	// evaluated every interval, and once queue data was known in this process (evaluate records
	// no recommendation before).
	ps.held, ps.heldTarget, ps.heldUntil = ps.known && !short, d.Target, change
	if d.Spare != ps.reportedSpare {
		earliest(ps.reportedAt.Add(spareEventEvery))
	}
	return next
}

// requeueAfter is how long until the evaluation's next one (0: none, the pool waits for an
// event). A deadline may pass while the evaluation actuates (a short stabilization window, a
// slow apply): the pool is then evaluated again at once, not at the deadline after.
func (c *Controller) requeueAfter(ev *evaluation) time.Duration {
	next := ev.next
	if !ev.ageOut.IsZero() && (next.IsZero() || ev.ageOut.Before(next)) {
		next = ev.ageOut
	}
	if next.IsZero() {
		return 0
	}
	return max(next.Sub(c.clk.Now()), minRequeue)
}
