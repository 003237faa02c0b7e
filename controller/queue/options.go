package queue

import (
	"net/http"

	"k8s.io/utils/clock"
)

// PollerOption tunes a REST poller (GitHub, GitLab).
type PollerOption func(*pollerSettings)

type pollerSettings struct {
	httpClient *http.Client
	clk        clock.PassiveClock
}

// WithHTTPClient sets the HTTP client (its Transport and Timeout are kept; the poller adds
// authentication on top). Default: a client with a 30 s timeout.
func WithHTTPClient(c *http.Client) PollerOption {
	return func(s *pollerSettings) { s.httpClient = c }
}

// WithClock sets the clock used for rate-limit back-off and listing caches.
func WithClock(clk clock.PassiveClock) PollerOption {
	return func(s *pollerSettings) { s.clk = clk }
}
