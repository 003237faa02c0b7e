package queue

import "time"

// AgesOut is when the pool's counts stop being known on the clock alone: the first instant at
// which one of its sources' last good reading is older than the staleness bound, so that Pool
// reports the pool unknown although no reading came. Zero when the clock alone changes nothing:
// the pool has no sources (always known) or is unknown already (only a reading changes that,
// and OnChange says so). A source that keeps failing records its errors and OnChange fires when
// its reading ages out; one that records nothing at all (a poll backing off for a long
// Retry-After) ages out silently, which is what this is for.
func (t *Tracker) AgesOut(pool string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var first time.Time
	for _, s := range t.pools[pool] {
		e, ok := t.entries[Key{pool, s}]
		if !ok || e.lastSuccess.IsZero() || t.clk.Since(e.lastSuccess) > t.maxStaleness {
			return time.Time{}
		}
		// Pool says unknown once Since(lastSuccess) > maxStaleness: one nanosecond after this.
		if at := e.lastSuccess.Add(t.maxStaleness + time.Nanosecond); first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first
}
