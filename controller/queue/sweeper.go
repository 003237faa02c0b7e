package queue

import (
	"context"
	"time"
)

// WebhookSweepInterval is well inside the tracker's staleness bound.
const WebhookSweepInterval = 30 * time.Second

// Sweeper runs a Webhook's Sweep every Interval. Webhook sources are pushed: without
// deliveries their readings would go stale and their pools unknown. Sweeping re-records them
// (and expires jobs whose completion was lost). It runs on the leader, where deliveries arrive.
type Sweeper struct {
	Webhook  *Webhook
	Interval time.Duration
}

// NeedLeaderElection keeps the sweeper with the webhook endpoint, on the leader.
func (s Sweeper) NeedLeaderElection() bool { return true }

// Start sweeps until ctx ends.
func (s Sweeper) Start(ctx context.Context) error {
	tick := time.NewTicker(s.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.Webhook.Sweep()
		}
	}
}
