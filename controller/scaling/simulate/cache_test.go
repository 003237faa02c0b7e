package simulate

import (
	"testing"
	"time"
)

// cacheConfig is the hand-checked model with the cache's costs switched on: a cold start costs
// 300 s, a restore takes 120 s after the 60 s boot, a save 60 s.
func cacheConfig() Config {
	c := mechanicsConfig()
	c.ColdCost, c.Restore, c.Save = 300*time.Second, 120*time.Second, 60*time.Second
	c.Policy.WarmMinimum = 0
	c.StaticNodes = 0
	c.ColdWhenWaiting = false // the restore's own mechanics; TestColdWhenWaiting turns it on
	return c
}

func TestColdCacheCostsTimeAndNodeTime(t *testing.T) {
	// One 100 s job. Karpenter alone: a cold node, Ready at 60, the job runs 60-460 (100 s plus
	// 300 s cold), the node goes at 460+90+15 = 565. With the restore: Ready and warm at 180,
	// the job runs 180-280, and the node goes at 280+105 = 385, plus the 60 s save: 445.
	c := cacheConfig()
	c.Horizon = sec(1000)
	rep := run(t, []Job{job(0, 100)}, c)
	k, r := result(t, rep, KarpenterAlone), result(t, rep, KarpenterRestore)
	if k.Waits[0] != sec(60) || k.NodeTime != sec(565) || k.WarmStarts != 0 || k.BootWaits != 1 || k.Lost != sec(360) {
		t.Errorf("karpenter alone: %+v", k)
	}
	if r.Waits[0] != sec(180) || r.NodeTime != sec(445) || r.WarmStarts != 1 || r.BootWaits != 1 || r.Lost != sec(180) {
		t.Errorf("karpenter + restore: %+v", r)
	}
}

func TestNodeWarmsAfterAJob(t *testing.T) {
	// Karpenter alone: the second job arrives while the first runs (cold) and gets a cold node
	// of its own; the third arrives after the first ended and reuses its node, now warm, without
	// waiting for a boot.
	c := cacheConfig()
	rep := run(t, []Job{job(0, 100), job(100, 100), job(500, 100)}, c)
	k := result(t, rep, KarpenterAlone)
	if got := k.Waits; got[0] != sec(60) || got[1] != sec(60) || got[2] != 0 {
		t.Errorf("waits %v", got)
	}
	if k.WarmStarts != 1 || k.BootWaits != 2 || k.Lost != sec(120+600) {
		t.Errorf("warm %d, boot waits %d, lost %s", k.WarmStarts, k.BootWaits, k.Lost)
	}
}

func TestSaveOnlyForNodesThatRan(t *testing.T) {
	// Karpenter with the restore. Job A (0, 100 s) gets node 1, usable and warm at 180, runs
	// 180-280. Job B arrives at 250 while A runs: Karpenter launches node 2 (usable at 430),
	// but A's node frees first and B runs there, 280-380. Node 1 goes at 380+105 = 485 and is
	// saved for 60 s: billed 545 s. Node 2 never ran a job: nothing to save, it goes at
	// 430+105 = 535, billed 285 s.
	c := cacheConfig()
	c.Horizon = sec(1000)
	rep := run(t, []Job{job(0, 100), job(250, 100)}, c)
	r := result(t, rep, KarpenterRestore)
	if r.NodesLaunched != 2 || r.NodeTime != sec(545+285) || r.Waits[0] != sec(180) || r.Waits[1] != sec(30) || r.BootWaits != 1 {
		t.Errorf("karpenter + restore: %+v", r)
	}
}

func TestColdWhenWaiting(t *testing.T) {
	// With a queue-aware restore, a node that boots while a job waits for it starts cold at
	// once: the job waits the boot (60 s) and pays the cold cost, as with Karpenter alone.
	c := cacheConfig()
	c.ColdWhenWaiting = true
	rep := run(t, []Job{job(0, 100)}, c)
	r := result(t, rep, KarpenterRestore)
	if r.Waits[0] != sec(60) || r.WarmStarts != 0 || r.Lost != sec(360) {
		t.Errorf("karpenter + restore, cold when waiting: %+v", r)
	}
	// A node nobody waits for still restores: warmpool's floor node requested ahead of the job.
	c.Start = DefaultStart.Add(-10 * time.Minute)
	c.Policy.WarmWindows = nil
	c.Policy.WarmMinimum = 1
	rep = run(t, []Job{job(600, 100)}, c)
	if w := result(t, rep, Warmpool); w.Waits[0] != 0 || w.WarmStarts != 1 {
		t.Errorf("warmpool floor node: %+v", w)
	}
}

func TestZeroJobsAndOnePool(t *testing.T) {
	// No jobs: every strategy reports zeros (no division by zero), and a static or warm pool
	// with no horizon costs nothing. One pool is the common case: its name is the only one.
	rep := run(t, nil, DefaultConfig())
	if len(rep.Pools) != 0 || len(rep.Results) != len(Strategies()) {
		t.Fatalf("report on no jobs: pools %v, %d results", rep.Pools, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Jobs != 0 || r.Lost != 0 || r.WaitMean != 0 || r.ColdShare() != 0 || r.BootWaitShare() != 0 || r.NodeTime != 0 {
			t.Errorf("%s on no jobs: %+v", r.Strategy, r)
		}
	}
	if got := table(t, rep); got == "" {
		t.Error("no table for an empty trace")
	}
	rep = run(t, []Job{job(0, 60), job(30, 60)}, DefaultConfig())
	if len(rep.Pools) != 1 || rep.Pools[0] != "p" {
		t.Errorf("pools %v", rep.Pools)
	}
}

func TestCacheConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.ColdCost, c.Restore, c.Save = -1, -1, -1
	err := c.Validate()
	for _, want := range []string{"cold cost", "restore", "save"} {
		if err == nil || !contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub))
}
