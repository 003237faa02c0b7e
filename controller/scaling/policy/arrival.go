package policy

import (
	"math"
	"slices"
	"sort"
	"time"
)

// Arrivals is the memory of the arrival-rate estimator: how many jobs were queued in each short
// bucket of the recent window, and since when the count is complete. It is plain data kept in
// State, so it is persisted with the rest of the policy's state.
//
// The caller feeds it through Input.Arrivals (the times jobs were queued since the previous
// evaluation) and Input.Known. Its rules:
//
//   - The rate is the arrivals counted over the covered part of the last Spare.Window, in whole
//     buckets, divided by that span. It is known only once at least minCoverage of the window is
//     covered; before that the adaptive spare holds its previous value (no spare from unknown data).
//   - Coverage restarts (Since = now, every bucket dropped) when the queue source is stale
//     (Input.Known false: arrivals may have been missed), when the clock went back (now before the
//     previous evaluation), and when the previous evaluation is more than a window ago (a clock
//     jump forward, or a paused process: arrivals of the gap were never seen). Arrivals stamped
//     before Since are dropped; arrivals stamped after now (another host's clock) count at now.
type Arrivals struct {
	// Since is when the current stretch of complete observation began; zero means none.
	Since time.Time `json:"since,omitzero"`
	// Buckets are arrival counts per bucket (see bucketWidth), oldest first, within the window.
	Buckets []ArrivalBucket `json:"buckets,omitempty"`
	// Week is the learned time-of-week profile (Spare.TimeOfWeek), nil when not learning.
	Week *WeekProfile `json:"week,omitempty"`
}

// ArrivalBucket counts the jobs queued in [Start, Start+bucketWidth).
type ArrivalBucket struct {
	Start time.Time `json:"start"`
	Count int       `json:"count"`
}

// bucketsPerWindow bounds the state's size: about 50 bytes of JSON per bucket.
const bucketsPerWindow = 30

// bucketWidth is the window split into bucketsPerWindow whole seconds (at least one).
func bucketWidth(window time.Duration) time.Duration {
	return max((window / bucketsPerWindow).Truncate(time.Second), time.Second)
}

// minCoverage is how much of the window must be observed before its rate is trusted: half the
// window, at most two minutes, so a restarted controller sizes a spare again within minutes.
func minCoverage(window time.Duration) time.Duration {
	return min(window/2, 2*time.Minute)
}

// alignDown is t's bucket start: buckets are aligned to multiples of width since the Unix epoch,
// so two processes (or a restarted one) agree on bucket edges.
func alignDown(t time.Time, width time.Duration) time.Time {
	ns := t.UnixNano()
	w := int64(width)
	r := ns % w
	if r < 0 {
		r += w
	}
	return time.Unix(0, ns-r).UTC()
}

// observe folds one evaluation's arrivals into a copy of a. last is the previous evaluation's
// time (zero if none). The caller's slices are never modified.
func (a Arrivals) observe(now, last time.Time, known bool, arrivals []time.Time, window time.Duration) Arrivals {
	if !known {
		return Arrivals{Week: a.Week}
	}
	width := bucketWidth(window)
	out := Arrivals{Since: a.Since, Week: a.Week}
	if a.Since.IsZero() || last.IsZero() || now.Before(last) || now.Sub(last) > window || a.Since.After(now) {
		out.Since = now
	} else {
		out.Buckets = slices.Clone(a.Buckets)
	}
	for _, t := range arrivals {
		if t.Before(out.Since) {
			continue
		}
		t = minTime(t, now)
		out.Buckets = addArrival(out.Buckets, alignDown(t, width))
	}
	// Keep the buckets that can still be counted: those starting after now-window-width.
	cut := now.Add(-window - width)
	i := sort.Search(len(out.Buckets), func(i int) bool { return out.Buckets[i].Start.After(cut) })
	out.Buckets = out.Buckets[i:]
	if len(out.Buckets) > 2*bucketsPerWindow { // a hand-edited or foreign state
		out.Buckets = out.Buckets[len(out.Buckets)-2*bucketsPerWindow:]
	}
	if len(out.Buckets) == 0 {
		out.Buckets = nil
	}
	return out
}

