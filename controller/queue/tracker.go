package queue

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// DefaultMaxStaleness is how long a failing source's last good value is trusted.
const DefaultMaxStaleness = 5 * time.Minute

// Key names one source of one pool.
type Key struct {
	Pool   string
	Source string
}

type entry struct {
	counts      Counts
	lastSuccess time.Time // zero until the first good reading
	lastErr     error
	// fresh is whether the reading was trusted (answered, not older than maxStaleness) as of
	// the last Record, so OnChange also fires when a failing source's reading ages out.
	fresh bool
	// exact is set for a source that reports its arrivals itself (RecordArrivals: the webhook
	// ledger sees each job queued); its counts' increases are then not taken for arrivals.
	exact bool
}

// maxPendingArrivals bounds the arrivals kept for a pool that is not evaluated (no scaling
// controller running, or one far behind): the oldest go first, as the rate estimator counts
// only a recent window anyway.
const maxPendingArrivals = 10000

// Tracker holds every source's last good reading. A source that keeps failing keeps its last
// value for MaxStaleness, then becomes unknown, and so does its pool: warmpool neither scales
// up nor down on data it cannot trust.
type Tracker struct {
	clk          clock.PassiveClock
	maxStaleness time.Duration

	mu      sync.Mutex
	entries map[Key]*entry
	// pools maps each pool to its configured sources, so a source that never answered makes
	// its pool unknown instead of silently counting as zero.
	pools map[string][]string
	// onChange, when set, is called after a reading changes a pool's counts (outside the lock).
	onChange func(pool string)
	// arrivals are the times jobs were queued per pool since the last TakeArrivals.
	arrivals map[string][]time.Time
}

// NewTracker returns an empty tracker.
func NewTracker(clk clock.PassiveClock, maxStaleness time.Duration) *Tracker {
	if maxStaleness <= 0 {
		maxStaleness = DefaultMaxStaleness
	}
	return &Tracker{clk: clk, maxStaleness: maxStaleness, entries: map[Key]*entry{}, pools: map[string][]string{}, arrivals: map[string][]time.Time{}}
}

// OnChange registers f to be called with a pool's name whenever one of its readings changes
// its counts or its known state; the scaling controller uses it to react at once.
func (t *Tracker) OnChange(f func(pool string)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onChange = f
}

// SetSources declares the pools and their sources (from the config in force); readings of
// sources no longer declared are dropped.
func (t *Tracker) SetSources(pools map[string][]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pools = map[string][]string{}
	keep := map[Key]bool{}
	for pool, sources := range pools {
		t.pools[pool] = append([]string(nil), sources...)
		for _, s := range sources {
			keep[Key{pool, s}] = true
		}
	}
	for k := range t.entries {
		if !keep[k] {
			delete(t.entries, k)
		}
	}
	for pool := range t.arrivals {
		if _, ok := t.pools[pool]; !ok {
			delete(t.arrivals, pool)
		}
	}
}

// Record stores a reading: counts on success, or the error (keeping the last good counts).
//
// A polled source cannot tell which jobs are new, so an increase over its previous fresh
// reading is taken for that many arrivals, stamped now: max(queued increase, total increase).
// That is a lower bound (a job queued and started between two polls is only seen when the
// total grows), which sizes the spare on the low side rather than from jobs never seen. The
// first reading, and the first after the source was stale, count none: their jobs were queued
// at unknown times, and the rate estimator restarts its window after a stale stretch anyway.
func (t *Tracker) Record(k Key, c Counts, err error) {
	t.record(k, c, err, nil, false)
}

// RecordArrivals stores a good reading of a source that sees each job queued (the webhook
// ledger), with the times of the jobs first seen since its previous reading. From then on the
// source's count increases are never taken for arrivals.
func (t *Tracker) RecordArrivals(k Key, c Counts, arrivals []time.Time) {
	t.record(k, c, nil, arrivals, true)
}

func (t *Tracker) record(k Key, c Counts, err error, arrivals []time.Time, exact bool) {
	t.mu.Lock()
	e, ok := t.entries[k]
	if !ok {
		e = &entry{}
		t.entries[k] = e
	}
	e.exact = e.exact || exact
	now := t.clk.Now()
	before, freshBefore := e.counts, e.fresh
	if err != nil {
		e.lastErr = err
	} else {
		if !e.exact && freshBefore && !e.lastSuccess.IsZero() {
			if n := max(c.Queued-before.Queued, c.Total()-before.Total(), 0); n > 0 {
				arrivals = make([]time.Time, n)
				for i := range arrivals {
					arrivals[i] = now
				}
			}
		}
		e.counts, e.lastSuccess, e.lastErr = c, now, nil
	}
	if len(arrivals) > 0 {
		a := append(t.arrivals[k.Pool], arrivals...)
		if len(a) > maxPendingArrivals {
			a = append([]time.Time(nil), a[len(a)-maxPendingArrivals:]...)
		}
		t.arrivals[k.Pool] = a
	}
	e.fresh = !e.lastSuccess.IsZero() && now.Sub(e.lastSuccess) <= t.maxStaleness
	changed := e.counts != before || freshBefore != e.fresh
	f := t.onChange
	t.mu.Unlock()
	if changed && f != nil {
		f(k.Pool)
	}
}

// TakeArrivals returns the times jobs of the pool were queued since the previous call, and
// forgets them: the scaling controller, the only caller, folds them into its rate estimate at
// each evaluation (policy.Input.Arrivals). Unordered when the pool has several sources.
func (t *Tracker) TakeArrivals(pool string) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.arrivals[pool]
	delete(t.arrivals, pool)
	return a
}

// Pool returns the pool's summed counts and whether every source is fresh enough to trust.
// A pool with no sources is known with zero jobs: only its warm minimum applies.
func (t *Tracker) Pool(pool string) (Counts, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var sum Counts
	known := true
	for _, s := range t.pools[pool] {
		e, ok := t.entries[Key{pool, s}]
		if !ok || e.lastSuccess.IsZero() || t.clk.Since(e.lastSuccess) > t.maxStaleness {
			known = false
			continue
		}
		sum = sum.Add(e.counts)
	}
	return sum, known
}

// Source returns one source's last good counts and its staleness (time since its last good
// reading; -1 when it never answered).
func (t *Tracker) Source(k Key) (Counts, time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[k]
	if !ok || e.lastSuccess.IsZero() {
		var err error
		if ok {
			err = e.lastErr
		}
		return Counts{}, -1, err
	}
	return e.counts, t.clk.Since(e.lastSuccess), e.lastErr
}
