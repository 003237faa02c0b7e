// Package drain waits for a Dagger Engine's clients to leave before the engine is told to stop.
// It runs as the engine container's preStop hook (`warmpool engine drain`): no engine release
// bounds its graceful stop while clients stay attached (see package engine), so SIGTERM must
// find the engine idle, or the pod's grace period ends in SIGKILL and a wiped cache.
//
// The decision (what a scrape says, whether to wait, stop waiting or give up) is pure and
// driven by an injected clock; reading the engine's metrics endpoint is one small function.
package drain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/utils/clock"

	"warmpool.io/warmpool/volumes/engine"
)

// Metric is the engine's gauge of connected clients (sessions), served on
// _EXPERIMENTAL_DAGGER_METRICS_ADDR since v0.18.11 (cmd/engine/metrics.go).
const Metric = engine.MetricConnectedClients

// ErrNoMetric: the scrape parsed but holds no sample of Metric, as from an engine that does not
// export it. Such an engine cannot be drained by its metrics.
var ErrNoMetric = errors.New("no " + Metric + " sample in the metrics")

// Clients reads the number of connected clients from a scrape in the Prometheus text exposition
// format: the sum of Metric over its series (the engine serves one, unlabelled; a labelled
// exporter in front of it could split it). A value that is not a finite count >= 0 is an error,
// never "0 clients": only a real 0 may let the engine stop.
func Clients(scrape io.Reader) (float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(scrape)
	if err != nil {
		return 0, fmt.Errorf("parsing the metrics, %w", err)
	}
	family := families[Metric]
	// A family declared by # HELP or # TYPE without a sample says nothing about the clients.
	if family == nil || len(family.GetMetric()) == 0 {
		return 0, ErrNoMetric
	}
	sum := 0.0
	for _, m := range family.GetMetric() {
		v, err := sampleValue(family.GetType(), m)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func sampleValue(t dto.MetricType, m *dto.Metric) (float64, error) {
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	default:
		return 0, fmt.Errorf("%s is a %s, want a gauge", Metric, t)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("%s is %s, not a count of clients", Metric, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return v, nil
}

// Options bound a drain.
type Options struct {
	// MaxWait is how long clients may stay attached before the drain gives up (the engine's
	// grace period less the time its own stop needs). Zero reads once.
	MaxWait time.Duration
	// Interval is the time between two reads.
	Interval time.Duration
	// UnreadableGrace is how long the metrics may be unreadable in a row before the drain gives
	// up: an engine without metrics, or not serving them, would only have its stop delayed.
	UnreadableGrace time.Duration
}

// Validate rejects options the loop cannot run with.
func (o Options) Validate() error {
	switch {
	case o.MaxWait < 0:
		return fmt.Errorf("max wait %s is negative", o.MaxWait)
	case o.Interval <= 0:
		return fmt.Errorf("interval %s must be positive", o.Interval)
	case o.UnreadableGrace < 0:
		return fmt.Errorf("unreadable grace %s is negative", o.UnreadableGrace)
	}
	return nil
}

// Verdict is what a drain makes of its latest read.
type Verdict int

const (
	// Wait: clients are attached (or the read failed) and there is time left; read again.
	Wait Verdict = iota
	// Drained: no client is attached; the engine may stop.
	Drained
	// TimedOut: MaxWait ran out with clients attached or the last read failing.
	TimedOut
	// Unreadable: the metrics could not be read for UnreadableGrace in a row.
	Unreadable
)

func (v Verdict) String() string {
	return [...]string{"wait", "drained", "timed out", "unreadable"}[v]
}

// State is what a drain remembers between reads.
type State struct {
	// Start is when the drain began; MaxWait counts from it.
	Start time.Time
	// Reads counts the reads so far.
	Reads int
	// Clients is the last count read, Counted whether any read succeeded; Err is the last
	// read's error (nil when it succeeded).
	Clients float64
	Counted bool
	Err     error
	// FailingSince is when the current run of Failures failed reads began; zero after a good
	// read.
	FailingSince time.Time
	Failures     int
}

// NewState starts a drain at now.
func NewState(now time.Time) *State { return &State{Start: now} }

// Observe records one read (clients, or the error that kept it from being read) made at now and
// decides what follows. A read of 0 drains even at the deadline; a failure never does.
func (s *State) Observe(o Options, now time.Time, clients float64, err error) Verdict {
	s.Reads++
	s.Err = err
	if err == nil {
		s.Clients, s.Counted = clients, true
		s.FailingSince, s.Failures = time.Time{}, 0
		if clients == 0 {
			return Drained
		}
	} else {
		if s.FailingSince.IsZero() {
			s.FailingSince = now
		}
		s.Failures++
		if now.Sub(s.FailingSince) >= o.UnreadableGrace {
			return Unreadable
		}
	}
	if now.Sub(s.Start) >= o.MaxWait {
		return TimedOut
	}
	return Wait
}

// Next is how long to wait after a Wait verdict at now: one interval, cut short so the last read
// falls on the deadline, or on the end of the unreadable grace, rather than past it.
func (s *State) Next(o Options, now time.Time) time.Duration {
	d := min(o.Interval, s.Start.Add(o.MaxWait).Sub(now))
	if !s.FailingSince.IsZero() {
		d = min(d, s.FailingSince.Add(o.UnreadableGrace).Sub(now))
	}
	return max(d, 0)
}

// Errors Run returns when it gives up; the kubelet sends SIGTERM either way.
var (
	ErrTimedOut   = errors.New("gave up waiting for the engine's clients")
	ErrUnreadable = errors.New("cannot read the engine's client count")
)

// Error is why a drain that ended with verdict v at now did not see 0 clients.
func (s *State) Error(o Options, v Verdict, now time.Time) error {
	switch v {
	case Unreadable:
		reads := "1 failed read"
		if s.Failures != 1 {
			reads = strconv.Itoa(s.Failures) + " failed reads"
		}
		return fmt.Errorf("%w for %s (%s): %w; the engine gets SIGTERM without waiting for its clients, since an engine whose metrics cannot be read cannot be drained",
			ErrUnreadable, now.Sub(s.FailingSince).Round(time.Millisecond), reads, s.Err)
	case TimedOut:
		if s.Err != nil {
			seen := "no read succeeded"
			if s.Counted {
				seen = clientCount(s.Clients) + " at the last good read"
			}
			return fmt.Errorf("%w: the maximum wait (%s) ran out with the last read failing (%s), %w", ErrTimedOut, o.MaxWait, seen, s.Err)
		}
		return fmt.Errorf("%w: %s still attached at the end of the maximum wait (%s): the engine now gets SIGTERM and its stop waits for them; if they outlast the grace period it is killed and its cache lost",
			ErrTimedOut, clientCount(s.Clients), o.MaxWait)
	}
	return nil
}

func count(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func clientCount(v float64) string {
	if v == 1 {
		return "1 client"
	}
	return count(v) + " clients"
}

// Run reads the client count with read until it is 0 (nil), or gives up (an error wrapping
// ErrTimedOut or ErrUnreadable), telling progress about every change of the count. It waits on
// clk between reads; read bounds its own time.
func Run(ctx context.Context, clk clock.Clock, o Options, read func(context.Context) (float64, error), progress io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	s := NewState(clk.Now())
	last := math.NaN()
	for {
		clients, err := read(ctx)
		now := clk.Now()
		v := s.Observe(o, now, clients, err)
		if err == nil && clients != last {
			fmt.Fprintf(progress, "%s attached\n", clientCount(clients))
			last = clients
		}
		switch v {
		case Drained:
			return nil
		case TimedOut, Unreadable:
			return s.Error(o, v, now)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the engine's clients, %w", ctx.Err())
		case <-clk.After(s.Next(o, now)):
		}
	}
}

// ReadTimeout bounds one read of the metrics endpoint: a hung engine counts as unreadable.
const ReadTimeout = 5 * time.Second

// Read scrapes url (the engine's /metrics) once and returns its client count.
func Read(ctx context.Context, client *http.Client, url string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, ReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("building the request for %s, %w", url, err)
	}
	// The text format: Clients parses nothing else.
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		// The error names the URL already.
		return 0, fmt.Errorf("reading the engine's metrics, %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain the start of the body for the message; the rest is discarded with the connection.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return 0, fmt.Errorf("reading %s: %s %q", url, resp.Status, body)
	}
	n, err := Clients(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading %s, %w", url, err)
	}
	return n, nil
}
