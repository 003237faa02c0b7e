package queue

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

var (
	_ manager.Runnable               = (*Runner)(nil)
	_ manager.LeaderElectionRunnable = (*Runner)(nil)
	_ Poller                         = (*Prometheus)(nil)
	_ Poller                         = (*Buildkite)(nil)
)

// wrGuard bounds every wait for a goroutine to reach a point; it only turns a hang into a
// failure and is never part of what a test asserts.
const wrGuard = 10 * time.Second

var wrEpoch = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// wrPoller is a Poller the test drives: each Poll is handed to the test, which answers it
// (or not, and the poll waits for its context).
type wrPoller struct {
	calls    chan *wrCall
	inflight *atomic.Int32 // shared between pollers of one key to detect overlap
	overlap  *atomic.Bool
}

type wrCall struct {
	ctx   context.Context
	reply chan wrResult
}

type wrResult struct {
	c   Counts
	err error
}

func wrNewPoller() *wrPoller {
	return &wrPoller{calls: make(chan *wrCall), inflight: new(atomic.Int32), overlap: new(atomic.Bool)}
}

func (p *wrPoller) Poll(ctx context.Context) (Counts, error) {
	if p.inflight.Add(1) > 1 {
		p.overlap.Store(true)
	}
	defer p.inflight.Add(-1)
	c := &wrCall{ctx: ctx, reply: make(chan wrResult, 1)}
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return Counts{}, ctx.Err()
	}
	select {
	case r := <-c.reply:
		return r.c, r.err
	case <-ctx.Done():
		return Counts{}, ctx.Err()
	}
}

// next waits for the next poll.
func (p *wrPoller) next(t *testing.T) *wrCall {
	t.Helper()
	select {
	case c := <-p.calls:
		return c
	case <-time.After(wrGuard):
		t.Fatal("no poll came")
		return nil
	}
}

// none asserts that no poll is waiting. Pollers only run when a fake-clock timer fired, so
// when none fired this is exact.
func (p *wrPoller) none(t *testing.T) {
	t.Helper()
	select {
	case <-p.calls:
		t.Fatal("unexpected poll")
	default:
	}
}

func (c *wrCall) ok(counts Counts) { c.reply <- wrResult{c: counts} }
func (c *wrCall) fail(err error)   { c.reply <- wrResult{err: err} }

type wrSleep struct {
	k Key
	d time.Duration
}

type wrHarness struct {
	t      *testing.T
	clk    *clocktesting.FakeClock
	tr     *Tracker
	r      *Runner
	sleeps chan wrSleep
	stash  map[Key][]time.Duration
	cancel context.CancelFunc
	done   chan error
}

func wrNewHarness(t *testing.T, maxStaleness time.Duration) *wrHarness {
	clk := clocktesting.NewFakeClock(wrEpoch)
	tr := NewTracker(clk, maxStaleness)
	h := &wrHarness{t: t, clk: clk, tr: tr, r: NewRunner(tr, clk, testr.New(t)), sleeps: make(chan wrSleep, 1000), stash: map[Key][]time.Duration{}}
	h.r.jitter = func(time.Duration) time.Duration { return 0 }
	h.r.onSleep = func(k Key, d time.Duration) { h.sleeps <- wrSleep{k, d} }
	return h
}

func (h *wrHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.r.Start(ctx) }()
	h.t.Cleanup(h.stop)
}

// stop cancels Start's context and waits for Start to return.
func (h *wrHarness) stop() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Start returned %v", err)
		}
	case <-time.After(wrGuard):
		h.t.Fatal("Start did not return after its context ended")
	}
}

// nextSleep waits until k's poller has armed its timer and returns the wait.
func (h *wrHarness) nextSleep(k Key) time.Duration {
	h.t.Helper()
	if q := h.stash[k]; len(q) > 0 {
		h.stash[k] = q[1:]
		return q[0]
	}
	for {
		select {
		case s := <-h.sleeps:
			if s.k == k {
				return s.d
			}
			h.stash[s.k] = append(h.stash[s.k], s.d)
		case <-time.After(wrGuard):
			h.t.Fatalf("%v never went to sleep", k)
			return 0
		}
	}
}

