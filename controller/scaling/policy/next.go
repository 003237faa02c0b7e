package policy

import (
	"time"
)

// NextChange is the earliest time after now at which Decide, given the same input again and the
// state it returned with d, may decide differently on the clock alone; zero when it never
// would. A reconciler evaluates a pool at that time, and otherwise only when an input changes
// (a queue reading, the fleet): nothing else moves a decision.
//
// What moves it on the clock:
//
//   - a warm window opening or closing (its floor, its spare, the busy state it implies);
//   - a stabilization hold running out (Decision.StabilizedUntil);
//   - a step-limited scale-down: the next evaluation removes the next step. NextChange returns
//     now itself then; how soon that evaluation comes is the reconciler's evaluation interval,
//     which is what ScaleDownStep is counted in;
//   - the adaptive spare's arrival-rate estimate: it becomes known once minCoverage of its window
//     is observed; it moves while arrivals are in the window (re-estimated at each bucket edge,
//     the estimator's resolution); it restarts its coverage after more than a window without an
//     evaluation (Arrivals), so an adaptive pool is evaluated at least every coverageRefresh of
//     its window; between bucket edges the rate still drifts down as the span it is counted
//     over grows, which can cross a hysteresis bound; and with TimeOfWeek it learns the hour of each evaluation and sizes for the
//     hour BootTime ahead, so it is evaluated at every hour edge of either;
//   - the burst hold's peak leaving its window (the head of State.Peaks): the hold falls then.
//
// The scale-down history needs nothing of its own: it only holds nodes while Desired is above
// Target, which StabilizedUntil (or a step) already covers.
func (p *Policy) NextChange(now time.Time, d Decision, s State) time.Time {
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, w := range p.windows {
		earliest(w.nextEdge(now))
	}
	if d.Desired > d.Target {
		if d.StabilizedUntil.IsZero() {
			return now // a step-limited scale-down: the next evaluation steps again
		}
		earliest(d.StabilizedUntil)
	}
	if p.cfg.Spare.adaptive() {
		earliest(p.nextEstimate(now, s))
	}
	if p.cfg.BurstHold.on() && len(s.Peaks) > 0 {
		earliest(s.Peaks[0].At.Add(p.cfg.BurstHold.Window))
	}
	return next
}

// coverageRefresh is the part of the spare's window after which an adaptive pool is evaluated
// again even when nothing happens: Arrivals.observe restarts the estimate's coverage (and drops
// the arrivals queued before it) when evaluations are more than a window apart, so the next
// arrival after a quiet stretch would be sized from nothing. The margin is for a reconciler
// that runs its requeue late.
const coverageRefresh = 3.0 / 4

// nextEstimate is when the adaptive spare's estimate may move on the clock alone (see
// NextChange); zero when it never would (no observation started: the next known input starts
// one).
func (p *Policy) nextEstimate(now time.Time, s State) time.Time {
	sp, a := p.cfg.Spare, s.Arrivals
	if a.Since.IsZero() {
		return time.Time{}
	}
	window, width := sp.Window, bucketWidth(sp.Window)
	next := now.Add(time.Duration(float64(window) * coverageRefresh))
	earliest := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	_, known := a.rate(now, window)
	if !known {
		earliest(a.Since.Add(minCoverage(window)))
	}
	// The rate counts the buckets from the first whole one after now-window: while one of them
	// holds arrivals, it moves when that edge passes the next bucket.
	first := alignDown(now.Add(-window), width).Add(width)
	for _, b := range a.Buckets {
		if !b.Start.Before(first) {
			edge := first.Add(window)
			earliest(edge)
			if known {
				earliest(p.spareDrifts(now, edge, s))
			}
			break
		}
	}
	if sp.TimeOfWeek && known {
		earliest(nextHour(now))
		earliest(nextHour(now.Add(sp.BootTime)).Add(-sp.BootTime))
	}
	return next
}

// spareDrifts is the first time in (now, until) at which the spare decided again from s with
// no new arrivals differs from the one decided at now (its slots, what set it, whether the rate
// is known); zero when none does. Until the next bucket edge the count is fixed and the span
// it is divided by only grows, so the rate only falls: once the spare moved it stays moved,
// and bisecting on the spare as Decide computes it finds the first time it does.
func (p *Policy) spareDrifts(now, until time.Time, s State) time.Time {
	at := func(t time.Time) spareResult { return p.spare(Input{Now: t, Known: true}, s, 0) }
	base := at(now)
	moved := func(t time.Time) bool {
		r := at(t)
		return r.slots != base.slots || r.from != base.from || r.known != base.known
	}
	lo, hi := now, until.Add(-time.Nanosecond)
	if !hi.After(lo) || !moved(hi) {
		return time.Time{}
	}
	for hi.Sub(lo) > time.Millisecond {
		mid := lo.Add(hi.Sub(lo) / 2)
		if moved(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// nextHour is the start of the UTC hour after t's (hourOfWeek counts UTC hours).
func nextHour(t time.Time) time.Time { return t.UTC().Truncate(time.Hour).Add(time.Hour) }

// nextEdge is the first time after t at which the window opens or may close: its next start,
// or the end of the activation that began at the first start after t-duration (a later start
// may extend it; re-evaluating at the earlier end is harmless).
func (w warmWindow) nextEdge(t time.Time) time.Time {
	var next time.Time
	if s := w.schedule.Next(t.In(w.loc)); !s.IsZero() {
		next = s
	}
	if s := w.schedule.Next(t.Add(-w.duration).In(w.loc)); !s.IsZero() {
		if end := s.Add(w.duration); end.After(t) && (next.IsZero() || end.Before(next)) {
			next = end
		}
	}
	return next
}
