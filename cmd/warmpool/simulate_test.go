package main

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/controller/scaling/simulate"
)

// runSimulate executes the simulate command alone (it is not necessarily wired into the root
// command yet) and returns its stdout.
func runSimulate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := simulateCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return out.String(), err
}

// mechanics are the flags of the model before the cache and the spare: no cold cost, instant
// restores and saves, no spare, the block budget, a warm minimum of 1.
var mechanics = []string{"--cold-cost", "0s", "--restore", "0s", "--save", "0s", "--spare", "off", "--burst-hold-percent", "0", "--busy-budget", "block", "--warm-min", "1"}

// tableRow returns the cells of the table row whose label starts with label (the label's own words
// excluded), or nil.
func tableRow(out, label string) []string {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, label); ok && (rest == "" || rest[0] == ' ') {
			cells := strings.Fields(rest)
			// Skip the rest of a multi-word label: cells start at the job count.
			for len(cells) > 0 && !isNumber(cells[0]) {
				cells = cells[1:]
			}
			return cells
		}
	}
	return nil
}

func isNumber(s string) bool {
	return strings.Trim(s, "0123456789.%") == "" && s != ""
}

// wantRow checks the first cells of a row: jobs, wait p50, p95, max, mean, waited for boot,
// cold cache, node-hours, job-hours lost.
func wantRow(t *testing.T, out, label string, cells ...string) {
	t.Helper()
	got := tableRow(out, label)
	if len(got) < len(cells) || !slices.Equal(got[:len(cells)], cells) {
		t.Errorf("row %q = %v, want it to start with %v\n%s", label, got, cells, out)
	}
}

func TestSimulateOneJob(t *testing.T) {
	trace := writeTemp(t, "one.csv", "arrival_seconds,duration_seconds,pool\n0,300,runners\n")
	out, err := runSimulate(t, "--trace", trace)
	if err != nil {
		t.Fatal(err)
	}
	// Karpenter alone waits one boot and runs cold (300 s + 300 s cold: lost 360 s); the static
	// node ran before the trace. With the restore, the job already waits for the node it boots,
	// so by default (--when-jobs-wait cold) that node skips its restore: the job waits a boot and
	// runs cold, as with Karpenter alone. warmpool's defaults keep no warm minimum and the
	// arrival rate is unknown at t=0, so its one job does the same.
	wantRow(t, out, "karpenter alone", "1", "60", "60", "60", "60", "100.0%", "100.0%")
	wantRow(t, out, "karpenter + restore", "1", "60", "60", "60", "60", "100.0%", "100.0%")
	wantRow(t, out, "static N=1", "1", "0", "0", "0", "0", "0.0%", "0.0%")
	wantRow(t, out, "warmpool warm-min 0 spare p90 max 14 hold 45% 25m surplus budget", "1", "60", "60", "60", "60", "100.0%", "100.0%")
	// With --when-jobs-wait restore it waits for the boot and the restore, and runs warm.
	out, err = runSimulate(t, "--trace", trace, "--when-jobs-wait", "restore")
	if err != nil {
		t.Fatal(err)
	}
	wantRow(t, out, "karpenter + restore", "1", "180", "180", "180", "180", "100.0%", "0.0%")
	wantRow(t, out, "warmpool warm-min 0 spare p90 max 14 hold 45% 25m surplus budget", "1", "180", "180", "180", "180", "100.0%", "0.0%")
	if !strings.HasPrefix(out, "trace "+trace+" (pools: runners)\n") {
		t.Errorf("output does not start by naming the trace:\n%s", out)
	}
	out, err = runSimulate(t, append([]string{"--trace", trace}, mechanics...)...)
	if err != nil {
		t.Fatal(err)
	}
	wantRow(t, out, "warmpool warm-min 1", "1", "0", "0", "0")
}

func TestSimulateDefaultsAreTheConfigs(t *testing.T) {
	c := simulate.DefaultConfig()
	if c.Policy.Spare != policy.SpareFromConfig(config.DefaultSpare()) || c.Policy.WarmMinimum != 0 ||
		c.SurplusBudget != (config.DefaultBusyBudget == config.BusyBudgetSurplus) {
		t.Fatalf("simulate.DefaultConfig %+v does not run the config's defaults", c.Policy)
	}
}

