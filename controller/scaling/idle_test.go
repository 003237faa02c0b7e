package scaling_test

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/controller/queue"
)

// loop runs a direct pool's evaluations as the controller's work queue does, on the fake clock:
// the wake-ups the controller's Source delivers (queue readings, an ageing reading) are
// evaluated at once, and each evaluation's RequeueAfter is kept as the time it is due (the
// earliest wins, as in a delaying queue). It counts the evaluations. Meanwhile the pool's ci
// source reports the same reading every readEvery, as a poller does, until stopReading.
type loop struct {
	d           *direct
	q           workqueue.TypedRateLimitingInterface[reconcile.Request]
	due         time.Time
	nextRead    time.Time
	readEvery   time.Duration
	evaluations []time.Time
}

func newLoop(t *testing.T, d *direct, readEvery time.Duration) *loop {
	l := &loop{d: d, readEvery: readEvery,
		q: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())}
	t.Cleanup(l.q.ShutDown)
	d.tracker.OnChange(d.c.Enqueue) // as the manager wires it
	if err := d.c.Source().Start(t.Context(), l.q); err != nil {
		t.Fatal(err)
	}
	l.nextRead = d.clk.Now()
	return l
}

func (l *loop) evaluate() {
	res := l.d.evaluate()
	now := l.d.clk.Now()
	l.evaluations = append(l.evaluations, now)
	if res.RequeueAfter > 0 {
		if due := now.Add(res.RequeueAfter); l.due.IsZero() || due.Before(l.due) {
			l.due = due
		}
	}
}

// drain evaluates every wake-up queued so far.
func (l *loop) drain() {
	for l.q.Len() > 0 {
		req, _ := l.q.Get()
		l.evaluate()
		l.q.Forget(req)
		l.q.Done(req)
	}
}

// advance moves the clock to `to` through every reading and due evaluation on the way.
func (l *loop) advance(to time.Time) {
	for {
		next := l.due
		if !l.nextRead.IsZero() && (next.IsZero() || l.nextRead.Before(next)) {
			next = l.nextRead
		}
		if next.IsZero() || next.After(to) {
			break
		}
		l.d.clk.SetTime(next)
		if next.Equal(l.nextRead) {
			l.d.record(queue.Counts{})
			l.nextRead = next.Add(l.readEvery)
		}
		l.drain()
		if next.Equal(l.due) {
			l.due = time.Time{}
			l.evaluate()
		}
	}
	l.d.clk.SetTime(to)
	l.drain()
}

func (l *loop) stopReading() { l.nextRead = time.Time{} }

func (l *loop) want(t *testing.T, what string, evaluations int, replicas int32) {
	t.Helper()
	if len(l.evaluations) != evaluations {
		t.Fatalf("%s: %d evaluations at %v, want %d", what, len(l.evaluations), l.evaluations, evaluations)
	}
	if got := l.d.replicas(); got != replicas {
		t.Fatalf("%s: headroom %d, want %d", what, got, replicas)
	}
}

// TestIdlePoolWaitsForItsNextChange: a pool with no jobs and a daily warm window is evaluated
// when its reading first arrives, when the window opens, when it closes, and when the
// stabilization hold that follows runs out: four times in four hours, while its source reports
// the same reading every 20 minutes. The hold lasts the full window after the close, as the
// window's floor was the target in force until then. Then the source stops reporting: the pool
// is evaluated once more, when its reading ages out (the tracker trusts it for an hour here).
func TestIdlePoolWaitsForItsNextChange(t *testing.T) {
	pool := poolName("idle")
	d := newDirect(t, pool, `scaling: {jobsPerNode: 1, scaleDownStabilization: 1m, spare: {mode: "off"}, warmWindows: [{schedule: "0 12 * * *", duration: 1h, minimum: 1}]}`, nil)
	day := func(hhmm string) time.Time {
		at, err := time.Parse("2006-01-02 15:04", "2026-03-02 "+hhmm)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	l := newLoop(t, d, 20*time.Minute)

	l.advance(day("09:00")) // the first reading
	l.want(t, "first reading", 1, 0)
	l.advance(day("11:59"))
	l.want(t, "readings unchanged until the window opens", 1, 0)
	l.advance(day("12:00"))
	l.want(t, "window opened", 2, 1)
	l.advance(day("12:59"))
	l.want(t, "inside the window", 2, 1)
	l.advance(day("13:00"))
	l.want(t, "window closed: held by stabilization", 3, 1)
	l.advance(day("13:00").Add(time.Minute - time.Millisecond))
	l.want(t, "inside the hold", 3, 1)
	l.advance(day("13:01"))
	l.want(t, "hold ran out", 4, 0)

	// The last reading was at 13:00; it ages out an hour later.
	l.stopReading()
	l.advance(day("13:59"))
	l.want(t, "reading not aged out yet", 4, 0)
	l.d.clk.SetTime(day("14:00").Add(time.Millisecond))
	eventually(t, "the aged-out reading wakes the pool", func() error {
		if l.q.Len() == 0 {
			return fmt.Errorf("no wake-up")
		}
		return nil
	})
	l.drain()
	l.want(t, "reading aged out", 5, 0)
	if _, known := d.tracker.Pool(pool); known {
		t.Error("the pool is still known after its reading aged out")
	}
	if !l.due.After(day("14:00").Add(12 * time.Hour)) {
		t.Errorf("unknown pool due again at %v, want not before tomorrow's window", l.due)
	}
}
