package nodesim_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/engine"
)

const engineHostPath = "/mnt/k8s-disks/0/dagger"

// TestEngineStopWaitsForClients: against a real kube-apiserver, a v0.21 engine whose pod is
// deleted while a runner is attached is killed at the end of its grace period (lock file
// left), and its next start wipes the cache for the unclean record; once the runner is done,
// the stop is graceful (lock file deleted) and the next start is warm, with dagql entries.
// An engine version outside the table starts no engine.
func TestEngineStopWaitsForClients(t *testing.T) {
	ctx := t.Context()
	api := cluster.StartTestAPIServer(t)
	sim, err := nodesim.Start(ctx, nodesim.Options{Config: api.Config, Root: t.TempDir(), WarmpoolBinary: "/nonexistent/warmpool"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Stop(); err != nil {
			t.Errorf("stopping nodesim: %v", err)
		}
	})
	t.Cleanup(func() {
		for _, e := range sim.Events() {
			t.Log(e)
		}
	})
	kube := api.Client
	const node = "engine-node"
	createNode(t, kube, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	dir := sim.NodePath(node, engineHostPath)
	lockFile := filepath.Join(dir, engine.LockFile)

	runner := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "runner", Annotations: map[string]string{nodesim.AnnotationEngineClient: "true"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "job", Image: "runner"}}},
	}
	if err := kube.Create(ctx, runner); err != nil {
		t.Fatal(err)
	}
	setPhase(t, kube, runner, corev1.PodRunning)

	e1 := runEngine(t, kube, "engine-1", node, "v0.21.8")
	poll(t, "engine-1 to start cold", func(context.Context) (bool, error) {
		return countFor(sim, nodesim.EngineColdStart, e1) == 1, nil
	})
	if m := scrape(t, sim, e1); !strings.Contains(m, "\ndagger_connected_clients 1\n") || !strings.Contains(m, "\ndagger_dagql_cache_entries 0\n") {
		t.Errorf("engine-1 metrics with one runner attached, after a cold start:\n%s", m)
	}

	deleteAndWait(t, kube, e1)
	if killed := eventsFor(sim, nodesim.EngineKilled, e1); len(killed) != 1 || !strings.Contains(killed[0].Detail, "grace period ended with 1 clients") {
		t.Errorf("engine-1 stop with a client attached: %v, want one kill at the end of the grace period", killed)
	}
	if _, err := os.Stat(lockFile); err != nil {
		t.Errorf("a killed engine's lock file: %v, want it left behind", err)
	}

	e2 := runEngine(t, kube, "engine-2", node, "v0.21.8")
	poll(t, "engine-2 to start", func(context.Context) (bool, error) {
		return countFor(sim, nodesim.EngineColdStart, e2)+countFor(sim, nodesim.EngineWarmStart, e2) == 1, nil
	})
	if wiped := eventsFor(sim, nodesim.EngineWiped, e2); len(wiped) != 1 || !strings.HasPrefix(wiped[0].Detail, nodesim.WipeUncleanShutdown) {
		t.Errorf("engine-2 on a killed engine's cache: wipes %v, want one for %s", wiped, nodesim.WipeUncleanShutdown)
	}

	setPhase(t, kube, runner, corev1.PodSucceeded)
	deleteAndWait(t, kube, e2)
	if n := countFor(sim, nodesim.EngineStopped, e2); n != 1 {
		t.Errorf("engine-2 stopped cleanly %d times after its client finished, want 1", n)
	}
	if _, err := os.Stat(lockFile); !os.IsNotExist(err) {
		t.Errorf("after a graceful stop the lock file: %v, want it deleted", err)
	}

	e3 := runEngine(t, kube, "engine-3", node, "v0.21.8")
	poll(t, "engine-3 to start warm", func(context.Context) (bool, error) {
		return countFor(sim, nodesim.EngineWarmStart, e3) == 1, nil
	})
	if m := scrape(t, sim, e3); !strings.Contains(m, "\ndagger_connected_clients 0\n") || !strings.Contains(m, "\ndagger_dagql_cache_entries 3\n") {
		t.Errorf("engine-3 metrics after a warm start:\n%s", m)
	}

	createNode(t, kube, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "other-node"}})
	odd := runEngine(t, kube, "engine-odd", "other-node", "v9.9.9")
	poll(t, "the unknown version to be refused", func(context.Context) (bool, error) {
		return countFor(sim, nodesim.EngineStartFailed, odd) == 1, nil
	})
	if sim.EngineMetricsAddr(odd.Namespace, odd.Name) != "" {
		t.Error("an engine runs for a version outside the table")
	}
}

func runEngine(t *testing.T, kube client.Client, name, node, version string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{
			volumes.LabelEngineName: volumes.EngineName, volumes.LabelEngineVersion: version,
		}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name: volumes.EngineContainer, Image: "registry.dagger.io/engine:" + version,
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: nodesim.EngineDataPath}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: engineHostPath, Type: ptr.To(corev1.HostPathDirectoryOrCreate),
			}}}},
		},
	}
	if err := kube.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	setPhase(t, kube, pod, corev1.PodRunning) // kwok's part in a full cluster
	return pod
}

// setPhase plays kwok's stages: like them, it waits for nodesim's kubelet to admit the pod.
func setPhase(t *testing.T, kube client.Client, pod *corev1.Pod, phase corev1.PodPhase) {
	t.Helper()
	poll(t, pod.Name+" admitted by the kubelet", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return err == nil && pod.Status.HostIP != "", err
	})
	pod.Status.Phase = phase
	if err := kube.Status().Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
}

// deleteAndWait deletes the pod with its grace period and waits until nodesim confirmed it.
func deleteAndWait(t *testing.T, kube client.Client, pod *corev1.Pod) {
	t.Helper()
	if err := kube.Delete(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	poll(t, pod.Name+" to be gone", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

func eventsFor(sim *nodesim.Sim, kind nodesim.EventKind, pod *corev1.Pod) []nodesim.Event {
	var out []nodesim.Event
	for _, e := range sim.Events() {
		if e.Kind == kind && e.Object == pod.Namespace+"/"+pod.Name {
			out = append(out, e)
		}
	}
	return out
}

func countFor(sim *nodesim.Sim, kind nodesim.EventKind, pod *corev1.Pod) int {
	return len(eventsFor(sim, kind, pod))
}

func scrape(t *testing.T, sim *nodesim.Sim, pod *corev1.Pod) string {
	t.Helper()
	addr := sim.EngineMetricsAddr(pod.Namespace, pod.Name)
	if addr == "" {
		t.Fatalf("no metrics endpoint for %s", pod.Name)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
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
