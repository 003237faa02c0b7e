// Package queue counts CI jobs per runner pool. Each configured source (GitHub webhooks, GitHub
// REST, Actions Runner Controller, GitLab, Buildkite, Prometheus) reports queued and running
// jobs for one pool; the Tracker keeps every source's last good reading, ages it out after a
// bounded staleness, and answers "how many jobs does this pool have, and is that known?".
package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Counts is what a source says about one pool's jobs.
type Counts struct {
	Queued  int
	Running int
}

// Total is queued plus running jobs.
func (c Counts) Total() int { return c.Queued + c.Running }

// Add sums two readings (a pool with several sources).
func (c Counts) Add(o Counts) Counts {
	return Counts{Queued: c.Queued + o.Queued, Running: c.Running + o.Running}
}

// Poller is a source read on an interval (GitHub REST, GitLab, Buildkite, Prometheus).
// A Poller serves exactly one pool's source entry; it holds no state the Tracker keeps.
type Poller interface {
	Poll(ctx context.Context) (Counts, error)
}

// Error reasons, the `reason` label of warmpool_source_errors_total. Stable: dashboards and
// alerts filter on them.
const (
	ReasonAuth        = "auth"         // 401/403 without rate-limit headers, bad credentials
	ReasonRateLimited = "rate_limited" // 429, or 403 with the provider's rate-limit headers
	ReasonTimeout     = "timeout"      // the request outlived its deadline
	ReasonMalformed   = "malformed"    // a body that is not the API's shape
	ReasonHTTP        = "http"         // any other non-2xx status
	ReasonNetwork     = "network"      // connection refused, DNS, reset
	ReasonConfig      = "config"       // missing Secret or key, unusable settings
	ReasonSignature   = "signature"    // webhook with a bad or missing HMAC signature
	ReasonBadRequest  = "bad_request"  // webhook body that is too large or not JSON
	ReasonUnknownPool = "unknown_pool" // a job whose labels match no pool
	ReasonQuery       = "query"        // a Prometheus query that returns no single number
)

// Error is a source failure with a stable reason. RetryAfter, when set, is how long the
// provider asked us to wait (rate limits); the poller backs off at least that long.
type Error struct {
	Reason     string
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%s (retry after %s): %v", e.Reason, e.RetryAfter, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a reason.
func Errorf(reason string, format string, args ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf is the reason of err: its *Error's, a timeout for context deadlines, else network.
func ReasonOf(err error) string {
	var qe *Error
	switch {
	case errors.As(err, &qe):
		return qe.Reason
	case errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	default:
		return ReasonNetwork
	}
}

// RetryAfterOf is the provider's requested wait, if err carries one.
func RetryAfterOf(err error) time.Duration {
	var qe *Error
	if errors.As(err, &qe) {
		return qe.RetryAfter
	}
	return 0
}