func TestSimulateFlags(t *testing.T) {
	trace := writeTemp(t, "two.csv", "arrival_seconds,duration_seconds,pool\n0,300,a\n0,300,a\n")
	out, err := runSimulate(t, append(append([]string{"--trace", trace}, mechanics...), "--boot", "30s", "--static", "0", "--jobs-per-node", "2",
		"--warm-min", "0", "--max", "4", "--consolidate-after", "0s", "--interval", "5s")...)
	if err != nil {
		t.Fatal(err)
	}
	if want := "boot 30s, 2 job(s)/node, WhenEmpty consolidateAfter 0s + 15s validation, max nodes 4, policy every 5s"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	wantRow(t, out, "karpenter alone", "2", "30", "30", "30")
	wantRow(t, out, "static N=0", "2", "30")
	wantRow(t, out, "warmpool warm-min 0", "2", "30")

	out, err = runSimulate(t, "--trace", trace, "--cold-cost", "1m", "--restore", "30s", "--save", "0s", "--spare", "constant", "--spare-constant", "3", "--burst-hold-percent", "0")
	if err != nil {
		t.Fatal(err)
	}
	if want := "cache: a cold start costs 1m0s, a restore 30s after boot, a save 0s"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	// Both jobs wait for nodes that boot while they wait: with --when-jobs-wait cold (the
	// default) those start cold, as Karpenter alone's do.
	wantRow(t, out, "karpenter + restore", "2", "60", "60", "60", "60", "100.0%", "100.0%")
	wantRow(t, out, "warmpool warm-min 0 spare 3 surplus budget", "2", "60")
}

func TestSimulateWarmWindow(t *testing.T) {
	// One job at 01:01:40 UTC on the default start (Monday 2 March 2026, 00:00 UTC), no warm
	// minimum: without a window it waits a boot. A window opening at 02:00 Europe/Berlin (01:00
	// UTC, CET) makes warmpool request a node at 3600 s, Ready before the job arrives; read in
	// UTC the same schedule would open an hour too late.
	trace := writeTemp(t, "one.csv", "arrival_seconds,duration_seconds,pool\n3700,60,runners\n")
	tests := []struct {
		name  string
		args  []string
		label string
		wait  string
	}{
		{"no window", nil, "warmpool warm-min 0", "60"},
		{"window in Berlin", []string{"--warm-window", `{schedule: "0 2 * * *", duration: 30m, minimum: 1, timeZone: Europe/Berlin}`}, "warmpool warm-min 0 +1 window(s)", "0"},
		{"window in UTC", []string{"--warm-window", `{schedule: "0 2 * * *", duration: 30m, minimum: 1}`}, "warmpool warm-min 0 +1 window(s)", "60"},
		// --start moves t=0 into the Berlin window: the node exists from the start.
		{"start", []string{"--start", "2026-03-02T01:00:00Z", "--warm-window", `{schedule: "0 2 * * *", duration: 2h, minimum: 1, timeZone: Europe/Berlin}`},
			"warmpool warm-min 0 +1 window(s)", "0"},
		{"two windows", []string{"--warm-window", `{schedule: "0 5 * * *", duration: 1h, minimum: 1}`,
			"--warm-window", `{schedule: "0 1 * * *", duration: 1h, minimum: 1}`}, "warmpool warm-min 0 +2 window(s)", "0"},
		// A window's spare keeps an idle node above the (empty) queue while it is open.
		{"window spare", []string{"--spare", "constant", "--warm-window", `{schedule: "0 1 * * *", duration: 1h, minimum: 0, spare: 1}`},
			"warmpool warm-min 0 +1 window(s)", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"--trace", trace}, mechanics...), "--warm-min", "0")
			out, err := runSimulate(t, append(args, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			wantRow(t, out, tt.label, "1", tt.wait)
		})
	}
}

func TestSimulateSeveralTraces(t *testing.T) {
	a := writeTemp(t, "a.csv", "arrival_seconds,duration_seconds,pool\n0,60,x\n")
	b := writeTemp(t, "b.csv", "arrival_seconds,duration_seconds,pool\n0,60,y\n")
	out, err := runSimulate(t, "--trace", a, "--trace", b)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "POLICY") != 2 || !strings.Contains(out, "\n\ntrace "+b) {
		t.Errorf("want two tables separated by a blank line:\n%s", out)
	}
}

func TestSimulateShippedTraces(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "traces")
	out, err := runSimulate(t, "--trace", filepath.Join(dir, "weekday.csv"), "--trace", filepath.Join(dir, "spiky.csv"), "--trace", filepath.Join(dir, "fanout.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "warmpool warm-min 0 spare p90 max 14 hold 45% 25m surplus budget") != 3 || strings.Count(out, "karpenter + restore") != 3 {
		t.Errorf("want a table per shipped trace:\n%s", out)
	}
}

