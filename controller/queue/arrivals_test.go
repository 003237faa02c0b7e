package queue_test

import (
	"errors"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"warmpool.io/warmpool/controller/queue"
)

// Each job a delivery first sees is one arrival, stamped when it was delivered; deliveries that
// move a known job on (in_progress, completed, a duplicate) and a resync's lost jobs are none.
func TestWebhookArrivalsAreFirstSeenJobs(t *testing.T) {
	f := newWebhookFixture(t)
	if got := f.tracker.TakeArrivals("linux-x64"); len(got) != 0 {
		t.Fatalf("arrivals before any delivery: %v", got)
	}
	q1 := f.clk.Now()
	f.job("queued", 1001)
	f.clk.Step(5 * time.Second)
	q2 := f.clk.Now()
	f.job("in_progress", 1002) // its queued delivery was lost: first seen running
	f.clk.Step(5 * time.Second)
	f.job("in_progress", 1001)
	f.job("completed", 1002)
	f.sendAs("dup", "workflow_job", workflowJob("queued", 1003, x64...), 200)
	q3 := f.clk.Now()
	f.sendAs("dup", "workflow_job", workflowJob("queued", 1003, x64...), 200)
	f.hook.Resync(queue.Key{Pool: "linux-x64", Source: "githubWebhook"}, f.clk.Now(), []int64{1003, 1004}, nil)

	got := f.tracker.TakeArrivals("linux-x64")
	want := []time.Time{q1, q2, q3}
	if len(got) != len(want) {
		t.Fatalf("arrivals = %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("arrival %d at %v, want %v", i, got[i], want[i])
		}
	}
	if got := f.tracker.TakeArrivals("linux-x64"); len(got) != 0 {
		t.Errorf("arrivals after taking them: %v, want none", got)
	}
	if got := f.tracker.TakeArrivals("linux-arm64"); len(got) != 0 {
		t.Errorf("other pool's arrivals: %v, want none", got)
	}
}

// A polled source's increases are arrivals at poll time: max(queued increase, total increase),
// never from its first reading or the first after it was stale.
func TestTrackerPolledArrivalsFromIncreases(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	tr := queue.NewTracker(clk, time.Minute)
	tr.SetSources(map[string][]string{"arm": {"bk"}})
	k := queue.Key{Pool: "arm", Source: "bk"}

	tr.Record(k, queue.Counts{Queued: 5, Running: 3}, nil) // first reading: jobs of unknown age
	if got := tr.TakeArrivals("arm"); len(got) != 0 {
		t.Fatalf("first reading gave arrivals %v", got)
	}
	clk.Step(10 * time.Second)
	tr.Record(k, queue.Counts{Queued: 7, Running: 3}, nil) // +2 queued
	clk.Step(10 * time.Second)
	tr.Record(k, queue.Counts{Queued: 6, Running: 6}, nil) // total +2, queued -1: 2 new jobs at least
	clk.Step(10 * time.Second)
	tr.Record(k, queue.Counts{Queued: 6, Running: 4}, nil) // jobs ended: none
	tr.Record(k, queue.Counts{}, errors.New("timeout"))    // a failure: none
	got := tr.TakeArrivals("arm")
	if len(got) != 4 {
		t.Fatalf("arrivals = %v, want 4", got)
	}
	for _, a := range got {
		if a.After(clk.Now()) || a.Before(clk.Now().Add(-20*time.Second)) {
			t.Errorf("arrival %v outside the polls' times", a)
		}
	}

	clk.Step(2 * time.Minute) // stale
	tr.Record(k, queue.Counts{}, errors.New("timeout"))
	tr.Record(k, queue.Counts{Queued: 20, Running: 4}, nil) // back after a gap: unknown ages
	if got := tr.TakeArrivals("arm"); len(got) != 0 {
		t.Errorf("first reading after a stale stretch gave arrivals %v", got)
	}
}