func (h *wrHarness) wantSleep(k Key, want time.Duration) {
	h.t.Helper()
	if got := h.nextSleep(k); got != want {
		h.t.Fatalf("%v sleeps %s, want %s", k, got, want)
	}
}

// stepTo advances the clock by d, checking that p is not polled before d is over.
func (h *wrHarness) stepTo(p *wrPoller, d time.Duration) {
	h.t.Helper()
	h.clk.Step(d - time.Nanosecond)
	p.none(h.t)
	h.clk.Step(time.Nanosecond)
}

func wrSources(keys ...Key) map[string][]string {
	m := map[string][]string{}
	for _, k := range keys {
		m[k.Pool] = append(m[k.Pool], k.Source)
	}
	return m
}

func TestRunnerPollsAtInterval(t *testing.T) {
	h := wrNewHarness(t, 5*time.Minute)
	k := Key{"rt-interval", "bk"}
	p := wrNewPoller()
	h.tr.SetSources(wrSources(k))
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: 30 * time.Second, Fingerprint: "v1"}})
	p.none(t) // nothing runs before Start
	h.start()

	src := SourceLabel(k)
	for i := 1; i <= 3; i++ {
		p.next(t).ok(Counts{Queued: i, Running: 1})
		h.wantSleep(k, 30*time.Second)
		if c, known := h.tr.Pool(k.Pool); !known || c != (Counts{Queued: i, Running: 1}) {
			t.Fatalf("poll %d: Pool = %+v, %v", i, c, known)
		}
		wrWantMetric(t, "warmpool_queue_jobs", map[string]string{"pool": k.Pool, "source": k.Source, "state": "queued"}, float64(i))
		wrWantMetric(t, "warmpool_queue_jobs", map[string]string{"pool": k.Pool, "source": k.Source, "state": "running"}, 1)
		wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": src, "result": "success"}, float64(i))
		wrWantMetric(t, "warmpool_source_staleness_seconds", map[string]string{"source": src}, 0)
		h.stepTo(p, 30*time.Second)
	}
	if _, ok := wrMetric(t, "warmpool_source_polls_total", map[string]string{"source": src, "result": "error"}); ok {
		t.Fatal("an error series exists without errors")
	}
}

func TestRunnerFirstPollAfterJitter(t *testing.T) {
	h := wrNewHarness(t, 5*time.Minute)
	h.r.jitter = func(interval time.Duration) time.Duration { return interval / 10 }
	k := Key{"rt-jitter", "prom"}
	p := wrNewPoller()
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: time.Minute}})
	h.start()
	h.wantSleep(k, 6*time.Second)
	h.stepTo(p, 6*time.Second)
	p.next(t).ok(Counts{})
	h.wantSleep(k, time.Minute)
}

func TestRunnerDefaultJitterWithinTenPercent(t *testing.T) {
	r := NewRunner(NewTracker(clocktesting.NewFakeClock(wrEpoch), 0), clocktesting.NewFakeClock(wrEpoch), testr.New(t))
	seen := map[time.Duration]bool{}
	for range 2000 {
		d := r.jitter(30 * time.Second)
		if d < 0 || d > 3*time.Second {
			t.Fatalf("jitter %s outside [0, 3s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("jitter took only %d distinct values in 2000 draws", len(seen))
	}
}

func TestRunnerBacksOffAndRecovers(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-backoff", "gitlab"}
	p := wrNewPoller()
	h.tr.SetSources(wrSources(k))
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: 10 * time.Second}})
	h.start()

	p.next(t).ok(Counts{Queued: 2})
	h.wantSleep(k, 10*time.Second)
	h.stepTo(p, 10*time.Second)

	// interval * 2^n, capped at 10x interval.
	for i, want := range []time.Duration{20, 40, 80, 100, 100} {
		p.next(t).fail(Errorf(ReasonHTTP, "HTTP 502 Bad Gateway"))
		h.wantSleep(k, want*time.Second)
		if c, known := h.tr.Pool(k.Pool); !known || c.Queued != 2 {
			t.Fatalf("failure %d: Pool = %+v, %v; want the last good reading, known", i+1, c, known)
		}
		h.stepTo(p, want*time.Second)
	}
	src := SourceLabel(k)
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(src, ReasonHTTP)); got != 5 {
		t.Fatalf("errors_total{reason=http} = %v, want 5", got)
	}
	wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": src, "result": "error"}, 5)

	// A success resets the schedule.
	p.next(t).ok(Counts{Queued: 4})
	h.wantSleep(k, 10*time.Second)
	h.stepTo(p, 10*time.Second)
	p.next(t).fail(errors.New("connection reset by peer"))
	h.wantSleep(k, 20*time.Second)
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(src, ReasonNetwork)); got != 1 {
		t.Fatalf("errors_total{reason=network} = %v, want 1", got)
	}
	wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": src, "result": "success"}, 2)
}

