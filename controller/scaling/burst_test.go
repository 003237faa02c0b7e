package scaling_test

import (
	"testing"
	"time"

	"warmpool.io/warmpool/controller/queue"
)

// TestBurstHoldKeepsPartOfTheBurstAcrossARestart: after a burst of 6 jobs the pool keeps
// ceil(50% of 6) = 3 nodes' headroom until the peak leaves the hold's window, also when a new
// process takes over in between: the peak is part of the state recorded on the headroom object.
func TestBurstHoldKeepsPartOfTheBurstAcrossARestart(t *testing.T) {
	d := newDirect(t, poolName("burst"), `scaling: {jobsPerNode: 1, scaleDownStabilization: 1m, spare: {mode: "off"}, burstHold: {percent: 50, window: 10m}}`, nil)
	d.record(queue.Counts{Queued: 6})
	d.wantReplicas("a burst of six", 6)
	d.clk.Step(30 * time.Second)
	d.record(queue.Counts{})
	d.clk.Step(2 * time.Minute)
	d.wantReplicas("drained, past the stabilization: the hold keeps half", 3)
	expectGauge(t, "warmpool_burst_hold_nodes", d.pool, 3)

	d.clk.Step(2 * time.Minute)
	d.start()
	d.record(queue.Counts{})
	d.wantReplicas("a new process keeps holding the recorded peak", 3)

	// The peak was read at 0; the window (10m) ends then, and the stabilization (1m) after it.
	d.clk.Step(6 * time.Minute)
	d.record(queue.Counts{})
	d.clk.Step(time.Minute)
	d.wantReplicas("the peak left the window", 0)
	expectGauge(t, "warmpool_burst_hold_nodes", d.pool, 0)
}

func expectGauge(t *testing.T, name, pool string, want float64) {
	t.Helper()
	if v, ok := poolMetric(t, name, pool); !ok || v != want {
		t.Errorf("%s{pool=%q} = %v (exported: %t), want %v", name, pool, v, ok, want)
	}
}
