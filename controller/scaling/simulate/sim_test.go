package simulate

import (
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling/policy"
)

func sec(n int) time.Duration { return time.Duration(n) * time.Second }

// mechanicsConfig is the model these tests work out by hand: DefaultConfig without the cache's
// costs (no cold cost, instant restores and saves) and with warmpool's scaling before spare
// headroom (warm minimum 1, no spare, the block budget), so each test isolates Karpenter's
// provisioning and consolidation and warmpool's placeholders and budget. With instant restores
// every node of the restoring strategies is warm. cache_test.go covers the cache model and
// defaults_test.go the defaults.
func mechanicsConfig() Config {
	c := DefaultConfig()
	c.ColdCost, c.Restore, c.Save = 0, 0, 0
	c.Policy = policy.Config{WarmMinimum: 1}
	c.SurplusBudget = false
	return c
}

// job is a job of pool "p" arriving at the given second and running for d seconds.
func job(at, d int) Job { return Job{Arrival: sec(at), Duration: sec(d), Pool: "p"} }

func secs(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = sec(n)
	}
	return out
}

func run(t *testing.T, jobs []Job, c Config) Report {
	t.Helper()
	rep, err := Run(jobs, c)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func result(t *testing.T, rep Report, s Strategy) Result {
	t.Helper()
	r, ok := rep.Result(s)
	if !ok {
		t.Fatalf("no result for %s", s)
	}
	return r
}

// expect is what one strategy should produce on a hand-written trace; zero fields are not checked
// except Waits, which always is.
type expect struct {
	waits      []time.Duration
	nodeTime   time.Duration
	warmStarts int
	launched   int
}

func (e expect) check(t *testing.T, rep Report, s Strategy) {
	t.Helper()
	r := result(t, rep, s)
	if !reflect.DeepEqual(r.Waits, e.waits) {
		t.Errorf("%s: waits %v, want %v", s, r.Waits, e.waits)
	}
	if e.nodeTime != 0 && r.NodeTime != e.nodeTime {
		t.Errorf("%s: node time %s, want %s", s, r.NodeTime, e.nodeTime)
	}
	if r.WarmStarts != e.warmStarts {
		t.Errorf("%s: warm starts %d, want %d", s, r.WarmStarts, e.warmStarts)
	}
	if e.launched != 0 && r.NodesLaunched != e.launched {
		t.Errorf("%s: nodes launched %d, want %d", s, r.NodesLaunched, e.launched)
	}
	if r.Starts != len(e.waits) || r.Jobs != len(e.waits) {
		t.Errorf("%s: %d starts of %d jobs, want %d", s, r.Starts, r.Jobs, len(e.waits))
	}
}

func TestOneJobAtZero(t *testing.T) {
	// Boot 60 s: Karpenter alone makes the job wait for a node; a node that is already up
	// (static pool, warmpool's warm minimum) runs it at once.
	jobs := []Job{job(0, 300)}
	tests := []struct {
		name            string
		static, warmMin int
		karpenter       expect
		staticPool      expect
		warmpool        expect
	}{{
		name: "static auto, warm-min 1", static: AutoStatic, warmMin: 1,
		// The default horizon is the job's end (300 s); a strategy whose job ended later pays
		// until then.
		karpenter: expect{waits: secs(60), nodeTime: sec(360), launched: 1},
		// The static node and warmpool's warm node ran before the trace: warm.
		staticPool: expect{waits: secs(0), nodeTime: sec(300), warmStarts: 1, launched: 1},
		warmpool:   expect{waits: secs(0), nodeTime: sec(300), warmStarts: 1, launched: 1},
	}, {
		name: "no warm nodes", static: 0, warmMin: 0,
		karpenter:  expect{waits: secs(60), nodeTime: sec(360), launched: 1},
		staticPool: expect{waits: secs(60), nodeTime: sec(360), launched: 1},
		// The first evaluation (t=0) sees the queued job and requests the node Karpenter would,
		// which restores the pool's cache (instantly here): the job starts warm.
		warmpool: expect{waits: secs(60), nodeTime: sec(360), warmStarts: 1, launched: 1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mechanicsConfig()
			c.StaticNodes, c.Policy.WarmMinimum = tt.static, tt.warmMin
			rep := run(t, jobs, c)
			tt.karpenter.check(t, rep, KarpenterAlone)
			tt.staticPool.check(t, rep, StaticPool)
			tt.warmpool.check(t, rep, Warmpool)
		})
	}
}

func TestNodeTimeAccounting(t *testing.T) {
	// One 300 s job at t=0, billed over a one-hour horizon.
	c := mechanicsConfig()
	c.Horizon = time.Hour
	c.StaticNodes = 1
	c.Policy.WarmMinimum = 0
	rep := run(t, []Job{job(0, 300)}, c)

	// Requested at 0, Ready at 60, runs 60-360, empty for consolidateAfter (90 s), picked at
	// 450 and deleted after Karpenter's 15 s validation: 465.
	expect{waits: secs(60), nodeTime: sec(465), launched: 1}.check(t, rep, KarpenterAlone)
	// The static node is billed for the whole horizon.
	expect{waits: secs(0), nodeTime: time.Hour, launched: 1, warmStarts: 1}.check(t, rep, StaticPool)
	// warmpool requests the node at 0 (a placeholder); the job runs 60-360, then a placeholder
	// holds the node again. The last evaluation that saw the job was at 350, so the 5 min
	// stabilization keeps desired at 1 until 650; only then does the placeholder go, and Karpenter
	// consolidates the node 90 + 15 s later: 755.
	expect{waits: secs(60), nodeTime: sec(755), launched: 1, warmStarts: 1}.check(t, rep, Warmpool)

	if got := result(t, rep, StaticPool).NodeHours(); got != 1 {
		t.Errorf("NodeHours = %v, want 1", got)
	}

	// With a warm minimum of 1 warmpool's node exists from t=0 and stays for the horizon.
	c.Policy.WarmMinimum = 1
	rep = run(t, []Job{job(0, 300)}, c)
	expect{waits: secs(0), nodeTime: time.Hour, launched: 1, warmStarts: 1}.check(t, rep, Warmpool)
}

func TestConsolidationAndStabilizationKeepNodesWarm(t *testing.T) {
	// Three 100 s jobs: the second arrives 40 s after the first node emptied (inside
	// consolidateAfter), the third 200 s after the second ended (outside it).
	jobs := []Job{job(0, 100), job(200, 100), job(500, 100)}
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 0
	rep := run(t, jobs, c)

	// Karpenter alone: node 1 runs 60-160 and 200-300 (the second job resets the countdown), is
	// removed at 300+90+15 = 405; node 2 is requested at 500 and billed until the last job ends
	// at 660.
	expect{waits: secs(60, 0, 60), nodeTime: sec(405 + 160), warmStarts: 1, launched: 2}.check(t, rep, KarpenterAlone)
	// warmpool holds the node for 5 min after the last evaluation that needed it, so the third
	// job finds it warm too; it is billed from 0 to the end of the last job (600).
	expect{waits: secs(60, 0, 0), nodeTime: sec(600), warmStarts: 3, launched: 1}.check(t, rep, Warmpool)
}

func TestFreedSlotBeatsBootingNode(t *testing.T) {
	// A static pool of one. The second job arrives while the first runs: Karpenter requests a
	// node at 50 (Ready at 110), but the static node frees up at 100 and the waiting job takes it.
	c := mechanicsConfig()
	c.StaticNodes = 1
	rep := run(t, []Job{job(0, 100), job(50, 100)}, c)
	// The new node is Ready and empty at 110; billing stops when the last job ends at 200,
	// before Karpenter would consolidate it (110+90+15).
	expect{waits: secs(0, 50), nodeTime: sec(200 + 150), warmStarts: 2, launched: 2}.check(t, rep, StaticPool)
}

func TestJobsQueueFirstComeFirstServed(t *testing.T) {
	// One node at most: jobs run one after the other in arrival order.
	c := mechanicsConfig()
	c.MaxNodes = 1
	c.Policy.WarmMinimum = 0
	rep := run(t, []Job{job(0, 100), job(1, 100), job(2, 100)}, c)
	want := expect{waits: secs(60, 159, 258), warmStarts: 2, launched: 1}
	want.check(t, rep, KarpenterAlone)
	// warmpool's node restored the pool's cache: every start is warm.
	want.warmStarts = 3
	want.check(t, rep, Warmpool)
}

func TestJobsPerNodeBinPacks(t *testing.T) {
	// Two jobs per node: three jobs at 0 need two nodes, and the fourth, arriving once all are
	// running, finds the free slot on the second node.
	c := mechanicsConfig()
	c.JobsPerNode = 2
	c.Policy.WarmMinimum = 0
	rep := run(t, []Job{job(0, 100), job(0, 100), job(0, 100), job(70, 100)}, c)
	expect{waits: secs(60, 60, 60, 0), launched: 2}.check(t, rep, KarpenterAlone)
	if got := DemandP95([]Job{job(0, 100), job(0, 100), job(0, 100)}, 2, sec(100)); got != 2 {
		t.Errorf("DemandP95 = %d, want 2", got)
	}
}

func TestWarmpoolNeverRemovesBusyNodes(t *testing.T) {
	// Two jobs per node, scale-down without stabilization. Nodes 0 and 1 each keep one long job
	// after the short ones end at 160: the queue then asks for one node, but neither is empty,
	// so both stay until the long jobs end at 1060.
	c := mechanicsConfig()
	c.JobsPerNode = 2
	c.Policy.WarmMinimum = 0
	c.Policy.ScaleDownStabilization = time.Nanosecond
	jobs := []Job{job(0, 1000), job(0, 100), job(0, 100), job(0, 1000)}
	rep := run(t, jobs, c)
	expect{waits: secs(60, 60, 60, 60), nodeTime: 2 * sec(1060), launched: 2, warmStarts: 4}.check(t, rep, Warmpool)
}

func TestWarmpoolScaleDownIsKarpenterConsolidation(t *testing.T) {
	// Ten jobs at once on a warm minimum of 2, no stabilization. The two warm nodes run the first
	// two jobs (0-100); placeholders make Karpenter launch eight more at 0 (Ready 60, jobs
	// 60-160). warmpool never removes a node itself: at 100 the desired count falls to 8, but
	// nodes 0 and 1 are empty while eight jobs still run, and the busy pool's budget blocks
	// consolidation. At 160 the pool is idle, desired is the floor: placeholders hold nodes 0 and
	// 1, and Karpenter removes the other eight once they have been empty for consolidateAfter,
	// after its validation: 160+90+15 = 265.
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 2
	c.Policy.ScaleDownStabilization = time.Nanosecond
	c.Horizon = sec(1000)
	var jobs []Job
	for range 10 {
		jobs = append(jobs, job(0, 100))
	}
	rep := run(t, jobs, c)
	r := result(t, rep, Warmpool)
	if want := 2*sec(1000) + 8*sec(265); r.NodeTime != want {
		t.Errorf("node time %s, want %s", r.NodeTime, want)
	}
	if r.PeakNodes != 10 || r.NodesLaunched != 10 {
		t.Errorf("peak %d, launched %d, want 10 and 10", r.PeakNodes, r.NodesLaunched)
	}

	// With consolidateAfter 0 and no validation delay the same nodes go the moment the budget
	// lets them: at 160.
	c.ConsolidateAfter, c.ValidationDelay = 0, 0
	r = result(t, run(t, jobs, c), Warmpool)
	if want := 2*sec(1000) + 8*sec(160); r.NodeTime != want {
		t.Errorf("consolidateAfter 0: node time %s, want %s", r.NodeTime, want)
	}
}

func TestBusyBudgetBlocksConsolidation(t *testing.T) {
	// A short and a long job at 0, no warm minimum, no stabilization. The short job's node is
	// empty from 160, and desired falls to 1 at once, but a job still runs until 1060: the
	// budget blocks Empty consolidation. At 1060 the pool is idle; the node, long past its
	// consolidateAfter, is picked and deleted after validation at 1075. The other node was
	// emptied at 1060 and goes at 1165. Karpenter alone has no such budget: 265 and 1165.
	c := mechanicsConfig()
	c.Horizon = sec(2000)
	c.Policy.WarmMinimum = 0
	c.Policy.ScaleDownStabilization = time.Nanosecond
	jobs := []Job{job(0, 100), job(0, 1000)}
	rep := run(t, jobs, c)
	expect{waits: secs(60, 60), nodeTime: sec(1075) + sec(1165), launched: 2, warmStarts: 2}.check(t, rep, Warmpool)
	expect{waits: secs(60, 60), nodeTime: sec(265) + sec(1165), launched: 2}.check(t, rep, KarpenterAlone)
}

func TestWarmWindowBlocksConsolidationAndCancelsCommands(t *testing.T) {
	// A warm window of minimum 0 raises no floor, but while it is open the pool counts as busy
	// and the budget blocks consolidation. The trace starts at 23:57:10, so the window
	// (00:00 daily, 1 h) opens at 170 s. The job runs 60-70 on the node requested at 0; desired
	// falls to 0 at 70, the node is picked at 160, and the window opens during Karpenter's 15 s
	// validation: the command is dropped. The node stays until the window closes at 3770, then
	// goes 15 s later. Without the window it would go at 175.
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 0
	c.Policy.ScaleDownStabilization = time.Nanosecond
	c.Start = DefaultStart.Add(-2*time.Minute - 50*time.Second)
	c.Horizon = 2 * time.Hour
	c.Policy.WarmWindows = []config.WarmWindow{{Schedule: "0 0 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 0}}
	jobs := []Job{job(0, 10)}
	expect{waits: secs(60), nodeTime: sec(3785), launched: 1, warmStarts: 1}.check(t, run(t, jobs, c), Warmpool)

	c.Policy.WarmWindows = nil
	expect{waits: secs(60), nodeTime: sec(175), launched: 1, warmStarts: 1}.check(t, run(t, jobs, c), Warmpool)
}

func TestValidationDropsANodeThatGotAJob(t *testing.T) {
	// Karpenter alone: the node empties at 160 and is picked at 250. A job arriving at 255,
	// during the validation, lands on it: the command is dropped, the job starts warm at once,
	// and no second node is launched. The node's next countdown starts when that job ends: it
	// goes at 355+90+15 = 460.
	c := mechanicsConfig()
	c.Horizon = sec(1000)
	rep := run(t, []Job{job(0, 100), job(255, 100)}, c)
	expect{waits: secs(60, 0), nodeTime: sec(460), warmStarts: 1, launched: 1}.check(t, rep, KarpenterAlone)

	// Without validation the node is gone at 250 and the job waits for a new one.
	c.ValidationDelay = 0
	rep = run(t, []Job{job(0, 100), job(255, 100)}, c)
	expect{waits: secs(60, 60), warmStarts: 0, launched: 2}.check(t, rep, KarpenterAlone)
}

func TestStaticNodesAreNeverConsolidated(t *testing.T) {
	// Two static nodes, one job: both are billed for the whole horizon, the idle one included.
	c := mechanicsConfig()
	c.StaticNodes = 2
	c.Horizon = time.Hour
	rep := run(t, []Job{job(0, 100)}, c)
	expect{waits: secs(0), nodeTime: 2 * time.Hour, launched: 2, warmStarts: 1}.check(t, rep, StaticPool)
}

func TestJobsAvoidPreemptingPlaceholders(t *testing.T) {
	// Warm minimum 1, no stabilization. Node 0 (warm) runs the first job 0-100; the second job's
	// placeholder makes Karpenter launch node 1 (job 60-160). At 160 the pool is idle and the
	// floor's placeholder holds node 0; node 1 is empty and counting down. The job at 200 finds
	// both Ready and takes node 1, which it can use without preempting anything (node 1 is warm
	// too). With node 1 busy the headroom falls to 0 and node 0's placeholder goes; at 250 it
	// comes back on node 0, the oldest, and node 1 goes at 250+90+15 = 355. Had the job
	// preempted node 0's placeholder, node 1 would have gone at 265.
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 1
	c.Policy.ScaleDownStabilization = time.Nanosecond
	c.Horizon = sec(1000)
	rep := run(t, []Job{job(0, 100), job(0, 100), job(200, 50)}, c)
	expect{waits: secs(0, 60, 0), nodeTime: sec(1000) + sec(355), warmStarts: 3, launched: 2}.check(t, rep, Warmpool)
}

func TestPlaceholdersGoNewestFirst(t *testing.T) {
	// Warm minimum 1, and a window raising it to 2 for the first 200 s. Nodes 0 and 1 start
	// held; the job at 0 preempts node 0's placeholder, which comes back at 100, newer than node
	// 1's. When the window closes at 200 one placeholder goes, the newest as a ReplicaSet picks
	// it: node 0's, although node 0 is the one with a warm cache. Karpenter removes node 0 at
	// 200+90+15 = 305, and the job at 400 starts on node 1, warm only because node 1 restored
	// the pool's cache (without a restore it would start cold).
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 1
	c.Policy.ScaleDownStabilization = time.Nanosecond
	c.Policy.WarmWindows = []config.WarmWindow{{Schedule: "0 0 * * *", Duration: metav1.Duration{Duration: 200 * time.Second}, Minimum: 2}}
	c.Horizon = sec(1000)
	rep := run(t, []Job{job(0, 100), job(400, 10)}, c)
	expect{waits: secs(0, 0), nodeTime: sec(305) + sec(1000), warmStarts: 2, launched: 2}.check(t, rep, Warmpool)
}

func TestMaxNodesCapsEveryStrategy(t *testing.T) {
	c := mechanicsConfig()
	c.MaxNodes = 2
	c.StaticNodes = 5        // capped by MaxNodes
	c.Policy.WarmMinimum = 5 // likewise
	var jobs []Job
	for range 6 {
		jobs = append(jobs, job(0, 100))
	}
	rep := run(t, jobs, c)
	for _, s := range Strategies() {
		if r := result(t, rep, s); r.PeakNodes > 2 {
			t.Errorf("%s: peak %d nodes, over the limit of 2", s, r.PeakNodes)
		}
	}
	if rep.StaticNodes[0] != 2 {
		t.Errorf("static pool of %d nodes, want it capped at 2", rep.StaticNodes[0])
	}
	// warmpool starts with the capped warm floor (2 nodes Ready at 0): 0, 0, then 100, 100, 200, 200.
	expect{waits: secs(0, 0, 100, 100, 200, 200), warmStarts: 6, launched: 2}.check(t, rep, Warmpool)
}

func TestPoolsAreSimulatedIndependently(t *testing.T) {
	// Pool "b" is listed first and arrives first; waits come back in arrival order.
	jobs := []Job{
		{Arrival: sec(0), Duration: sec(300), Pool: "b"},
		{Arrival: sec(10), Duration: sec(300), Pool: "a"},
	}
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 0
	rep := run(t, jobs, c)
	if !reflect.DeepEqual(rep.Pools, []string{"a", "b"}) || !reflect.DeepEqual(rep.StaticNodes, []int{1, 1}) {
		t.Fatalf("pools %v with static %v, want [a b] with [1 1]", rep.Pools, rep.StaticNodes)
	}
	// A node of pool b cannot run a job of pool a: each pool gets its own.
	expect{waits: secs(60, 60), nodeTime: sec(360) + sec(360), launched: 2}.check(t, rep, KarpenterAlone)
	expect{waits: secs(0, 0), launched: 2, warmStarts: 2}.check(t, rep, StaticPool)
	if r := result(t, rep, KarpenterAlone); r.PeakNodes != 2 {
		t.Errorf("peak nodes %d, want the sum over pools, 2", r.PeakNodes)
	}
}

func TestWarmWindowsUseStart(t *testing.T) {
	// A window 09:00-10:00 on weekdays, with the trace starting Monday 08:59:00: warmpool starts
	// with no nodes and requests one for the first job; the evaluation at 60 s (09:00) opens the
	// window and requests two more, Ready at 120, so the three jobs at 130 wait for nothing.
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 0
	c.Start = DefaultStart.Add(8*time.Hour + 59*time.Minute)
	c.Policy.WarmWindows = []config.WarmWindow{{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 3}}
	rep := run(t, []Job{job(0, 10), job(130, 10), job(130, 10), job(130, 10)}, c)
	expect{waits: secs(60, 0, 0, 0), warmStarts: 4, launched: 3}.check(t, rep, Warmpool)
}

func TestDemandP95(t *testing.T) {
	tests := []struct {
		name        string
		jobs        []Job
		jobsPerNode int
		horizon     time.Duration
		want        int
	}{
		{"no jobs", nil, 1, sec(100), 0},
		{"no horizon", []Job{job(0, 10)}, 1, 0, 0},
		{"one job all along", []Job{job(0, 100)}, 1, sec(100), 1},
		// Two concurrent jobs for 40 s of 1000: 96% of the time one node is enough.
		{"short peak", []Job{job(0, 1000), job(0, 40)}, 1, sec(1000), 1},
		// ... for 60 s of 1000 it is not.
		{"longer peak", []Job{job(0, 1000), job(0, 60)}, 1, sec(1000), 2},
		{"two per node", []Job{job(0, 1000), job(0, 60)}, 2, sec(1000), 1},
		// Idle time before, between and after jobs counts as zero demand.
		{"mostly idle", []Job{job(100, 10), job(500, 10)}, 1, sec(1000), 0},
		// Jobs past the horizon are clipped to it.
		{"clipped", []Job{job(0, 3), job(0, 5000)}, 1, sec(100), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DemandP95(tt.jobs, tt.jobsPerNode, tt.horizon); got != tt.want {
				t.Errorf("DemandP95 = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var twenty []time.Duration
	for i := 1; i <= 20; i++ {
		twenty = append(twenty, sec(i))
	}
	tests := []struct {
		values []time.Duration
		p      int
		want   time.Duration
	}{
		{nil, 95, 0},
		{secs(7), 50, sec(7)},
		{secs(7), 95, sec(7)},
		{twenty, 50, sec(10)},
		{twenty, 95, sec(19)}, // exactly the 19th: no floating-point 0.95*20 = 19.000000000000004
		{twenty, 100, sec(20)},
		{secs(1, 2, 3), 0, sec(1)},
	}
	for _, tt := range tests {
		if got := percentile(tt.values, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %d) = %s, want %s", tt.values, tt.p, got, tt.want)
		}
	}
}

func TestRunDoesNotModifyJobs(t *testing.T) {
	jobs := []Job{job(50, 10), job(0, 10)}
	before := append([]Job(nil), jobs...)
	run(t, jobs, mechanicsConfig())
	if !reflect.DeepEqual(jobs, before) {
		t.Errorf("Run reordered its input: %v", jobs)
	}
}

func TestRunEmptyTrace(t *testing.T) {
	rep := run(t, nil, mechanicsConfig())
	for _, r := range rep.Results {
		if r.Jobs != 0 || r.NodeTime != 0 || r.WaitMax != 0 {
			t.Errorf("%s on no jobs: %+v", r.Strategy, r)
		}
	}
}

func TestPendingPlaceholdersGoFirst(t *testing.T) {
	// Warm minimum 1; a window raises it to 2 from 10 s to 50 s (the trace starts at 23:59:50).
	// The job at 0 runs on node 0; at 10 the window's placeholder makes Karpenter launch node 1
	// (Ready at 70). At 20 node 0 is free and a placeholder holds it again, newer than node 1's.
	// When the window closes at 50, the ReplicaSet deletes the pending placeholder first, the
	// one waiting for node 1: node 1 comes up empty and goes at 70+90+15 = 175, node 0 keeps its
	// placeholder and its warm cache for the job at 500.
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 1
	c.Policy.ScaleDownStabilization = time.Nanosecond
	c.Start = DefaultStart.Add(-10 * time.Second)
	c.Policy.WarmWindows = []config.WarmWindow{{Schedule: "0 0 * * *", Duration: metav1.Duration{Duration: 40 * time.Second}, Minimum: 2}}
	c.Horizon = sec(1000)
	rep := run(t, []Job{job(0, 20), job(500, 10)}, c)
	expect{waits: secs(0, 0), nodeTime: sec(1000) + sec(175-10), warmStarts: 2, launched: 2}.check(t, rep, Warmpool)
}

// TestSurplusBudget: one long job keeps the pool busy for the whole trace. With the default
// block budget the two nodes a burst left behind stay until the long job ends (3660 s); with
// the surplus budget (nodes = 3 - desired 1 = 2) Karpenter removes them once empty for
// consolidateAfter plus its validation (360 + 90 + 15 = 465 s), while the long job's node,
// the one the policy still wants, stays. Waits are the same.
func TestSurplusBudget(t *testing.T) {
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 0
	c.Policy.ScaleDownStabilization = time.Nanosecond
	jobs := []Job{job(0, 3600), job(0, 300), job(0, 300)}
	expect{waits: secs(60, 60, 60), nodeTime: 3 * sec(3660), launched: 3, warmStarts: 3}.check(t, run(t, jobs, c), Warmpool)

	c.SurplusBudget = true
	rep := run(t, jobs, c)
	expect{waits: secs(60, 60, 60), nodeTime: 2*sec(465) + sec(3660), launched: 3, warmStarts: 3}.check(t, rep, Warmpool)
	if got := table(t, rep); !strings.Contains(got, "warmpool warm-min 0 surplus budget  ") {
		t.Errorf("table does not name the surplus budget:\n%s", got)
	}
}

// TestSurplusBudgetKeepsDesired: the surplus budget never lets Karpenter take a node the policy
// still wants. With the default 5 m stabilization desired stays 3 after the burst (its last
// recommendation of 3 was at 350 s) until 650 s, so the surplus stays 0 and the two empty
// nodes keep their placeholders; at 650 desired falls to 1, the placeholders go, and the nodes
// are removed once empty for consolidateAfter plus validation: 650 + 90 + 15 = 755 s.
func TestSurplusBudgetKeepsDesired(t *testing.T) {
	c := mechanicsConfig()
	c.Policy.WarmMinimum = 0
	c.SurplusBudget = true
	jobs := []Job{job(0, 3600), job(0, 300), job(0, 300)}
	expect{waits: secs(60, 60, 60), nodeTime: 2*sec(755) + sec(3660), launched: 3, warmStarts: 3}.check(t, run(t, jobs, c), Warmpool)
}