func TestRunnerHonoursRetryAfter(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-retry", "github"}
	p := wrNewPoller()
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: 10 * time.Second}})
	h.start()

	// Longer than the backoff (20s): the provider's wait wins.
	p.next(t).fail(&Error{Reason: ReasonRateLimited, RetryAfter: 7 * time.Minute, Err: errors.New("429")})
	h.wantSleep(k, 7*time.Minute)
	h.stepTo(p, 7*time.Minute)
	// Shorter than the backoff (40s): the backoff wins.
	p.next(t).fail(&Error{Reason: ReasonRateLimited, RetryAfter: 5 * time.Second, Err: errors.New("429")})
	h.wantSleep(k, 40*time.Second)
	h.stepTo(p, 40*time.Second)
	// An absurd Retry-After is capped at an hour.
	p.next(t).fail(&Error{Reason: ReasonRateLimited, RetryAfter: 30 * 24 * time.Hour, Err: errors.New("429")})
	h.wantSleep(k, time.Hour)
	h.stepTo(p, time.Hour)
	p.next(t).ok(Counts{Running: 1})
	h.wantSleep(k, 10*time.Second)
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(SourceLabel(k), ReasonRateLimited)); got != 3 {
		t.Fatalf("errors_total{reason=rate_limited} = %v, want 3", got)
	}
}

func TestPollBackoff(t *testing.T) {
	const i = 30 * time.Second
	for _, tc := range []struct {
		failures   int
		retryAfter time.Duration
		want       time.Duration
	}{
		{0, 0, i},
		{1, 0, 2 * i},
		{2, 0, 4 * i},
		{3, 0, 8 * i},
		{4, 0, 10 * i},
		{60, 0, 10 * i}, // no overflow
		{1, 10 * time.Minute, 10 * time.Minute},
		{1, time.Second, 2 * i},
		{4, 3 * time.Hour, time.Hour},
	} {
		if got := pollBackoff(i, tc.failures, tc.retryAfter); got != tc.want {
			t.Errorf("pollBackoff(%s, %d, %s) = %s, want %s", i, tc.failures, tc.retryAfter, got, tc.want)
		}
	}
}

func TestPollSpecDefaults(t *testing.T) {
	for _, tc := range []struct {
		spec                  PollSpec
		interval, wantTimeout time.Duration
	}{
		{PollSpec{}, DefaultPollInterval, 30 * time.Second},
		{PollSpec{Interval: 10 * time.Second}, 10 * time.Second, 10 * time.Second},
		{PollSpec{Interval: 5 * time.Minute}, 5 * time.Minute, 30 * time.Second},
		{PollSpec{Interval: 5 * time.Minute, Timeout: 45 * time.Second}, 5 * time.Minute, 45 * time.Second},
	} {
		if got := tc.spec.interval(); got != tc.interval {
			t.Errorf("%+v: interval %s, want %s", tc.spec, got, tc.interval)
		}
		if got := tc.spec.timeout(); got != tc.wantTimeout {
			t.Errorf("%+v: timeout %s, want %s", tc.spec, got, tc.wantTimeout)
		}
	}
}

