package scaling

// A pool's queue reading ageing out. The tracker trusts a source's last good reading for the
// staleness bound; past it the pool is unknown (the policy holds its count and restarts its
// arrival-rate estimate). A source that records errors tells the tracker when that happens,
// and the tracker wakes the pool; one that records nothing (a poll backing off for a long
// Retry-After) ages out on the clock alone. A timer per pool fires at that moment and wakes the
// pool only if its reading did age out: every reading that arrives meanwhile (a webhook
// source's sweep every 30 s) only moves the timer, and evaluates nothing.

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// ageOutTimers holds each pool's timer and the instant it is armed for.
type ageOutTimers struct {
	mu     sync.Mutex
	timers map[string]*ageOutTimer
}

type ageOutTimer struct {
	at    time.Time
	timer clock.Timer
}

// watchAgeOut arms the pool's timer for the moment its queue reading ages out. It returns that
// moment when no timer can watch it (a clock without AfterFunc): the caller then evaluates the
// pool again at that time instead.
func (c *Controller) watchAgeOut(pool string) time.Time {
	at := c.tracker.AgesOut(pool)
	clk, ok := c.clk.(clock.WithDelayedExecution)
	if !ok {
		return at
	}
	// On a goroutine of its own: a fake clock runs the function while it holds its lock, and
	// agedOut reads the clock.
	c.ageOut.arm(clk, pool, at, func() { go c.agedOut(pool, at) })
	return time.Time{}
}

// agedOut runs when the pool's timer fires: wake the pool if its reading did age out, else
// (a reading came meanwhile) arm the timer for the new moment.
func (c *Controller) agedOut(pool string, at time.Time) {
	c.ageOut.fired(pool, at)
	if _, known := c.tracker.Pool(pool); !known {
		c.Enqueue(pool)
		return
	}
	c.mu.Lock()
	_, exists := c.pools[pool]
	c.mu.Unlock()
	if exists {
		c.watchAgeOut(pool)
	}
}

// arm sets the pool's timer for at (zero: none), keeping one already set for the same moment.
func (t *ageOutTimers) arm(clk clock.WithDelayedExecution, pool string, at time.Time, f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.timers[pool]
	if cur != nil && cur.at.Equal(at) {
		return
	}
	if cur != nil {
		cur.timer.Stop()
		delete(t.timers, pool)
	}
	if at.IsZero() {
		return
	}
	if t.timers == nil {
		t.timers = map[string]*ageOutTimer{}
	}
	t.timers[pool] = &ageOutTimer{at: at, timer: clk.AfterFunc(max(at.Sub(clk.Now()), 0), f)}
}

// fired forgets the pool's timer for at, which just ran (not one armed since for another moment).
func (t *ageOutTimers) fired(pool string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.timers[pool]; cur != nil && cur.at.Equal(at) {
		delete(t.timers, pool)
	}
}

// stop cancels the timer of a pool that left the config.
func (t *ageOutTimers) stop(pool string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.timers[pool]; cur != nil {
		cur.timer.Stop()
		delete(t.timers, pool)
	}
}
