package scaling_test

import (
	"testing"
	"time"

	"warmpool.io/warmpool/controller/queue"
)

// TestRestartsDoNotStretchAHold: a scale-down in progress (the queue drained, the window
// holding the nodes) completes when its window runs out, however often the controller restarts
// meanwhile and however long each new process waits for its first queue reading. Each restart
// resumes the count and the hold recorded on the headroom Deployment.
func TestRestartsDoNotStretchAHold(t *testing.T) {
	d := newDirect(t, poolName("crashloop"), "scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 5m}", nil)
	d.record(queue.Counts{Queued: 3})
	d.wantReplicas("three queued jobs", 3)

	d.clk.Step(time.Minute)
	d.record(queue.Counts{})
	d.wantReplicas("drained, inside the window", 3)

	// A crash loop: every 80 s a new process, which evaluates twice before its source answers
	// (the last one never gets an answer), then once with the data (still drained).
	for i := range 3 {
		d.clk.Step(time.Minute)
		d.start()
		d.wantReplicas("restarted, no data yet", 3)
		d.clk.Step(20 * time.Second)
		d.wantReplicas("restarted, still no data", 3)
		if i < 2 {
			d.record(queue.Counts{})
			d.wantReplicas("restarted, drained, inside the window", 3)
		}
	}
	// The last recommendation of 3 was made at the start, so its window ended 5 minutes later,
	// a second ago. Without restarts the pool would have scaled down then; with them it does at
	// its first evaluation with data.
	d.clk.Step(time.Second)
	d.record(queue.Counts{})
	d.wantReplicas("drained, the window run out across the restarts", 0)
}

// TestRestartAfterSteadyDemandKeepsTheHold: a pool steady at 3 nodes for longer than the
// window is resumed with its recent demand still holding them: a new process whose source
// knows nothing yet (a webhook restarts with no job) does not drop the nodes at once, but only
// once the window has passed with no demand.
func TestRestartAfterSteadyDemandKeepsTheHold(t *testing.T) {
	d := newDirect(t, poolName("steady"), "scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 5m}", nil)
	d.record(queue.Counts{Queued: 3})
	d.wantReplicas("three queued jobs", 3)
	for range 10 {
		d.clk.Step(time.Minute)
		d.record(queue.Counts{Running: 3})
		d.wantReplicas("steady", 3) // no node exists in this test: headroom is desired
	}
	d.clk.Step(30 * time.Second)
	d.start()
	d.record(queue.Counts{Queued: 0})
	d.wantReplicas("restarted, the source knows no job yet", 3)
	d.clk.Step(5 * time.Minute)
	d.wantReplicas("a window with no demand", 0)
}