func TestRunnerPollTimeout(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-timeout", "prom"}
	p := wrNewPoller()
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: time.Minute, Timeout: 5 * time.Second}})
	h.start()

	call := p.next(t) // never answered: the poll waits for its context
	if _, ok := call.ctx.Deadline(); !ok {
		t.Fatal("the poll's context has no deadline")
	}
	h.clk.Step(5*time.Second - time.Nanosecond)
	select {
	case <-call.ctx.Done():
		t.Fatal("poll cancelled before its timeout")
	default:
	}
	h.clk.Step(time.Nanosecond)
	select {
	case <-call.ctx.Done():
	case <-time.After(wrGuard):
		t.Fatal("poll not cancelled at its timeout")
	}
	h.wantSleep(k, 2*time.Minute)
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(SourceLabel(k), ReasonTimeout)); got != 1 {
		t.Fatalf("errors_total{reason=timeout} = %v, want 1", got)
	}
	if _, _, err := h.tr.Source(k); ReasonOf(err) != ReasonTimeout {
		t.Fatalf("tracker's last error %v, want a timeout", err)
	}
}

func TestRunnerStalenessAndUnknownAfterMaxStaleness(t *testing.T) {
	h := wrNewHarness(t, time.Minute)
	changes := make(chan string, 100)
	h.tr.OnChange(func(pool string) { changes <- pool })
	k := Key{"rt-stale", "prom"}
	never := Key{"rt-never", "bk"}
	p, pn := wrNewPoller(), wrNewPoller()
	h.tr.SetSources(wrSources(k, never))
	h.r.Set([]PollSpec{
		{Key: k, Poller: p, Interval: 10 * time.Second},
		{Key: never, Poller: pn, Interval: 10 * time.Second},
	})
	h.start()
	stale := func(k Key) map[string]string { return map[string]string{"source": SourceLabel(k)} }

	pn.next(t).fail(Errorf(ReasonAuth, "HTTP 401"))
	h.wantSleep(never, 20*time.Second)
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(never), -1)
	if _, known := h.tr.Pool(never.Pool); known {
		t.Fatal("a pool whose only source never answered is known")
	}

	p.next(t).ok(Counts{Queued: 3})
	h.wantSleep(k, 10*time.Second)
	if got := <-changes; got != k.Pool {
		t.Fatalf("OnChange(%q), want %q", got, k.Pool)
	}
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(k), 0)

	// t=10s: the source starts failing; its last good value is kept while fresh.
	h.stepTo(p, 10*time.Second)
	p.next(t).fail(Errorf(ReasonTimeout, "slow"))
	h.wantSleep(k, 20*time.Second)
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(k), 10)
	if c, known := h.tr.Pool(k.Pool); !known || c.Queued != 3 {
		t.Fatalf("t=10s: Pool = %+v, %v; want the last good reading", c, known)
	}
	// Between polls the staleness still grows at every scrape.
	h.clk.Step(15 * time.Second)
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(k), 25)
	h.stepTo(p, 5*time.Second) // t=30s
	p.next(t).fail(Errorf(ReasonTimeout, "slow"))
	h.wantSleep(k, 40*time.Second)
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(k), 30)
	if _, known := h.tr.Pool(k.Pool); !known {
		t.Fatal("t=30s: unknown within max staleness")
	}
	select {
	case pool := <-changes:
		t.Fatalf("OnChange(%q) while the reading is still fresh", pool)
	default:
	}

	h.stepTo(p, 40*time.Second) // t=70s: beyond the 1m max staleness
	p.next(t).fail(Errorf(ReasonTimeout, "slow"))
	h.wantSleep(k, 80*time.Second)
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(k), 70)
	if c, known := h.tr.Pool(k.Pool); known {
		t.Fatalf("t=70s: Pool = %+v known; want unknown after max staleness", c)
	}
	if got := <-changes; got != k.Pool {
		t.Fatalf("OnChange(%q) when the reading aged out, want %q", got, k.Pool)
	}
	// The last good counts stay visible in the jobs gauge; staleness tells they are old.
	wrWantMetric(t, "warmpool_queue_jobs", map[string]string{"pool": k.Pool, "source": k.Source, "state": "queued"}, 3)

	h.stepTo(p, 80*time.Second) // t=150s: recovered
	p.next(t).ok(Counts{Queued: 3})
	h.wantSleep(k, 10*time.Second)
	if c, known := h.tr.Pool(k.Pool); !known || c.Queued != 3 {
		t.Fatalf("recovered: Pool = %+v, %v", c, known)
	}
	if got := <-changes; got != k.Pool {
		t.Fatalf("OnChange(%q) on recovery, want %q", got, k.Pool)
	}
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(k), 0)
	wrWantMetric(t, "warmpool_source_staleness_seconds", stale(never), -1)
}

