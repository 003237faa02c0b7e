package simulate

import (
	"testing"
)

// ratios are warmpool's results over Karpenter alone's on one trace.
type ratios struct{ p95, nodeHours, lost float64 }

func compare(t *testing.T, trace string, c Config) (ratios, Result, Result) {
	t.Helper()
	rep := run(t, readShipped(t, trace), c)
	k, w := result(t, rep, KarpenterAlone), result(t, rep, Warmpool)
	r := ratios{nodeHours: w.NodeHours() / k.NodeHours(), lost: w.LostHours() / k.LostHours()}
	if k.WaitP95 > 0 {
		r.p95 = w.WaitP95.Seconds() / k.WaitP95.Seconds()
	}
	t.Logf("%s: warmpool p95 %s (Karpenter alone %s), node-hours %.1f (%.1f), job-hours lost %.1f (%.1f): ratios %+v",
		trace, w.WaitP95, k.WaitP95, w.NodeHours(), k.NodeHours(), w.LostHours(), k.LostHours(), r)
	return r, k, w
}

// TestDefaultsWin runs the committed traces with the defaults a pool gets when it configures
// nothing (DefaultConfig: config.DefaultSpare, config.DefaultBusyBudget, no warm minimum) and
// the cache model's defaults, with the restore on every new node's critical path as the
// restore controller does it today. Same settings for every trace; these are deterministic
// simulation outputs, not timings.
//
// What holds (issue 13, item 3):
//   - weekday: p95 wait at most 25% of Karpenter alone's, at most 1.2x its node-hours;
//   - spiky and fan-out: job time lost at most half of Karpenter alone's, at most 1.5x its
//     node-hours.
//
// What does not: on spiky and fan-out, warmpool's p95 wait is Karpenter alone's plus the
// restore. Their bursts (20-80 jobs in a minute; matrices of up to 16 at once) outrun any spare
// that fits 1.5x the node-hours, and every job that misses the spare waits for a node's boot and
// then its restore, which Karpenter alone does not do. TestQueueAwareRestore shows the change
// that recovers it.
func TestDefaultsWin(t *testing.T) {
	c := DefaultConfig()
	if r, _, _ := compare(t, "weekday.csv", c); r.p95 > 0.25 || r.nodeHours > 1.2 {
		t.Errorf("weekday: ratios %+v, want p95 <= 0.25 and node-hours <= 1.2", r)
	}
	for _, trace := range []string{"spiky.csv", "fanout.csv"} {
		r, k, w := compare(t, trace, c)
		if r.lost > 0.5 || r.nodeHours > 1.5 {
			t.Errorf("%s: ratios %+v, want job time lost <= 0.5 and node-hours <= 1.5", trace, r)
		}
		// The gap, pinned so a change that closes (or widens) it is noticed: the p95 is a boot
		// plus a restore at most.
		if w.WaitP95 <= k.WaitP95 || w.WaitP95 > c.Boot+c.Restore {
			t.Errorf("%s: p95 %s, Karpenter alone %s: the documented gap changed; update the docs and this test", trace, w.WaitP95, k.WaitP95)
		}
	}
}

// TestQueueAwareRestore: with a restore that starts a node cold at once when a job already waits
// for it (Config.ColdWhenWaiting, not what the restore controller does today), the same
// defaults meet every fan-out bound and keep spiky's p95 wait at Karpenter alone's. Spiky's
// other bounds do not hold then: most of its jobs start cold, as with Karpenter alone (job time
// lost 0.73x), and their longer runs cost 1.53x the node-hours.
func TestQueueAwareRestore(t *testing.T) {
	c := DefaultConfig()
	c.ColdWhenWaiting = true
	if r, _, _ := compare(t, "fanout.csv", c); r.p95 > 1 || r.nodeHours > 1.5 || r.lost > 0.5 {
		t.Errorf("fan-out: ratios %+v, want p95 <= 1, node-hours <= 1.5, job time lost <= 0.5", r)
	}
	if r, _, _ := compare(t, "spiky.csv", c); r.p95 > 1 {
		t.Errorf("spiky: ratios %+v, want p95 <= 1", r)
	}
}
