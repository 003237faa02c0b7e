package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

const (
	// DefaultPollInterval applies to a PollSpec without an Interval.
	DefaultPollInterval = 30 * time.Second
	// MaxPollTimeout bounds the default per-poll timeout: min(interval, 30s).
	MaxPollTimeout = 30 * time.Second
	// maxBackoffFactor caps the exponential backoff of a failing source at 10x its interval.
	maxBackoffFactor = 10
	// maxRetryAfter caps a provider's Retry-After, so a garbage header (a date years ahead)
	// cannot silence a source for good. GitHub's hourly window is the longest real one.
	maxRetryAfter = time.Hour
)

// errPollTimeout is the cancel cause of a poll that outlived its timeout on the Runner's clock.
var errPollTimeout = errors.New("poll timed out")

// PollSpec is one Poller the Runner runs: one source of one pool.
type PollSpec struct {
	Key    Key
	Poller Poller
	// Interval between polls; 0 means DefaultPollInterval.
	Interval time.Duration
	// Timeout of one poll; 0 means min(Interval, MaxPollTimeout).
	Timeout time.Duration
	// Fingerprint identifies the poller's configuration (URL, query, credentials, ...). Set
	// keeps a running poller whose Key, Fingerprint, Interval and Timeout are unchanged and
	// replaces it otherwise; see SpecFingerprint.
	Fingerprint string
	// SelfRecording is set for a Poller that records its own readings in the Tracker (a
	// WebhookResync: the webhook's counts are the source's). The Runner then only counts its
	// polls and errors in the source metrics; a failure leaves the Tracker alone, since the
	// source's deliveries still count.
	SelfRecording bool
}

func (s PollSpec) interval() time.Duration {
	if s.Interval <= 0 {
		return DefaultPollInterval
	}
	return s.Interval
}

func (s PollSpec) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return min(s.interval(), MaxPollTimeout)
}

func (s PollSpec) same(o PollSpec) bool {
	return s.Key == o.Key && s.Fingerprint == o.Fingerprint && s.interval() == o.interval() && s.timeout() == o.timeout() && s.SelfRecording == o.SelfRecording
}