func TestRunnerSetReplacesPollers(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	a, b, c, d := Key{"rt-set", "a"}, Key{"rt-set", "b"}, Key{"rt-set", "c"}, Key{"rt-set", "d"}
	pa, pb, pb2, pc, pd := wrNewPoller(), wrNewPoller(), wrNewPoller(), wrNewPoller(), wrNewPoller()
	h.r.Set([]PollSpec{
		{Key: a, Poller: pa, Interval: 10 * time.Second, Fingerprint: "a1"},
		{Key: b, Poller: pb, Interval: 10 * time.Second, Fingerprint: "b1"},
		{Key: d, Poller: pd, Interval: 10 * time.Second, Fingerprint: "d1"},
	})
	h.start()
	for _, x := range []struct {
		k Key
		p *wrPoller
	}{{a, pa}, {b, pb}, {d, pd}} {
		x.p.next(t).ok(Counts{Queued: 1})
		h.wantSleep(x.k, 10*time.Second)
	}
	h.clk.Step(4 * time.Second) // a is 4s into its interval
	wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": SourceLabel(d), "result": "success"}, 1)

	h.r.Set([]PollSpec{
		{Key: a, Poller: wrNewPoller(), Interval: 10 * time.Second, Fingerprint: "a1"}, // unchanged: keeps running pa
		{Key: b, Poller: pb2, Interval: 10 * time.Second, Fingerprint: "b2"},           // changed: replaced
		{Key: c, Poller: pc, Interval: 10 * time.Second, Fingerprint: "c1"},            // new
	}) // d removed
	wrNoSeries(t, d)

	pb2.next(t).ok(Counts{Queued: 2}) // the replacement starts at once
	h.wantSleep(b, 10*time.Second)
	pc.next(t).ok(Counts{Queued: 3})
	h.wantSleep(c, 10*time.Second)
	pa.none(t)

	// a keeps its schedule: 6s more, not a fresh interval.
	h.clk.Step(6 * time.Second)
	pa.next(t).ok(Counts{Queued: 1})
	h.wantSleep(a, 10*time.Second)
	h.clk.Step(10 * time.Second)
	for _, x := range []struct {
		k Key
		p *wrPoller
	}{{b, pb2}, {c, pc}, {a, pa}} {
		x.p.next(t).ok(Counts{Queued: 1})
		h.wantSleep(x.k, 10*time.Second)
	}
	pb.none(t)
	pd.none(t)
	wrNoSeries(t, d)
	wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": SourceLabel(b), "result": "success"}, 3)

	// Changing only the interval replaces the poller too.
	pa2 := wrNewPoller()
	h.r.Set([]PollSpec{{Key: a, Poller: pa2, Interval: 20 * time.Second, Fingerprint: "a1"}})
	pa2.next(t).ok(Counts{})
	h.wantSleep(a, 20*time.Second)
	for _, k := range []Key{b, c, d} {
		wrNoSeries(t, k)
	}
}

