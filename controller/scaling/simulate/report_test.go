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

var shippedTraces = []string{"weekday.csv", "spiky.csv"}

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
	// Two jobs at 0, one at 400. Karpenter alone: two nodes, the third job reuses one before it is
	// consolidated (465 and 805 s of node time). Static: demand is 2 for 300 s of the hour, over
	// 5%, so N=2. warmpool: its warm node runs the first job, the second waits for a node, which
	// stabilization holds until 590, so the third job starts at once; the second node is
	// consolidated once the pool is idle (700) and a placeholder holds the first.
	c := DefaultConfig()
	c.Horizon = time.Hour
	rep := run(t, []Job{job(0, 300), job(0, 300), job(400, 300)}, c)
	want := `3 jobs in 1 pool(s), billed over 1h0m0s; boot 1m0s, 1 job(s)/node, WhenEmpty consolidateAfter 1m30s + 15s validation, max nodes none, policy every 10s
POLICY               JOBS  WAIT P50 (s)  WAIT P95 (s)  WAIT MAX (s)  NODE-HOURS  WARM REUSE
karpenter alone      3     60            60            60            0.4         33.3%
static N=2           3     0             0             0             2.0         33.3%
warmpool warm-min 1  3     0             60            60            1.2         33.3%
`
	if got := table(t, rep); got != want {
		t.Errorf("table =\n%s\nwant\n%s", got, want)
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
// runs, the static pool is sized at the p95 of demand, and warmpool's p95 wait is never worse
// than Karpenter alone's (warmpool only adds nodes ahead of demand, and holds them, on top of
// the same pending-pod provisioning).
func TestShippedTraces(t *testing.T) {
	for _, name := range shippedTraces {
		t.Run(name, func(t *testing.T) {
			jobs := readShipped(t, name)
			c := DefaultConfig()
			rep := run(t, jobs, c)
			for _, r := range rep.Results {
				if r.Jobs != len(jobs) || r.Starts != len(jobs) {
					t.Errorf("%s: %d jobs, %d started, want %d", r.Strategy, r.Jobs, r.Starts, len(jobs))
				}
				if r.NodeTime <= 0 || r.WaitMax > c.Boot {
					// No limit and no batching: nobody waits longer than one boot.
					t.Errorf("%s: node time %s, max wait %s", r.Strategy, r.NodeTime, r.WaitMax)
				}
			}
			if want := DemandP95(jobs, c.JobsPerNode, rep.Horizon); rep.StaticNodes[0] != want || want == 0 {
				t.Errorf("static pool %v, want the p95 of demand %d", rep.StaticNodes, want)
			}
			k, w := result(t, rep, KarpenterAlone), result(t, rep, Warmpool)
			if w.WaitP95 > k.WaitP95 {
				t.Errorf("warmpool p95 wait %s is worse than Karpenter alone's %s", w.WaitP95, k.WaitP95)
			}
		})
	}
}
