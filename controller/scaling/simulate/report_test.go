package simulate

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var shippedTraces = []string{"weekday.csv", "spiky.csv", "fanout.csv"}

func readShipped(tb testing.TB, name string) []Job {
	tb.Helper()
	f, err := os.Open(filepath.Join("..", "..", "..", "deploy", "traces", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	jobs, err := ReadTrace(f)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return jobs
}

func table(t *testing.T, rep Report) string {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestWriteTable(t *testing.T) {
	// Two jobs at 0, one at 400, in the hand-checked model (sim_test.go) with a cold start
	// costing 100 s. Karpenter alone: two cold nodes, whose jobs run 60-460 with the cold cost;
	// the third job finds both busy, Karpenter launches a node for it (Ready at 460), and it
	// takes the first node freed at 460 instead, warm: waits 60, 60, 60, two of three waited for
	// a boot and ran cold, lost 180 s + 200 s. Karpenter with the restore: the first two jobs
	// start warm, end at 360, and the third reuses a node at once. Static: demand is 2 for 300 s of the hour, over 5%, so N=2, both warm from
	// the start. warmpool: its warm node runs the first job, the second waits for a node
	// (restored, so warm), which stabilization holds, so the third job starts at once.
	c := mechanicsConfig()
	c.Horizon = time.Hour
	c.ColdCost = 100 * time.Second
	rep := run(t, []Job{job(0, 300), job(0, 300), job(400, 300)}, c)
	want := `3 jobs in 1 pool(s), billed over 1h0m0s; boot 1m0s, 1 job(s)/node, WhenEmpty consolidateAfter 1m30s + 15s validation, max nodes none, policy every 10s
cache: a cold start costs 1m40s, a restore 0s after boot, a save 0s
POLICY               JOBS  WAIT P50 (s)  WAIT P95 (s)  WAIT MAX (s)  WAIT MEAN (s)  WAITED FOR BOOT  COLD CACHE  NODE-HOURS  JOB-HOURS LOST
karpenter alone      3     60            60            60            60             66.7%            66.7%       0.4         0.1
karpenter + restore  3     60            60            60            40             66.7%            0.0%        0.4         0.0
static N=2           3     0             0             0             0              0.0%             0.0%        2.0         0.0
warmpool warm-min 1  3     0             60            60            20             33.3%            0.0%        1.2         0.0
`
	if got := table(t, rep); got != want {
		t.Errorf("table =\n%s\nwant\n%s", got, want)
	}
	k := result(t, rep, KarpenterAlone)
	if k.Lost != 380*time.Second || k.WaitMean != 60*time.Second || k.BootWaits != 2 || k.ColdShare() != 2.0/3 {
		t.Errorf("karpenter alone: lost %s, mean wait %s, %d boot waits, cold share %v", k.Lost, k.WaitMean, k.BootWaits, k.ColdShare())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig is invalid: %v", err)
	}
	c := Config{Boot: -1, JobsPerNode: 0, ConsolidateAfter: -1, ValidationDelay: -1, StaticNodes: -2, MaxNodes: -1, Horizon: -1}
	err := c.Validate()
	if err == nil {
		t.Fatal("zero-ish Config validated")
	}
	for _, want := range []string{"boot", "jobs per node", "consolidateAfter", "validation delay", "static nodes", "max nodes", "interval", "horizon", "start time"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	c = DefaultConfig()
	c.Policy.WarmMinimum = -1
	if _, err := Run([]Job{job(0, 1)}, c); err == nil || !strings.Contains(err.Error(), "warmpool policy") {
		t.Errorf("Run with a bad policy: %v, want a warmpool policy error", err)
	}
}

func TestDeterministic(t *testing.T) {
	for _, name := range shippedTraces {
		t.Run(name, func(t *testing.T) {
			first := run(t, readShipped(t, name), DefaultConfig())
			second := run(t, readShipped(t, name), DefaultConfig())
			if !reflect.DeepEqual(first, second) {
				t.Error("two runs of the same trace differ")
			}
			if a, b := table(t, first), table(t, second); a != b {
				t.Errorf("tables differ:\n%s\n%s", a, b)
			}
		})
	}
}

// TestShippedTraces guards properties of the model on the traces `make bench` prints: every job
// runs, the static pool is sized at the p95 of demand, nobody waits longer than a boot (plus the
// restore, for the strategies that restore: there is no node limit and no batching), the cache
// restore cuts the job time lost, and without the restore's delay warmpool's p95 wait is never
// worse than Karpenter alone's (warmpool only adds nodes ahead of demand, and holds them, on top
// of the same pending-pod provisioning).
func TestShippedTraces(t *testing.T) {
	for _, name := range shippedTraces {
		t.Run(name, func(t *testing.T) {
			jobs := readShipped(t, name)
			c := DefaultConfig()
			rep := run(t, jobs, c)
			for _, r := range rep.Results {
				limit := c.Boot
				if r.Strategy == KarpenterRestore || r.Strategy == Warmpool {
					limit += c.Restore
				}
				if r.Jobs != len(jobs) || r.Starts != len(jobs) {
					t.Errorf("%s: %d jobs, %d started, want %d", r.Strategy, r.Jobs, r.Starts, len(jobs))
				}
				if r.NodeTime <= 0 || r.WaitMax > limit {
					t.Errorf("%s: node time %s, max wait %s (limit %s)", r.Strategy, r.NodeTime, r.WaitMax, limit)
				}
			}
			if want := DemandP95(jobs, c.JobsPerNode, rep.Horizon); rep.StaticNodes[0] != want || want == 0 {
				t.Errorf("static pool %v, want the p95 of demand %d", rep.StaticNodes, want)
			}
			k := result(t, rep, KarpenterAlone)
			for _, s := range []Strategy{KarpenterRestore, Warmpool} {
				// A node a job already waits for starts cold (whenJobsWait cold); the others restore.
				if r := result(t, rep, s); r.Lost >= k.Lost || r.WarmStarts == 0 {
					t.Errorf("%s: lost %s (Karpenter alone %s), %d of %d starts warm", s, r.Lost, k.Lost, r.WarmStarts, r.Starts)
				}
			}
			c.Restore = 0
			rep = run(t, jobs, c)
			k, w := result(t, rep, KarpenterAlone), result(t, rep, Warmpool)
			if w.WaitP95 > k.WaitP95 {
				t.Errorf("instant restores: warmpool p95 wait %s is worse than Karpenter alone's %s", w.WaitP95, k.WaitP95)
			}
		})
	}
}