func TestRunnerRemovedPollerInFlightRecordsNothing(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-inflight", "prom"}
	p := wrNewPoller()
	h.tr.SetSources(wrSources(k))
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: 10 * time.Second}})
	h.start()
	call := p.next(t)
	h.r.Set(nil)
	select {
	case <-call.ctx.Done():
	case <-time.After(wrGuard):
		t.Fatal("removed poller's poll not cancelled")
	}
	call.ok(Counts{Queued: 9}) // may race with the cancellation: either way it must not land
	wrNoSeries(t, k)
	if _, staleness, _ := h.tr.Source(k); staleness != -1 {
		t.Fatalf("a removed poller's reading was recorded (staleness %s)", staleness)
	}
}

// wrStubborn ignores its context until released: a poller that does not honour cancellation.
type wrStubborn struct {
	*wrPoller
	started, cancelled, release chan struct{}
}

func (s *wrStubborn) Poll(ctx context.Context) (Counts, error) {
	if s.inflight.Add(1) > 1 {
		s.overlap.Store(true)
	}
	defer s.inflight.Add(-1)
	close(s.started)
	<-ctx.Done()
	close(s.cancelled)
	<-s.release
	return Counts{Queued: 99}, nil
}

func TestRunnerReplacedPollerNeverOverlaps(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-overlap", "prom"}
	p2 := wrNewPoller()
	old := &wrStubborn{wrPoller: &wrPoller{inflight: p2.inflight, overlap: p2.overlap},
		started: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
	h.tr.SetSources(wrSources(k))
	h.r.Set([]PollSpec{{Key: k, Poller: old, Interval: 10 * time.Second, Fingerprint: "1"}})
	h.start()
	<-old.started

	h.r.Set([]PollSpec{{Key: k, Poller: p2, Interval: 10 * time.Second, Fingerprint: "2"}})
	<-old.cancelled
	for range 100 {
		runtime.Gosched() // give a wrong implementation every chance to start p2 now
	}
	p2.none(t)
	close(old.release)
	p2.next(t).ok(Counts{Queued: 1})
	h.wantSleep(k, 10*time.Second)
	if p2.overlap.Load() {
		t.Fatal("two polls of one key overlapped")
	}
	if c, _, _ := h.tr.Source(k); c.Queued != 1 {
		t.Fatalf("recorded %+v; the replaced poller's late reading must be dropped", c)
	}
}

func TestRunnerStartStopsEverything(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k1, k2 := Key{"rt-stop", "a"}, Key{"rt-stop", "b"}
	p1, p2 := wrNewPoller(), wrNewPoller()
	h.r.Set([]PollSpec{{Key: k1, Poller: p1, Interval: 10 * time.Second}, {Key: k2, Poller: p2, Interval: 10 * time.Second}})
	if !h.r.NeedLeaderElection() {
		t.Fatal("the runner must run on the leader only")
	}
	h.start()
	inflight := p1.next(t) // k1 mid-poll
	p2.next(t).ok(Counts{Queued: 1})
	h.wantSleep(k2, 10*time.Second) // k2 asleep
	if n := h.r.goroutines.Load(); n < 2 {
		t.Fatalf("%d runner goroutines while two pollers run", n)
	}

	h.stop()
	select {
	case <-inflight.ctx.Done():
	default:
		t.Fatal("Start returned with a poll still running")
	}
	if n := h.r.goroutines.Load(); n != 0 {
		t.Fatalf("%d runner goroutines left after Start returned", n)
	}
	// A replica that stopped polling reports nothing.
	wrNoSeries(t, k1)
	wrNoSeries(t, k2)

	// Nothing restarts after Start returned.
	h.r.Set([]PollSpec{{Key: Key{"rt-stop", "c"}, Poller: p1, Interval: 10 * time.Second}})
	h.clk.Step(time.Hour)
	p1.none(t)
	p2.none(t)
	if n := h.r.goroutines.Load(); n != 0 {
		t.Fatalf("%d runner goroutines after Set on a stopped runner", n)
	}
	if err := h.r.Start(context.Background()); err == nil {
		t.Fatal("a second Start succeeded")
	}
}

func TestRunnerSetIgnoresNilAndDuplicates(t *testing.T) {
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-dup", "a"}
	first, last := wrNewPoller(), wrNewPoller()
	h.r.Set([]PollSpec{
		{Key: Key{"rt-dup", "nil"}},
		{Key: k, Poller: first, Interval: 10 * time.Second},
		{Key: k, Poller: last, Interval: 10 * time.Second},
	})
	h.start()
	last.next(t).ok(Counts{})
	h.wantSleep(k, 10*time.Second)
	first.none(t)
	wrNoSeries(t, Key{"rt-dup", "nil"})
}

func TestSpecFingerprint(t *testing.T) {
	a := SpecFingerprint(map[string]string{"url": "https://p", "query": "q"}, "token-1")
	if a != SpecFingerprint(map[string]string{"query": "q", "url": "https://p"}, "token-1") {
		t.Fatal("fingerprint depends on map order")
	}
	if a == SpecFingerprint(map[string]string{"url": "https://p", "query": "q"}, "token-2") {
		t.Fatal("a rotated token does not change the fingerprint")
	}
	if len(a) != 32 {
		t.Fatalf("fingerprint %q", a)
	}
}

// The pieces together: a real Buildkite poller on a loopback server that hangs, timed out by
// the Runner's (fake) clock, then recovering.
func TestRunnerBuildkiteTimeoutThenRecovery(t *testing.T) {
	arrived := make(chan struct{}, 10)
	var hang atomic.Bool
	hang.Store(true)
	srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
		arrived <- struct{}{}
		if hang.Load() {
			<-w.r.Context().Done()
			return
		}
		w.json(200, bkPayload)
	}))
	bk, err := NewBuildkite(srv.URL, "nvme-arm64", "agent-token", srv.Client().Transport)
	if err != nil {
		t.Fatal(err)
	}
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-bk", "buildkite"}
	h.r.Set([]PollSpec{{Key: k, Poller: bk, Interval: 10 * time.Second, Timeout: 2 * time.Second}})
	h.start()

	<-arrived
	h.clk.Step(2 * time.Second)
	h.wantSleep(k, 20*time.Second)
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(SourceLabel(k), ReasonTimeout)); got != 1 {
		t.Fatalf("errors_total{reason=timeout} = %v, want 1", got)
	}
	hang.Store(false)
	h.clk.Step(20 * time.Second)
	<-arrived
	h.wantSleep(k, 10*time.Second)
	if c, staleness, err := h.tr.Source(k); err != nil || staleness != 0 || c != (Counts{Queued: 5, Running: 2}) {
		t.Fatalf("Source = %+v, %s, %v", c, staleness, err)
	}
}

