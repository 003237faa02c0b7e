package queue

// The webhook's job ledger: the set of queued and running jobs per route, by workflow_job.id,
// moved only forward by deliveries (apply), corrected by REST listings (Resync) and aged out
// when their last deliveries were lost (Sweep). Webhook (webhook.go) is the HTTP side.

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// WebhookRoute sends the jobs whose labels include all of Labels (case-insensitive) to the
// source Key{Pool, Source}. Routes are tried in order; a job belongs to the first that matches.
// A route with no labels matches nothing.
type WebhookRoute struct {
	Pool   string
	Source string
	Labels []string
}

// job ranks: a job's state only ever moves forward.
const (
	rankQueued    = 1 // queued, waiting
	rankRunning   = 2 // in_progress
	rankCompleted = 3 // completed
)

type webhookJob struct {
	key   Key
	rank  int8
	since time.Time // when the job entered its current rank, by our clock
}

type tombstone struct {
	id int64
	at time.Time
}

type route struct {
	key    Key
	labels []string // lower case
}

// SetRoutes replaces the routes (from the config in force). Jobs already tracked keep their
// Key if a route still has it and are dropped otherwise; every route's counts are recorded, so
// a new route is known (at zero jobs until deliveries or a Resync say otherwise).
func (w *Webhook) SetRoutes(routes []WebhookRoute) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.routes
	w.routes = make([]route, 0, len(routes))
	keep := map[Key]bool{}
	for _, r := range routes {
		labels := make([]string, 0, len(r.Labels))
		for _, l := range r.Labels {
			labels = append(labels, strings.ToLower(l))
		}
		k := Key{Pool: r.Pool, Source: r.Source}
		w.routes = append(w.routes, route{key: k, labels: labels})
		keep[k] = true
	}
	for id, j := range w.jobs {
		if !keep[j.key] {
			delete(w.jobs, id)
		}
	}
	w.recountLocked()
	for _, r := range old {
		if !keep[r.key] {
			// Its series would otherwise report the last counts of a source that is gone.
			ForgetSource(r.key)
		}
	}
	for k := range keep {
		w.recordLocked(k)
	}
}

// Resync replaces source k's jobs with the sets a listing of the CI's REST API returned, to
// correct for lost deliveries. listedAt is when the listing started. A job listed in both sets
// counts as running. Deliveries stay authoritative where they know more: a job already
// completed is not brought back, a job already seen running is not set back to queued, and a
// job whose latest delivery came after listedAt-ResyncGrace is kept even when not listed (the
// listing began before it, or GitHub's listing lags its webhooks). New jobs go to k; a job
// tracked under another source stays there (no double counting). It returns k's counts; a key
// with no route (the config changed meanwhile) is left alone.
func (w *Webhook) Resync(k Key, listedAt time.Time, queuedIDs, runningIDs []int64) Counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	routed := false
	for _, r := range w.routes {
		routed = routed || r.key == k
	}
	if !routed {
		w.log.V(1).Info("resync of a source with no webhook route ignored", "pool", k.Pool, "source", k.Source)
		return Counts{}
	}
	now := w.clk.Now()
	keepAfter := listedAt.Add(-ResyncGrace)
	want := make(map[int64]int8, len(queuedIDs)+len(runningIDs))
	for _, id := range queuedIDs {
		want[id] = rankQueued
	}
	for _, id := range runningIDs {
		want[id] = rankRunning
	}
	dropped, added := 0, 0
	for id, j := range w.jobs {
		if j.key != k {
			continue
		}
		rank, ok := want[id]
		switch {
		case !ok && j.since.Before(keepAfter):
			delete(w.jobs, id)
			dropped++
		case ok && rank > j.rank:
			j.rank, j.since = rank, now
		}
	}
	for id, rank := range want {
		if _, done := w.tombs[id]; done {
			continue
		}
		if _, tracked := w.jobs[id]; tracked {
			continue
		}
		w.jobs[id] = &webhookJob{key: k, rank: rank, since: now}
		added++
	}
	if dropped > 0 || added > 0 {
		w.log.Info("webhook counts corrected by a REST resync: deliveries were lost", "pool", k.Pool, "source", k.Source, "added", added, "dropped", dropped)
	}
	w.recountLocked()
	w.recordLocked(k)
	return w.counts[k]
}

// Sweep expires jobs and tombstones past their ages and records every route's counts, which
// keeps the webhook sources fresh in the Tracker while no delivery arrives. Call it on an
// interval shorter than the Tracker's MaxStaleness (e.g. every 30s).
func (w *Webhook) Sweep() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expireLocked(w.clk.Now(), true)
	for _, r := range w.routes {
		w.recordLocked(r.key)
	}
}

// recordLocked records source k's counts in the Tracker and exports them
// (warmpool_queue_jobs, staleness). No Runner polls a webhook source, so every change is
// exported here, with the delivery that made it: a gauge set only by Sweep lagged the
// headroom it explains by up to a sweep interval.
//
// arrivals are the times of the jobs this delivery first saw (see Tracker.RecordArrivals). Jobs
// a Resync adds are none: their deliveries were lost, so when they were queued is unknown (and
// the first resync after a start lists every job already waiting).
func (w *Webhook) recordLocked(k Key, arrivals ...time.Time) {
	w.tracker.RecordArrivals(k, w.counts[k], arrivals)
	ObserveSource(w.tracker, k)
}

func actionRank(action string) int8 {
	switch action {
	case "queued", "waiting":
		return rankQueued
	case "in_progress":
		return rankRunning
	case "completed":
		return rankCompleted
	}
	return 0
}

