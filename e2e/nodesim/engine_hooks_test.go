package nodesim

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/volumes/engine"
)

func testSim(t *testing.T, bin string) *Sim {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"logs", "pods", "nodes"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &Sim{root: root, bin: bin, logf: t.Logf}
}

// drainPod is an engine pod rendered the way warmpool's chart does it: an init container of
// warmpool's image installs the binary into an emptyDir, the preStop runs it from there.
func drainPod(preStop []string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "engine-a", UID: "uid-1"},
		Spec: corev1.PodSpec{
			NodeName: "node-a",
			InitContainers: []corev1.Container{{
				Name: "warmpool-tools", Image: "ghcr.io/warmpool/warmpool:dev",
				Command:      []string{"/warmpool", "engine", "install", "--to", "/opt/warmpool"},
				VolumeMounts: []corev1.VolumeMount{{Name: "warmpool-tools", MountPath: "/opt/warmpool"}},
			}},
			Containers: []corev1.Container{{
				Name: "engine", Image: "registry.dagger.io/engine:v0.21.8",
				Env: []corev1.EnvVar{{Name: engineMetricsEnv, Value: "127.0.0.1:9090"}, {Name: "KEEP", Value: "kept"}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "data", MountPath: EngineDataPath},
					{Name: "warmpool-tools", MountPath: "/opt/warmpool"},
				},
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: preStop}}},
			}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/mnt/k8s-disks/0/dagger"}}},
				{Name: "warmpool-tools", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

// TestInitContainerInstallsAndPreStopRunsIt: the init container runs nodesim's warmpool
// binary with the emptyDir mapped; the preStop then runs the installed copy with the image's
// PATH (no wget or curl) and the engine's real metrics address.
func TestInitContainerInstallsAndPreStopRunsIt(t *testing.T) {
	// A stand-in for the warmpool binary: "engine install --to DIR" copies itself into DIR;
	// "engine drain" writes what it was given next to itself.
	bin := filepath.Join(t.TempDir(), "warmpool")
	script := `#!/bin/sh
case "$1 $2" in
"engine install") [ "$3" = --to ] || exit 2; /bin/cp "$0" "$4/warmpool"; exit ;; # absolute: the real binary needs nothing on PATH
"engine drain") d=$(dirname "$0"); { echo "args=$*"; echo "addr=$` + engineMetricsEnv + `"; echo "keep=$KEEP"; echo "path=$PATH"; } > "$d/drain.out"; command -v wget >> "$d/drain.out"; command -v curl >> "$d/drain.out"; exit 0 ;;
esac
exit 3
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := testSim(t, bin)
	pod := drainPod([]string{"/opt/warmpool/warmpool", "engine", "drain", "--max-wait", "30"})
	if err := s.runInitContainers(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	tools := filepath.Join(s.podDir(pod), "volumes", "warmpool-tools")
	if _, err := os.Stat(filepath.Join(tools, "warmpool")); err != nil {
		t.Fatalf("the init container did not install into the emptyDir: %v", err)
	}
	res := s.runPreStop(t.Context(), pod, "127.0.0.1:4242")
	if !res.ran || res.code != 0 {
		t.Fatalf("preStop: %+v", res)
	}
	out, err := os.ReadFile(filepath.Join(tools, "drain.out"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	for _, want := range []string{"args=engine drain --max-wait 30\n", "addr=127.0.0.1:4242\n", "keep=kept\n", "path=" + filepath.Join(s.podDir(pod), "image", "bin") + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("the hook saw:\n%s\nwant a line %q", got, strings.TrimSpace(want))
		}
	}
	if strings.Contains(got, "wget") || strings.Contains(got, "curl") {
		t.Errorf("the image PATH offers an HTTP client:\n%s", got)
	}
}

// TestOldShellHookFindsNoHTTPClient: a preStop that reads the metrics with wget, as the old
// sh -c hook did, fails in the image (exit 127) without ever reaching the endpoint.
func TestOldShellHookFindsNoHTTPClient(t *testing.T) {
	var scrapes atomic.Int32
	m, err := startMetrics(contract(t, "v0.21.8"), engineGauges{clients: func() int { scrapes.Add(1); return 2 }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	s := testSim(t, "/nonexistent/warmpool")
	pod := drainPod([]string{"sh", "-c", `wget -q -T 5 -O - "http://${` + engineMetricsEnv + `}/metrics"`})
	res := s.runPreStop(t.Context(), pod, m.addr)
	if res.code != 127 || !strings.Contains(res.detail, "wget") {
		t.Errorf("preStop %+v, want exit 127 (wget: not found)", res)
	}
	if n := scrapes.Load(); n != 0 {
		t.Errorf("the hook read the metrics %d times without an HTTP client", n)
	}
}

// TestPreStopKilledAtGraceEnd: a hook still running when the grace period ends is killed.
func TestPreStopKilledAtGraceEnd(t *testing.T) {
	s := testSim(t, "/nonexistent/warmpool")
	pod := drainPod([]string{"/bin/sh", "-c", "sleep 600"})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	res := s.runPreStop(ctx, pod, "")
	if res.code != exitKilled || !strings.Contains(res.detail, "grace period") {
		t.Errorf("preStop %+v, want killed (exit %d) at the end of the grace period", res, exitKilled)
	}
}

// TestMetricsEndpointServesTheContractsGauges: exactly the release's metrics, with live
// client counts.
func TestMetricsEndpointServesTheContractsGauges(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    []string
		absent  []string
	}{
		{"v0.19.0", []string{"dagger_connected_clients 1", "dagger_local_cache_entries 3"}, []string{engine.MetricDagqlCacheEntries, engine.MetricCorruptDBReset}},
		{"v0.21.8", []string{"dagger_connected_clients 1", "dagger_local_cache_entries 3", "dagger_dagql_cache_entries 5", "dagger_local_cache_corrupt_db_reset 0"}, nil},
	} {
		t.Run(tc.version, func(t *testing.T) {
			clients := atomic.Int32{}
			clients.Store(1)
			m, err := startMetrics(contract(t, tc.version), engineGauges{clients: func() int { return int(clients.Load()) }, localEntries: 3, dagqlEntries: 5})
			if err != nil {
				t.Fatal(err)
			}
			defer m.close()
			scrape := func() string {
				resp, err := http.Get("http://" + m.addr + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
			body := scrape()
			for _, w := range tc.want {
				if !strings.Contains(body, "\n"+w+"\n") {
					t.Errorf("metrics lack %q:\n%s", w, body)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(body, a) {
					t.Errorf("%s exports %s, which it does not have", tc.version, a)
				}
			}
			clients.Store(0)
			if body := scrape(); !strings.Contains(body, "\ndagger_connected_clients 0\n") {
				t.Errorf("after the client left:\n%s", body)
			}
		})
	}
}