// A Prometheus behind a rate-limiting proxy: the Runner waits as long as the 429 says.
func TestRunnerPrometheusRetryAfter(t *testing.T) {
	var calls atomic.Int32
	srv := wrLoopback(t, promHandler(func(w promWriter) {
		if calls.Add(1) == 1 {
			w.rw.Header().Set("Retry-After", "120")
			w.text(429, "Too Many Requests")
			return
		}
		w.json(200, promScalar("4"))
	}))
	p, err := NewPrometheus(srv.URL, "sum(ci_jobs_queued)", "queued", srv.Client().Transport)
	if err != nil {
		t.Fatal(err)
	}
	h := wrNewHarness(t, time.Hour)
	k := Key{"rt-prom", "prom"}
	h.r.Set([]PollSpec{{Key: k, Poller: p, Interval: 15 * time.Second}})
	h.start()
	h.wantSleep(k, 2*time.Minute)
	h.clk.Step(2 * time.Minute)
	h.wantSleep(k, 15*time.Second)
	if c, _, err := h.tr.Source(k); err != nil || c != (Counts{Queued: 4}) {
		t.Fatalf("Source = %+v, %v", c, err)
	}
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(SourceLabel(k), ReasonRateLimited)); got != 1 {
		t.Fatalf("errors_total{reason=rate_limited} = %v, want 1", got)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}
