package queue

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// DefaultResyncInterval is how often a webhook source is corrected from the REST API. A
// listing walks every queued and running run of every repository (pages of runs and jobs), so
// it runs far less often than a REST poller; lost deliveries are rare.
const DefaultResyncInterval = 5 * time.Minute

// JobLister lists a source's queued and running job IDs from the CI's REST API
// (GitHubPoller.ListJobs).
type JobLister interface {
	ListJobs(ctx context.Context) (queued, running []int64, err error)
}

// WebhookResync is the Poller that corrects one webhook source from a REST listing: each Poll
// lists the source's jobs and hands them to Webhook.Resync. Run it in the Runner under the
// webhook source's own Key with SelfRecording set, so it inherits the Runner's schedule,
// back-off, rate-limit waits and leader-only life, and its failures count against the
// webhook source, while the counts stay the webhook's to record.
type WebhookResync struct {
	webhook *Webhook
	key     Key
	lister  JobLister
	clk     clock.PassiveClock
}

var _ Poller = (*WebhookResync)(nil)

// NewWebhookResync returns the resync of webhook source k from lister.
func NewWebhookResync(w *Webhook, k Key, lister JobLister, clk clock.PassiveClock) *WebhookResync {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &WebhookResync{webhook: w, key: k, lister: lister, clk: clk}
}

// Poll lists the jobs and resyncs the webhook with them; on a failed listing nothing changes.
func (r *WebhookResync) Poll(ctx context.Context) (Counts, error) {
	// Taken before the listing: deliveries that arrive while it runs must survive it.
	listedAt := r.clk.Now()
	queued, running, err := r.lister.ListJobs(ctx)
	if err != nil {
		return Counts{}, err
	}
	if ctx.Err() != nil {
		// Stopped or replaced while listing: the Runner drops this reading, so must we.
		return Counts{}, ctx.Err()
	}
	return r.webhook.Resync(r.key, listedAt, queued, running), nil
}
