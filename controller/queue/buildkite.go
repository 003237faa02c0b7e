package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultBuildkiteURL is the Buildkite agent API; the metrics endpoints live under /v3.
const DefaultBuildkiteURL = "https://agent.buildkite.com"

// buildkiteMaxBody bounds the metrics response read (it is a few hundred bytes).
const buildkiteMaxBody = 1 << 20

// Buildkite is a Poller of one queue's agent metrics:
//
//	GET {url}/v3/metrics/queue?name=<queue>
//	Authorization: Token <agent token>
//
// the endpoint buildkite-agent-metrics and buildkite-agent-scaler poll. It takes an agent
// (registration or cluster) token, not a REST API token, and answers for one queue:
//
//	{"agents":{"idle":1,"busy":2,"total":3},
//	 "jobs":{"scheduled":4,"running":2,"waiting":1,"total":6},
//	 "organization":{"slug":"acme"},"cluster":{"name":"..."}}
//
// Queued = scheduled (no agent yet) + waiting (blocked on dependencies: the leading
// indicator, work about to be scheduled); Running = running.
//
// No maintained Go client covers the agent metrics API (go-buildkite covers the REST API), so
// this is plain net/http.
//
// A queue with no jobs is answered with zeros by this endpoint; only the all-queues endpoint
// (/v3/metrics, jobs.queues{...}) leaves idle queues out, which is why the per-queue endpoint
// is used. So a 200 whose body lacks the jobs object, jobs.scheduled or jobs.running, or the
// organization slug is not this API (a proxy's page, an old or different endpoint): it is
// ReasonMalformed, never zero jobs. jobs.waiting alone may be absent (older responses) and
// counts as 0.
type Buildkite struct {
	endpoint string // full URL of the request
	token    string
	client   *http.Client
	now      func() time.Time
}

// NewBuildkite returns a poller for queue. baseURL "" means DefaultBuildkiteURL; rt nil means
// http.DefaultTransport. The token is fixed for the poller's life: put it (or its Secret's
// resourceVersion) in the PollSpec fingerprint so a rotation restarts the poller.
func NewBuildkite(baseURL, queue, token string, rt http.RoundTripper) (*Buildkite, error) {
	if baseURL == "" {
		baseURL = DefaultBuildkiteURL
	}
	if err := pollCheckURL(baseURL); err != nil {
		return nil, fmt.Errorf("buildkite source: %w", err)
	}
	if strings.TrimSpace(queue) == "" {
		return nil, errors.New("buildkite source: empty queue name")
	}
	if strings.TrimSpace(token) == "" {
		return nil, errors.New("buildkite source: empty agent token")
	}
	u, _ := url.Parse(baseURL)
	u.Path = strings.TrimRight(u.Path, "/") + "/v3/metrics/queue"
	u.RawQuery = url.Values{"name": {queue}}.Encode()
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &Buildkite{endpoint: u.String(), token: token, client: &http.Client{Transport: rt}, now: time.Now}, nil
}

type buildkiteQueueMetrics struct {
	Jobs *struct {
		Scheduled *int `json:"scheduled"`
		Running   *int `json:"running"`
		Waiting   *int `json:"waiting"`
	} `json:"jobs"`
	Organization struct {
		Slug string `json:"slug"`
	} `json:"organization"`
}

// Poll reads the queue's metrics once.
func (b *Buildkite) Poll(ctx context.Context) (Counts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint, nil)
	if err != nil {
		return Counts{}, &Error{Reason: ReasonConfig, Err: err}
	}
	req.Header.Set("Authorization", "Token "+b.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "warmpool")
	resp, err := b.client.Do(req)
	if err != nil {
		return Counts{}, buildkiteTransportError(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, buildkiteMaxBody))
	if err != nil {
		return Counts{}, buildkiteTransportError(ctx, err)
	}
	if resp.StatusCode/100 != 2 {
		e := pollStatusError(resp.StatusCode, resp.Header, b.now())
		if e == nil { // 400/422
			e = &Error{Reason: ReasonHTTP, RetryAfter: RetryAfterHeader(resp.Header, b.now()), Err: fmt.Errorf("HTTP %d", resp.StatusCode)}
		}
		if msg := buildkiteMessage(body); msg != "" {
			e.Err = fmt.Errorf("%w: %s", e.Err, msg)
		}
		return Counts{}, e
	}

	var m buildkiteQueueMetrics
	if err := json.Unmarshal(body, &m); err != nil {
		return Counts{}, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("buildkite metrics response: %w", err)}
	}
	switch {
	case m.Jobs == nil:
		return Counts{}, Errorf(ReasonMalformed, "buildkite metrics response has no jobs object")
	case m.Jobs.Scheduled == nil || m.Jobs.Running == nil:
		return Counts{}, Errorf(ReasonMalformed, "buildkite metrics response lacks jobs.scheduled or jobs.running")
	case m.Organization.Slug == "":
		return Counts{}, Errorf(ReasonMalformed, "buildkite metrics response has no organization slug")
	}
	waiting := 0
	if m.Jobs.Waiting != nil {
		waiting = *m.Jobs.Waiting
	}
	if *m.Jobs.Scheduled < 0 || *m.Jobs.Running < 0 || waiting < 0 {
		return Counts{}, Errorf(ReasonMalformed, "buildkite metrics response has negative job counts")
	}
	return Counts{Queued: *m.Jobs.Scheduled + waiting, Running: *m.Jobs.Running}, nil
}

// buildkiteMessage is the {"message": ...} of an error body, if it has one.
func buildkiteMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	const maxLen = 200
	if len(e.Message) > maxLen {
		return e.Message[:maxLen]
	}
	return e.Message
}

func buildkiteTransportError(ctx context.Context, err error) error {
	var ne net.Error
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Reason: ReasonTimeout, Err: err}
	}
	return &Error{Reason: ReasonNetwork, Err: err}
}
