package status_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"warmpool.io/warmpool/cmd/warmpool/status"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

var at = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

func ref[T any](v T) *T { return &v }

// sampleReport is a story's report: one busy cache pool, a quarantined snapshot, a cold start,
// an idle pool never actuated, and a kind that could not be read.
func sampleReport() *status.Report {
	return &status.Report{
		GatheredAt: at,
		Namespace:  "warmpool",
		Config:     status.Config{ConfigMap: "warmpool/warmpool", Found: true},
		Metrics:    "http://127.0.0.1:8080/metrics",
		Pools: []status.Pool{{
			Name:     "story",
			InConfig: true,
			NodePool: &status.NodePool{
				Name: "warmpool-story", NodeClass: "EC2NodeClass/warmpool-story", NodeClassFound: true, NodeClassReady: "True",
				Busy: "true", Consolidation: "WhenEmpty after 5s", LimitNodes: "4",
				Budgets: []status.Budget{{Nodes: "0", Reasons: []string{"Empty", "Underutilized"}}, {Nodes: "1"}},
			},
			Nodes:   status.Nodes{Current: 2, Ready: 1, Names: []string{"ip-10-0-1-7", "ip-10-0-1-9"}},
			Unknown: []string{"nodeClaims"},
			Scaling: status.Scaling{Headroom: "Deployment warmpool/warmpool-headroom-story", Desired: ref(3), Spare: ref(1), BurstHold: ref(2), HeadroomReplicas: ref(2), RecordedAt: ref(at.Add(-12 * time.Second))},
			Sources: []status.Source{
				{Name: "github-webhook", Kind: "githubWebhook", Queued: ref(2), Running: ref(1), StalenessSeconds: ref(3.0)},
				{Name: "gitlab", Kind: "gitlab", StalenessSeconds: ref(-1.0)},
			},
			Cache: status.Cache{
				Enabled: true, Total: 3,
				Snapshots: []status.Snapshot{
					{Name: "warmpool-story-ip-10-0-1-5-0a1b2c3d", Pool: "story", Arch: "amd64", EngineVersion: "v0.21.8", Created: at.Add(-3 * time.Minute),
						Bytes: ref(int64(3 << 30)), Ready: true, Good: true, Base: "warmpool-story-ip-10-0-1-4-9f8e7d6c", SourceNode: "ip-10-0-1-5"},
					{Name: "warmpool-story-ip-10-0-1-4-9f8e7d6c", Pool: "story", Arch: "amd64", EngineVersion: "v0.21.8", Created: at.Add(-2 * time.Hour),
						Bytes: ref(int64(2 << 30)), Ready: true, Quarantined: true, QuarantineReason: "node ip-10-0-1-6: restore marker missing"},
				},
				LastSave: &status.Outcome{Node: "ip-10-0-1-5", Result: "saved", Snapshot: "warmpool-story-ip-10-0-1-5-0a1b2c3d", At: at.Add(-3 * time.Minute),
					Reason: "CacheSaved", Message: "cache saved to VolumeSnapshot warmpool/warmpool-story-ip-10-0-1-5-0a1b2c3d (incremental, cloned from warmpool-story-ip-10-0-1-4-9f8e7d6c): 3221225472 bytes, 100 files, copy 4s, save 9s; snapshot cut, node released, upload continues"},
				LastRestore: &status.Outcome{Node: "ip-10-0-1-9", Result: "warm", Snapshot: "warmpool-story-ip-10-0-1-5-0a1b2c3d", At: at.Add(-40 * time.Second),
					Reason: "CacheRestored", Message: "cache restored from VolumeSnapshot warmpool/warmpool-story-ip-10-0-1-5-0a1b2c3d: the engine started on it and kept it"},
				ColdStarts: []status.Outcome{{Node: "ip-10-0-1-6", Result: "engine-wiped", At: at.Add(-90 * time.Minute)}},
			},
			Events: []status.Event{
				{Type: "Normal", Reason: "CacheRestored", Object: "Node/ip-10-0-1-9", Message: "cache restored from VolumeSnapshot warmpool/warmpool-story-ip-10-0-1-5-0a1b2c3d: the engine started on it and kept it", Last: at.Add(-40 * time.Second)},
				{Type: "Normal", Reason: "ScaledUp", Object: "NodePool/warmpool-story", Message: "desired nodes 2 -> 3 (queue): 2 queued, 1 running jobs, 2 nodes, 1 busy, 1 headroom pods", Count: 2, Last: at.Add(-50 * time.Second)},
			},
		}, {
			Name:     "idle",
			InConfig: true,
			NodePool: &status.NodePool{Name: "warmpool-idle", NodeClass: "EC2NodeClass/warmpool-idle", Busy: "false", Consolidation: "WhenEmptyOrUnderutilized after 1m0s"},
		}},
		Unknown: []status.Unknown{{What: "NodeClaim", Reason: `forbidden: nodeclaims.karpenter.sh is forbidden: User "dev" cannot list resource "nodeclaims" in API group "karpenter.sh" at the cluster scope`}},
	}
}

func TestRenderTable(t *testing.T) {
	var out bytes.Buffer
	if err := status.Render(&out, sampleReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.txt", out.Bytes())
}

func TestRenderJSONAndYAML(t *testing.T) {
	for format, file := range map[string]string{status.FormatJSON: "status.json", status.FormatYAML: "status.yaml"} {
		var out bytes.Buffer
		if err := status.Encode(&out, format, sampleReport()); err != nil {
			t.Fatal(err)
		}
		golden(t, file, out.Bytes())
	}
}

func TestRenderSnapshotList(t *testing.T) {
	var out bytes.Buffer
	status.RenderSnapshots(&out, sampleReport().Pools[0].Cache.Snapshots, at, "", true)
	golden(t, "snapshots.txt", out.Bytes())
}
