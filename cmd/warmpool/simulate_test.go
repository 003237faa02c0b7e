package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
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

func TestSimulateOneJob(t *testing.T) {
	trace := writeTemp(t, "one.csv", "arrival_seconds,duration_seconds,pool\n0,300,runners\n")
	out, err := runSimulate(t, "--trace", trace)
	if err != nil {
		t.Fatal(err)
	}
	// The brief's example: Karpenter alone waits one boot, a static pool and warmpool do not.
	for _, row := range []string{
		"karpenter alone      1     60            60            60",
		"static N=1           1     0             0             0",
		"warmpool warm-min 1  1     0             0             0",
	} {
		if !strings.Contains(out, row) {
			t.Errorf("output lacks %q:\n%s", row, out)
		}
	}
	if !strings.HasPrefix(out, "trace "+trace+" (pools: runners)\n") {
		t.Errorf("output does not start by naming the trace:\n%s", out)
	}
}

func TestSimulateFlags(t *testing.T) {
	trace := writeTemp(t, "two.csv", "arrival_seconds,duration_seconds,pool\n0,300,a\n0,300,a\n")
	out, err := runSimulate(t, "--trace", trace, "--boot", "30s", "--static", "0", "--jobs-per-node", "2",
		"--warm-min", "0", "--max", "4", "--consolidate-after", "0s", "--interval", "5s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"boot 30s, 2 job(s)/node, WhenEmpty consolidateAfter 0s + 15s validation, max nodes 4, policy every 5s",
		"karpenter alone      2     30            30            30",
		"static N=0           2     30",
		"warmpool warm-min 0  2     30",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestSimulateWarmWindow(t *testing.T) {
	// One job at 01:01:40 UTC on the default start (Monday 2 March 2026, 00:00 UTC), no warm
	// minimum: without a window it waits a boot. A window opening at 02:00 Europe/Berlin (01:00
	// UTC, CET) makes warmpool request a node at 3600 s, Ready before the job arrives; read in
	// UTC the same schedule would open an hour too late.
	trace := writeTemp(t, "one.csv", "arrival_seconds,duration_seconds,pool\n3700,60,runners\n")
	tests := []struct {
		name string
		args []string
		row  string
	}{
		{"no window", nil, "warmpool warm-min 0  1     60"},
		{"window in Berlin", []string{"--warm-window", `{schedule: "0 2 * * *", duration: 30m, minimum: 1, timeZone: Europe/Berlin}`},
			"warmpool warm-min 0 +1 window(s)  1     0"},
		{"window in UTC", []string{"--warm-window", `{schedule: "0 2 * * *", duration: 30m, minimum: 1}`},
			"warmpool warm-min 0 +1 window(s)  1     60"},
		// --start moves t=0 into the Berlin window: the node exists from the start.
		{"start", []string{"--start", "2026-03-02T01:00:00Z", "--warm-window", `{schedule: "0 2 * * *", duration: 2h, minimum: 1, timeZone: Europe/Berlin}`},
			"warmpool warm-min 0 +1 window(s)  1     0"},
		{"two windows", []string{"--warm-window", `{schedule: "0 5 * * *", duration: 1h, minimum: 1}`,
			"--warm-window", `{schedule: "0 1 * * *", duration: 1h, minimum: 1}`}, "warmpool warm-min 0 +2 window(s)  1     0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runSimulate(t, append([]string{"--trace", trace, "--warm-min", "0"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.row) {
				t.Errorf("output lacks %q:\n%s", tt.row, out)
			}
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
	out, err := runSimulate(t, "--trace", filepath.Join(dir, "weekday.csv"), "--trace", filepath.Join(dir, "spiky.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "warmpool warm-min 1") != 2 {
		t.Errorf("want a table per shipped trace:\n%s", out)
	}
}

// TestSimulateBusyBudget: a long job keeps the pool busy while a burst's two nodes go idle.
// The default block budget keeps them until the long job ends (3 nodes for ~1 h); with
// --busy-budget surplus they go once stabilization lets desired fall to 1 (755 s: see
// simulate.TestSurplusBudgetKeepsDesired), about 1.4 node-hours. Waits do not change.
func TestSimulateBusyBudget(t *testing.T) {
	trace := writeTemp(t, "burst.csv", "arrival_seconds,duration_seconds,pool\n0,3600,p\n0,300,p\n0,300,p\n")
	tests := []struct {
		args []string
		row  string
	}{
		{nil, "warmpool warm-min 0  3     60            60            60            3.0"},
		{[]string{"--busy-budget", "block"}, "warmpool warm-min 0  3     60            60            60            3.0"},
		{[]string{"--busy-budget", "surplus"}, "warmpool warm-min 0 surplus budget  3     60            60            60            1.4"},
	}
	for _, tt := range tests {
		out, err := runSimulate(t, append([]string{"--trace", trace, "--warm-min", "0"}, tt.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, tt.row) {
			t.Errorf("%v: want row %q in\n%s", tt.args, tt.row, out)
		}
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
}
