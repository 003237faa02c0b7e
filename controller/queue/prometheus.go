package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// MaxQueryJobs is the largest job count a Prometheus query may return; more is a broken
// query (a sum over the wrong metric, bytes instead of jobs), not a queue.
const MaxQueryJobs = 1_000_000

// Prometheus is a Poller that runs one PromQL instant query (GET/POST /api/v1/query) whose
// result is one number: the pool's queued or running jobs.
//
// The query must return a scalar or a vector of exactly one sample. An empty vector is an
// error (ReasonQuery), never zero jobs: a metric that is missing (exporter down, renamed,
// relabelled) must not read as an empty queue. Write `sum(x) or vector(0)` when an absent
// series really means zero. Several series, a range vector, NaN, ±Inf, a negative value or
// more than MaxQueryJobs are ReasonQuery errors too. A fractional value (avg, rate) is
// rounded up: a fraction of a job still needs a runner.
type Prometheus struct {
	api   v1.API
	query string
	state string
	now   func() time.Time // for HTTP-date Retry-After values
}

// NewPrometheus returns a poller for query against the Prometheus (or Thanos, Mimir, VictoriaMetrics:
// anything serving /api/v1/query) at url. state is "queued" (or "") or "running": what the
// number counts. rt carries auth and TLS; nil means the client library's default transport.
func NewPrometheus(url, query, state string, rt http.RoundTripper) (*Prometheus, error) {
	switch state {
	case "":
		state = metricStateQueued
	case metricStateQueued, metricStateRunning:
	default:
		return nil, fmt.Errorf("prometheus source: state %q is neither %q nor %q", state, metricStateQueued, metricStateRunning)
	}
	if strings.TrimSpace(query) == "" {
		return nil, errors.New("prometheus source: empty query")
	}
	if err := pollCheckURL(url); err != nil {
		return nil, fmt.Errorf("prometheus source: %w", err)
	}
	c, err := api.NewClient(api.Config{Address: url, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus source: %w", err)
	}
	return &Prometheus{api: v1.NewAPI(promRecorder{c}), query: query, state: state, now: time.Now}, nil
}

// Poll runs the query once.
func (p *Prometheus) Poll(ctx context.Context) (Counts, error) {
	var opts []v1.Option
	if dl, ok := ctx.Deadline(); ok {
		// Let Prometheus give up evaluating when we stop waiting.
		if left := time.Until(dl); left > 0 {
			opts = append(opts, v1.WithTimeout(left))
		}
	}
	resp := &promResponse{}
	val, warnings, err := p.api.Query(context.WithValue(ctx, promResponseKey{}, resp), p.query, time.Time{}, opts...)
	if len(warnings) > 0 {
		logr.FromContextOrDiscard(ctx).Info("prometheus query returned warnings", "query", p.query, "warnings", []string(warnings))
	}
	if err != nil {
		return Counts{}, p.classify(ctx, resp, err)
	}
	n, err := promJobs(val)
	if err != nil {
		return Counts{}, err
	}
	if p.state == metricStateRunning {
		return Counts{Running: n}, nil
	}
	return Counts{Queued: n}, nil
}

// promJobs turns a query result into a job count.
func promJobs(val model.Value) (int, error) {
	var v float64
	switch r := val.(type) {
	case *model.Scalar:
		v = float64(r.Value)
	case model.Vector:
		switch len(r) {
		case 0:
			return 0, Errorf(ReasonQuery, "query returned no series (is the metric missing? use `or vector(0)` if absence means zero)")
		case 1:
		default:
			return 0, Errorf(ReasonQuery, "query returned %d series, want exactly one (aggregate it, e.g. sum(...))", len(r))
		}
		if r[0].Histogram != nil {
			return 0, Errorf(ReasonQuery, "query returned a native histogram sample %s, want a number", r[0].Metric)
		}
		v = float64(r[0].Value)
	case model.Matrix:
		return 0, Errorf(ReasonQuery, "query returned a range vector (%d series), want an instant vector or scalar", len(r))
	case nil:
		return 0, Errorf(ReasonMalformed, "query response has no result")
	default:
		return 0, Errorf(ReasonQuery, "query returned a %s, want an instant vector or scalar", val.Type())
	}
	switch {
	case math.IsNaN(v), math.IsInf(v, 0):
		return 0, Errorf(ReasonQuery, "query returned %v, want a job count", v)
	case v < 0:
		return 0, Errorf(ReasonQuery, "query returned %v, a negative job count", v)
	case v > MaxQueryJobs:
		return 0, Errorf(ReasonQuery, "query returned %v jobs, more than %d is not a queue", v, MaxQueryJobs)
	}
	return int(math.Ceil(v - 1e-9)), nil
}

// classify maps a failed query onto a reason.
func (p *Prometheus) classify(ctx context.Context, resp *promResponse, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Reason: ReasonTimeout, Err: err}
	}
	if !resp.got {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return &Error{Reason: ReasonTimeout, Err: err}
		}
		return &Error{Reason: ReasonNetwork, Err: err}
	}
	if e := pollStatusError(resp.status, resp.header, p.now()); e != nil {
		// Prometheus reports its own query timeout as 503 {"errorType":"timeout"}.
		var ae *v1.Error
		if errors.As(err, &ae) && ae.Detail != "" {
			var body struct {
				ErrorType string `json:"errorType"`
				Error     string `json:"error"`
			}
			if json.Unmarshal([]byte(ae.Detail), &body) == nil && body.ErrorType != "" {
				if body.ErrorType == string(v1.ErrTimeout) || body.ErrorType == string(v1.ErrCanceled) {
					e.Reason = ReasonTimeout
				}
				e.Err = fmt.Errorf("HTTP %d: %s: %s", resp.status, body.ErrorType, body.Error)
			}
		}
		return e
	}
	var ae *v1.Error
	if errors.As(err, &ae) {
		switch ae.Type {
		case v1.ErrBadData, v1.ErrExec:
			// 400/422: the PromQL does not parse or does not evaluate.
			return &Error{Reason: ReasonQuery, Err: err}
		case v1.ErrTimeout, v1.ErrCanceled:
			return &Error{Reason: ReasonTimeout, Err: err}
		}
	}
	// The connection broke while the body was read.
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Reason: ReasonNetwork, Err: err}
	}
	// A 2xx (or 400/422) body that is not the API's JSON envelope, or whose data is not a
	// query result.
	return &Error{Reason: ReasonMalformed, Err: err}
}