// addArrival counts one arrival in the bucket starting at start, keeping buckets sorted.
func addArrival(b []ArrivalBucket, start time.Time) []ArrivalBucket {
	if n := len(b); n > 0 && b[n-1].Start.Equal(start) { // the common case: the newest bucket
		b[n-1].Count++
		return b
	}
	i := sort.Search(len(b), func(i int) bool { return !b[i].Start.Before(start) })
	if i < len(b) && b[i].Start.Equal(start) {
		b[i].Count++
		return b
	}
	return slices.Insert(b, i, ArrivalBucket{Start: start, Count: 1})
}

// rate is the arrival rate in jobs per second over the covered part of the window ending at
// now, counted in whole buckets, and whether enough of the window is covered to trust it.
func (a Arrivals) rate(now time.Time, window time.Duration) (float64, bool) {
	if a.Since.IsZero() || a.Since.After(now) {
		return 0, false
	}
	width := bucketWidth(window)
	from := alignDown(now.Add(-window), width).Add(width) // the first whole bucket in the window
	first := from
	if a.Since.After(from) {
		// Counting starts mid-bucket: the bucket holding Since has only arrivals from Since on.
		from, first = a.Since, alignDown(a.Since, width)
	}
	span := now.Sub(from)
	if span < minCoverage(window) || span <= 0 {
		return 0, false
	}
	count := 0
	for _, b := range a.Buckets {
		if !b.Start.Before(first) && !b.Start.After(now) {
			count += b.Count
		}
	}
	return float64(count) / span.Seconds(), true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// hoursPerWeek is the size of a WeekProfile.
const hoursPerWeek = 7 * 24

// weekMemory is the time constant of a WeekProfile's learning: an hour observed this week
// weighs 1-1/e^2 (86%) against the same hour's past weeks, so a shifted routine is learned in a
// week or two and a one-off quiet day fades as fast.
const weekMemory = 30 * time.Minute

// WeekProfile is the learned arrival rate of each hour of the week, so the spare can be sized for
// the hour a booting node will serve before that hour's arrivals reach the recent window (the
// 09:00 burst of pushes). It learns from the recent rate whenever that is known: the entry of the
// current hour moves towards it with weight 1-exp(-dt/weekMemory) for dt since the previous
// evaluation (capped at an hour), so a stale stretch teaches nothing.
//
// Hours are counted from Monday 00:00 UTC; a routine kept in a zone with daylight saving shifts by
// an hour twice a year and is relearned within a week or two.
type WeekProfile struct {
	// Rates are jobs per minute for each hour of the week; a negative entry is not learned yet.
	Rates []float64 `json:"rates"`
}

// NewWeekProfile is a profile with nothing learned.
func NewWeekProfile() *WeekProfile {
	r := make([]float64, hoursPerWeek)
	for i := range r {
		r[i] = -1
	}
	return &WeekProfile{Rates: r}
}

// hourOfWeek is t's hour counted from Monday 00:00 UTC.
func hourOfWeek(t time.Time) int {
	t = t.UTC()
	day := (int(t.Weekday()) + 6) % 7 // Monday = 0
	return day*24 + t.Hour()
}

// learn returns a copy of w with the current hour moved towards perMinute. A malformed profile
// (wrong length, from a hand edit) starts over.
func (w *WeekProfile) learn(now time.Time, dt time.Duration, perMinute float64) *WeekProfile {
	out := NewWeekProfile()
	if w != nil && len(w.Rates) == hoursPerWeek {
		copy(out.Rates, w.Rates)
	}
	h := hourOfWeek(now)
	if out.Rates[h] < 0 {
		out.Rates[h] = perMinute
		return out
	}
	dt = min(max(dt, 0), time.Hour)
	weight := 1 - math.Exp(-dt.Seconds()/weekMemory.Seconds())
	out.Rates[h] += weight * (perMinute - out.Rates[h])
	return out
}

// at is the learned rate of t's hour in jobs per minute, and whether it was learned.
func (w *WeekProfile) at(t time.Time) (float64, bool) {
	if w == nil || len(w.Rates) != hoursPerWeek {
		return 0, false
	}
	r := w.Rates[hourOfWeek(t)]
	return r, r >= 0
}