// apply records one verified workflow_job delivery and returns the response.
func (w *Webhook) apply(delivery string, ev workflowJobEvent) (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clk.Now()
	w.expireLocked(now, false)
	if delivery != "" {
		if _, dup := w.seen[delivery]; dup {
			w.log.V(1).Info("duplicate webhook delivery ignored", "delivery", delivery)
			return http.StatusOK, "duplicate delivery"
		}
		w.remember(delivery)
	}
	id := ev.WorkflowJob.ID
	rank := actionRank(ev.Action)
	if rank == 0 {
		w.log.V(1).Info("workflow_job action ignored", "action", ev.Action, "job", id)
		return http.StatusAccepted, "action ignored"
	}
	if _, done := w.tombs[id]; done {
		return http.StatusOK, "job already completed"
	}
	j := w.jobs[id]
	ri := w.match(ev.WorkflowJob.Labels)
	if ri < 0 && j == nil {
		w.log.V(1).Info("workflow_job matches no pool", "job", id, "labels", ev.WorkflowJob.Labels)
		w.onError(WebhookSource, ReasonUnknownPool)
		return http.StatusAccepted, "no pool runs these labels"
	}
	key := Key{}
	if ri >= 0 {
		key = w.routes[ri].key
	} else {
		key = j.key
	}
	switch {
	case rank == rankCompleted:
		if j != nil {
			w.count(j.key, j.rank, -1)
			delete(w.jobs, id)
			w.recordLocked(j.key)
		}
		w.tombs[id] = now
		w.tombQ = append(w.tombQ, tombstone{id: id, at: now})
		return http.StatusOK, "ok"
	case j == nil:
		w.jobs[id] = &webhookJob{key: key, rank: rank, since: now}
		w.count(key, rank, 1)
		// A job first seen (queued, or in_progress when its queued delivery was lost or is
		// late) is an arrival, as of its first delivery.
		w.recordLocked(key, now)
		return http.StatusOK, "ok"
	case rank < j.rank:
		w.log.V(1).Info("out-of-order workflow_job delivery ignored", "job", id, "action", ev.Action)
		return http.StatusOK, "stale delivery"
	case rank == j.rank && key == j.key:
		return http.StatusOK, "ok"
	}
	w.count(j.key, j.rank, -1)
	old := j.key
	if rank != j.rank {
		j.rank, j.since = rank, now
	}
	j.key = key
	w.count(key, rank, 1)
	w.recordLocked(key)
	if old != key {
		w.recordLocked(old)
	}
	return http.StatusOK, "ok"
}

// match returns the index of the first route whose labels are all among the job's, or -1.
func (w *Webhook) match(jobLabels []string) int {
	for i, r := range w.routes {
		if len(r.labels) == 0 {
			continue
		}
		all := true
		for _, want := range r.labels {
			found := false
			for _, have := range jobLabels {
				if strings.EqualFold(have, want) {
					found = true
					break
				}
			}
			if !found {
				all = false
				break
			}
		}
		if all {
			return i
		}
	}
	return -1
}

func (w *Webhook) count(k Key, rank int8, delta int) {
	c := w.counts[k]
	switch rank {
	case rankQueued:
		c.Queued += delta
	case rankRunning:
		c.Running += delta
	}
	w.counts[k] = c
}

func (w *Webhook) recountLocked() {
	clear(w.counts)
	for _, r := range w.routes {
		w.counts[r.key] = Counts{}
	}
	for _, j := range w.jobs {
		w.count(j.key, j.rank, 1)
	}
}

// remember adds a delivery ID to the ring of the last webhookDeliveries, evicting the oldest.
func (w *Webhook) remember(delivery string) {
	if old := w.seenRing[w.seenNext]; old != "" {
		delete(w.seen, old)
	}
	w.seenRing[w.seenNext] = delivery
	w.seen[delivery] = struct{}{}
	w.seenNext = (w.seenNext + 1) % len(w.seenRing)
}

// expireLocked drops tombstones past TombstoneTTL and, at most once a webhookSweepEvery unless
// forced, jobs stuck queued or running past their max ages; it records the counts it changed.
func (w *Webhook) expireLocked(now time.Time, force bool) {
	ttl := orDefault(w.TombstoneTTL, DefaultWebhookTombstoneTTL)
	for w.tombHead < len(w.tombQ) && now.Sub(w.tombQ[w.tombHead].at) > ttl {
		t := w.tombQ[w.tombHead]
		if at, ok := w.tombs[t.id]; ok && at.Equal(t.at) {
			delete(w.tombs, t.id)
		}
		w.tombQ[w.tombHead] = tombstone{}
		w.tombHead++
	}
	if w.tombHead > 1024 && w.tombHead*2 > len(w.tombQ) {
		w.tombQ = append(w.tombQ[:0], w.tombQ[w.tombHead:]...)
		w.tombHead = 0
	}
	if !force && now.Sub(w.lastSweep) < webhookSweepEvery {
		return
	}
	w.lastSweep = now
	maxQueued := orDefault(w.MaxQueuedAge, DefaultWebhookMaxQueuedAge)
	maxRunning := orDefault(w.MaxRunningAge, DefaultWebhookMaxRunningAge)
	var changed []Key
	for id, j := range w.jobs {
		age := now.Sub(j.since)
		if (j.rank == rankQueued && age > maxQueued) || (j.rank == rankRunning && age > maxRunning) {
			w.log.V(1).Info("webhook job expired: its later deliveries were lost", "job", id, "pool", j.key.Pool, "age", age)
			delete(w.jobs, id)
			w.count(j.key, j.rank, -1)
			if !slices.Contains(changed, j.key) {
				changed = append(changed, j.key)
			}
		}
	}
	for _, k := range changed {
		w.recordLocked(k)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