// promRecorder is the API client with the HTTP status and headers of the last response of a
// call recorded where the call's context says: client_golang's v1.API returns neither, and
// the reason (401, 429 + Retry-After) needs both.
type promRecorder struct{ api.Client }

type promResponseKey struct{}

type promResponse struct {
	got    bool
	status int
	header http.Header
}

func (c promRecorder) Do(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	resp, body, err := c.Client.Do(ctx, req)
	if r, ok := ctx.Value(promResponseKey{}).(*promResponse); ok && resp != nil {
		r.got, r.status, r.header = true, resp.StatusCode, resp.Header
	}
	return resp, body, err
}

// pollStatusError maps a non-2xx status to its reason: 401/403 auth, 429 rate limited, any
// other (except Prometheus's own 400/422 API errors) http; nil for those the caller decides.
// Retry-After is honoured on every status that carries it (429, 503).
func pollStatusError(status int, h http.Header, now time.Time) *Error {
	if status/100 == 2 || status == http.StatusBadRequest || status == http.StatusUnprocessableEntity {
		return nil
	}
	e := &Error{Reason: ReasonHTTP, RetryAfter: RetryAfterHeader(h, now), Err: fmt.Errorf("HTTP %d %s", status, http.StatusText(status))}
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		e.Reason = ReasonAuth
	case http.StatusTooManyRequests:
		e.Reason = ReasonRateLimited
	}
	return e
}

// RetryAfterHeader is how long a response asks us to wait: its Retry-After (delay-seconds or
// an HTTP-date, RFC 9110 10.2.3), else its RateLimit-Reset (seconds until the window resets
// for Buildkite; a Unix time for GitLab, told apart by size); 0 when neither is there or
// parses. At most an hour.
func RetryAfterHeader(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.ParseInt(v, 10, 64); err == nil {
			return max(0, secondsDuration(s))
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(0, min(t.Sub(now), maxRetryAfter))
		}
	}
	if v := strings.TrimSpace(h.Get("RateLimit-Reset")); v != "" {
		if s, err := strconv.ParseInt(v, 10, 64); err == nil {
			if s >= 1e9 { // a Unix time, not a delta
				return max(0, min(time.Unix(s, 0).Sub(now), maxRetryAfter))
			}
			return max(0, secondsDuration(s))
		}
	}
	return 0
}

func secondsDuration(s int64) time.Duration {
	if s > int64(maxRetryAfter/time.Second) {
		return maxRetryAfter
	}
	return time.Duration(s) * time.Second
}

// pollCheckURL accepts an absolute http(s) URL.
func pollCheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q is not an absolute http(s) URL", raw)
	}
	return nil
}