// SpecFingerprint hashes anything JSON-encodable (a source's config, its credential) into a
// PollSpec.Fingerprint. Include the credential (or its Secret's resourceVersion) so a rotated
// token restarts the poller with the new one.
func SpecFingerprint(parts ...any) string {
	b, err := json.Marshal(parts)
	if err != nil {
		b = fmt.Appendf(nil, "%#v", parts)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Runner polls a set of Pollers, each on its own goroutine and interval, and records every
// reading into a Tracker and the source metrics. It is a controller-runtime Runnable that runs
// only on the leader.
//
// Scheduling, per source: the first poll comes after a random jitter of up to 10% of the
// interval (pollers configured together do not align); then one poll per interval. A failed
// poll backs off: the n-th consecutive failure waits interval*2^n, at most 10x interval, and
// at least the provider's Retry-After (RetryAfterOf, capped at 1h). A success resets. Polls of
// one source never overlap, also across a Set that replaces it.
type Runner struct {
	tracker *Tracker
	clk     clock.WithTicker
	log     logr.Logger

	// jitter returns the delay of a poller's first poll; tests make it deterministic.
	jitter func(interval time.Duration) time.Duration
	// onSleep, when set (tests), is called once a poller has armed its timer for the next poll.
	onSleep func(k Key, d time.Duration)
	// goroutines counts the Runner's live goroutines (tests assert none outlive Start).
	goroutines atomic.Int64

	mu      sync.Mutex
	specs   []PollSpec        // desired set, in Set's order
	loops   map[Key]*pollLoop // running pollers (only while started)
	last    map[Key]*pollLoop // newest poller per key that has not exited yet (running or stopping)
	labels  map[Key]struct{}  // sources whose metric series this Runner created
	ctx     context.Context   // Start's context; nil before Start
	started bool
	stopped bool           // Start is returning: nothing starts or records any more
	wg      sync.WaitGroup // every goroutine the Runner started
}

type pollLoop struct {
	spec   PollSpec
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRunner returns a Runner that records into t. Set declares the pollers; Start runs them.
func NewRunner(t *Tracker, clk clock.WithTicker, log logr.Logger) *Runner {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Runner{
		tracker: t,
		clk:     clk,
		log:     log,
		jitter: func(interval time.Duration) time.Duration {
			return time.Duration(rand.Int64N(int64(interval/10) + 1))
		},
		loops:  map[Key]*pollLoop{},
		last:   map[Key]*pollLoop{},
		labels: map[Key]struct{}{},
	}
}

// NeedLeaderElection makes the manager run the Runner only on the leader: one replica polls
// the providers (rate limits are per credential, not per replica).
func (r *Runner) NeedLeaderElection() bool { return true }

// Set replaces the pollers (the config changed). Pollers whose Key, Fingerprint, Interval and
// Timeout are unchanged keep running (and their schedule and backoff); changed ones are
// stopped and restarted with the new spec (after the old one's in-flight poll ends); removed
// ones are stopped and their metric series deleted. Once Set returns, no removed or replaced
// poller records anything more. Specs with a nil Poller are ignored; of duplicate keys the
// last wins. Set may be called before Start (the set is started by Start) and from any
// goroutine, but not from a Tracker OnChange callback.
func (r *Runner) Set(specs []PollSpec) {
	byKey := map[Key]PollSpec{}
	var order []Key
	for _, s := range specs {
		if s.Poller == nil {
			r.log.Error(nil, "queue source without a poller, ignored", "pool", s.Key.Pool, "source", s.Key.Source)
			continue
		}
		if _, dup := byKey[s.Key]; dup {
			r.log.Error(nil, "queue source declared twice, the last one wins", "pool", s.Key.Pool, "source", s.Key.Source)
		} else {
			order = append(order, s.Key)
		}
		byKey[s.Key] = s
	}
	desired := make([]PollSpec, 0, len(order))
	for _, k := range order {
		desired = append(desired, byKey[k])
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.specs = desired
	for k := range r.labels {
		if _, keep := byKey[k]; !keep {
			ForgetSource(k)
			delete(r.labels, k)
		}
	}
	if r.ctx == nil || r.stopped {
		return
	}
	for k, l := range r.loops {
		if s, keep := byKey[k]; !keep || !s.same(l.spec) {
			l.cancel()
			delete(r.loops, k)
		}
	}
	for _, s := range desired {
		if _, running := r.loops[s.Key]; !running {
			r.startLocked(s)
		}
	}
}

// Start runs the pollers until ctx ends, then stops them all and returns once every goroutine
// it started has exited. A Runner starts once.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("queue runner already started")
	}
	r.started = true
	r.ctx = ctx
	for _, s := range r.specs {
		r.startLocked(s)
	}
	r.mu.Unlock()

	liveRunnersMu.Lock()
	liveRunners[r] = struct{}{}
	liveRunnersMu.Unlock()

	<-ctx.Done()

	liveRunnersMu.Lock()
	delete(liveRunners, r)
	liveRunnersMu.Unlock()

	r.mu.Lock()
	r.stopped = true
	for k, l := range r.loops {
		l.cancel()
		delete(r.loops, k)
	}
	r.mu.Unlock()
	r.wg.Wait()

	// A replica that no longer polls must not keep reporting queue state.
	r.mu.Lock()
	for k := range r.labels {
		ForgetSource(k)
		delete(r.labels, k)
	}
	r.mu.Unlock()
	return nil
}

// startLocked starts one poller's goroutine. A stopped poller of the same key that has not
// exited yet (its poll still in flight) is waited for first, so polls never overlap. r.mu is
// held.
func (r *Runner) startLocked(s PollSpec) {
	prev := r.last[s.Key]
	ctx, cancel := context.WithCancel(r.ctx)
	l := &pollLoop{spec: s, cancel: cancel, done: make(chan struct{})}
	r.loops[s.Key] = l
	r.last[s.Key] = l
	r.labels[s.Key] = struct{}{}
	r.goWG(func() { r.run(ctx, l, prev) })
}

// exited forgets a poller that has returned.
func (r *Runner) exited(l *pollLoop) {
	r.mu.Lock()
	if r.last[l.spec.Key] == l {
		delete(r.last, l.spec.Key)
	}
	r.mu.Unlock()
	close(l.done)
}

// goWG runs f on a goroutine counted by the WaitGroup and the goroutine counter.
func (r *Runner) goWG(f func()) {
	r.wg.Add(1)
	r.goroutines.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.goroutines.Add(-1)
		f()
	}()
}

func (r *Runner) run(ctx context.Context, l *pollLoop, prev *pollLoop) {
	defer r.exited(l)
	defer l.cancel()
	if prev != nil {
		select {
		case <-prev.done:
		case <-ctx.Done():
			return
		}
	}
	s := l.spec
	log := r.log.WithValues("pool", s.Key.Pool, "source", s.Key.Source)
	interval := s.interval()
	wait := r.jitter(interval)
	failures := 0
	for {
		if !r.sleep(ctx, s.Key, wait) {
			return
		}
		c, err := r.pollOnce(logr.NewContext(ctx, log), s)
		if ctx.Err() != nil {
			return // stopped or replaced mid-poll: the reading belongs to a config no longer in force
		}
		if !r.record(l, c, err) {
			return
		}
		if err == nil {
			if failures > 0 {
				log.Info("queue source recovered", "failures", failures)
			}
			failures = 0
			wait = interval
			continue
		}
		failures++
		wait = pollBackoff(interval, failures, RetryAfterOf(err))
		v := 0
		if failures > 1 {
			v = 1 // the first failure of a streak at info, the rest at debug
		}
		log.V(v).Info("queue source poll failed", "reason", ReasonOf(err), "failures", failures, "retryIn", wait, "err", err.Error())
	}
}

// pollBackoff is the wait after the n-th consecutive failure: interval*2^n capped at 10x
// interval, and never less than the provider's Retry-After (itself capped at maxRetryAfter).
func pollBackoff(interval time.Duration, failures int, retryAfter time.Duration) time.Duration {
	d := interval
	for i := 0; i < failures && d < maxBackoffFactor*interval; i++ {
		d *= 2
	}
	d = min(d, maxBackoffFactor*interval)
	return max(d, min(retryAfter, maxRetryAfter))
}

// sleep waits d on the Runner's clock; false when ctx ended first.
func (r *Runner) sleep(ctx context.Context, k Key, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := r.clk.NewTimer(d)
	defer t.Stop()
	if r.onSleep != nil {
		r.onSleep(k, d)
	}
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// pollOnce runs one poll under its timeout. The timeout runs on the Runner's clock (so tests
// drive it) and also as a real context deadline (so pollers and servers can see it).
func (r *Runner) pollOnce(ctx context.Context, s PollSpec) (Counts, error) {
	timeout := s.timeout()
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pctx, cancelDeadline := context.WithTimeout(cctx, timeout)
	defer cancelDeadline()

	t := r.clk.NewTimer(timeout)
	stop := make(chan struct{})
	r.goWG(func() {
		select {
		case <-t.C():
			cancel(errPollTimeout)
		case <-stop:
		}
	})
	c, err := s.Poller.Poll(pctx)
	close(stop)
	t.Stop()

	if err != nil && ReasonOf(err) != ReasonTimeout {
		if cause := context.Cause(pctx); errors.Is(cause, errPollTimeout) || errors.Is(cause, context.DeadlineExceeded) {
			err = &Error{Reason: ReasonTimeout, Err: fmt.Errorf("poll timed out after %s: %w", timeout, err)}
		}
	}
	return c, err
}

// record stores a reading and updates the metrics, unless the poller was replaced or removed
// meanwhile (Set holds r.mu while it stops pollers, so nothing of theirs lands after Set).
func (r *Runner) record(l *pollLoop, c Counts, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.loops[l.spec.Key] != l {
		return false
	}
	if !l.spec.SelfRecording {
		r.tracker.Record(l.spec.Key, c, err)
	}
	observePoll(r.tracker, l.spec.Key, err)
	return true
}

// refreshStaleness brings the staleness gauge of every running poller up to date (at scrape).
func (r *Runner) refreshStaleness() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.loops {
		metricSourceStaleness.WithLabelValues(SourceLabel(k)).Set(stalenessValue(r.tracker, k))
	}
}
