package e2e_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"warmpool.io/warmpool/cmd/warmpool/status"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/volumes"
)

// checkStatusAfterStory runs the real `warmpool status` binary after the whole story, as an
// operator would (kubeconfig, warmpool's namespace, the leader's metrics endpoint), and checks
// that it names what happened: the pool and its NodePool, the story's newest snapshot, the
// save, and the warm restore on the second burst's node.
func checkStatusAfterStory(t *testing.T, metricsAddr string, res scenario.StoryResult) {
	t.Helper()
	statusCLI := func(args ...string) string {
		t.Helper()
		args = append([]string{"status", scenario.StoryPool, "--kubeconfig", local.Kubeconfig, "--namespace", scenario.Namespace,
			"--metrics-url", "http://" + metricsAddr + "/metrics"}, args...)
		var stderr bytes.Buffer
		cmd := exec.Command(local.Warmpool, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("warmpool %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return string(out)
	}
	var rep status.Report
	if err := json.Unmarshal([]byte(statusCLI("-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Pools) != 1 || rep.Pools[0].Name != scenario.StoryPool || rep.Pools[0].NodePool == nil {
		t.Fatalf("status names pools %+v, want %s with its NodePool", rep.Pools, scenario.StoryPool)
	}
	p := rep.Pools[0]
	if len(p.Cache.Snapshots) == 0 || !slices.Contains(res.Snapshots, p.Cache.Snapshots[0].Name) || !p.Cache.Snapshots[0].Good {
		t.Errorf("status snapshots %+v, want the story's newest good one (of %v) first", p.Cache.Snapshots, res.Snapshots)
	}
	if r := p.Cache.LastRestore; r == nil || r.Result != volumes.ResultWarm || r.Node != res.WarmNode || !slices.Contains(res.Snapshots, r.Snapshot) {
		t.Errorf("status last restore %+v, want warm on %s from one of %v", r, res.WarmNode, res.Snapshots)
	}
	if s := p.Cache.LastSave; s == nil || s.Result != "saved" {
		t.Errorf("status last save %+v, want saved", s)
	}
	if len(p.Sources) == 0 || p.Sources[0].StalenessSeconds == nil {
		t.Errorf("status sources %+v, want the leader's reading", p.Sources)
	}
	table := statusCLI()
	for _, want := range []string{"Pool " + scenario.StoryPool, "warm on node " + res.WarmNode, p.Cache.LastRestore.Snapshot} {
		if !strings.Contains(table, want) {
			t.Errorf("warmpool status lacks %q:\n%s", want, table)
		}
	}
	t.Logf("warmpool status after the story:\n%s", table)
}
