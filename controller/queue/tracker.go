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
}

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
}

// NewTracker returns an empty tracker.
func NewTracker(clk clock.PassiveClock, maxStaleness time.Duration) *Tracker {
	if maxStaleness <= 0 {
		maxStaleness = DefaultMaxStaleness
	}
	return &Tracker{clk: clk, maxStaleness: maxStaleness, entries: map[Key]*entry{}, pools: map[string][]string{}}
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
}

// Record stores a reading: counts on success, or the error (keeping the last good counts).
func (t *Tracker) Record(k Key, c Counts, err error) {
	t.mu.Lock()
	e, ok := t.entries[k]
	if !ok {
		e = &entry{}
		t.entries[k] = e
	}
	now := t.clk.Now()
	before, freshBefore := e.counts, e.fresh
	if err != nil {
		e.lastErr = err
	} else {
		e.counts, e.lastSuccess, e.lastErr = c, now, nil
	}
	e.fresh = !e.lastSuccess.IsZero() && now.Sub(e.lastSuccess) <= t.maxStaleness
	changed := e.counts != before || freshBefore != e.fresh
	f := t.onChange
	t.mu.Unlock()
	if changed && f != nil {
		f(k.Pool)
	}
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