// TestSimulateBusyBudget: a long job keeps the pool busy while a burst's two nodes go idle.
// The block budget keeps them until the long job ends (3 nodes for ~1 h); with the surplus
// budget (the default) they go once stabilization lets desired fall to 1 (755 s: see
// simulate.TestSurplusBudgetKeepsDesired), about 1.4 node-hours. Waits do not change.
func TestSimulateBusyBudget(t *testing.T) {
	trace := writeTemp(t, "burst.csv", "arrival_seconds,duration_seconds,pool\n0,3600,p\n0,300,p\n0,300,p\n")
	base := []string{"--trace", trace, "--cold-cost", "0s", "--restore", "0s", "--save", "0s", "--spare", "off", "--burst-hold-percent", "0", "--warm-min", "0"}
	tests := []struct {
		args  []string
		label string
		cells []string
	}{
		{nil, "warmpool warm-min 0 surplus budget", []string{"3", "60", "60", "60", "60", "100.0%", "0.0%", "1.4"}},
		{[]string{"--busy-budget", "block"}, "warmpool warm-min 0", []string{"3", "60", "60", "60", "60", "100.0%", "0.0%", "3.0"}},
		{[]string{"--busy-budget", "surplus"}, "warmpool warm-min 0 surplus budget", []string{"3", "60", "60", "60", "60", "100.0%", "0.0%", "1.4"}},
	}
	for _, tt := range tests {
		out, err := runSimulate(t, append(base, tt.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		wantRow(t, out, tt.label, tt.cells...)
	}
}

func TestSimulateErrors(t *testing.T) {
	bad := writeTemp(t, "bad.csv", "arrival_seconds,duration_seconds,pool\n0,soon,a\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no trace", nil, "--trace is required"},
		{"missing file", []string{"--trace", filepath.Join(t.TempDir(), "nope.csv")}, "reading trace"},
		{"bad line", []string{"--trace", bad}, `bad.csv: line 2: duration_seconds "soon"`},
		{"args", []string{"extra"}, "unknown command"},
		{"window not YAML", []string{"--trace", bad, "--warm-window", "schedule: ["}, `--warm-window "schedule: [": yaml`},
		{"window unknown field", []string{"--trace", bad, "--warm-window", `{schedule: "0 8 * * *", duration: 1h, minimum: 1, timezone: UTC}`},
			`unknown field "timezone"`},
		{"window bad schedule", []string{"--trace", bad, "--warm-window", `{schedule: "0 8 * * *", duration: 1h, minimum: 1}`,
			"--warm-window", `{schedule: "0 25 * * *", duration: 1h, minimum: 1}`}, "warmWindows[1].schedule"},
		{"window bad zone and duration", []string{"--trace", bad, "--warm-window", `{schedule: "0 8 * * *", duration: 0s, minimum: 1, timeZone: Mars/Base}`},
			"warmWindows[0].duration"},
		{"bad start", []string{"--trace", bad, "--start", "monday"}, "RFC 3339"},
		{"negative validation delay", []string{"--trace", bad, "--validation-delay", "-1s"}, "validation delay"},
		{"bad busy budget", []string{"--trace", bad, "--busy-budget", "open"}, `--busy-budget "open": must be "block" or "surplus"`},
		{"bad spare mode", []string{"--trace", bad, "--spare", "auto"}, "scaling.spare.mode"},
		{"negative spare", []string{"--trace", bad, "--spare-max", "-1"}, "scaling.spare.max"},
		{"absurd spare probability", []string{"--trace", bad, "--spare-probability", "100"}, "scaling.spare.probability"},
		{"spare window too short", []string{"--trace", bad, "--spare-window", "1s"}, "scaling.spare.window"},
		{"negative cold cost", []string{"--trace", bad, "--cold-cost", "-1s"}, "cold cost"},
		{"negative restore", []string{"--trace", bad, "--restore", "-1s"}, "restore"},
		{"burst hold above 100%", []string{"--trace", bad, "--burst-hold-percent", "101"}, "scaling.burstHold.percent"},
		{"burst hold window too short", []string{"--trace", bad, "--burst-hold-window", "10s"}, "scaling.burstHold.window"},
		{"bad when-jobs-wait", []string{"--trace", bad, "--when-jobs-wait", "wait"}, `--when-jobs-wait "wait": must be "cold" or "restore"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runSimulate(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	good := writeTemp(t, "good.csv", "arrival_seconds,duration_seconds,pool\n0,1,a\n")
	if _, err := runSimulate(t, "--trace", good, "--jobs-per-node", "0"); err == nil || !strings.Contains(err.Error(), "jobs per node") {
		t.Errorf("--jobs-per-node 0: %v, want a jobs per node error", err)
	}
	// A header-only trace is zero jobs: a table of zeros, not an error.
	empty := writeTemp(t, "empty.csv", "arrival_seconds,duration_seconds,pool\n")
	out, err := runSimulate(t, "--trace", empty)
	if err != nil || !strings.Contains(out, "0 jobs in 0 pool(s)") {
		t.Errorf("empty trace: %v\n%s", err, out)
	}
}
