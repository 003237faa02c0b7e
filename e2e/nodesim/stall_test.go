package nodesim_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/volumes"
)

// TestStalledCachePodEndsAtItsGracePeriod: on a node annotated to stall cache jobs, a save pod
// is reported Running but its copier never runs; deleted, it ignores the SIGTERM and is killed
// when its grace period runs out (exit 137, no result), and only then is the deletion confirmed.
// Against a real kube-apiserver, with nodesim playing the kubelet.
func TestStalledCachePodEndsAtItsGracePeriod(t *testing.T) {
	ctx := t.Context()
	api := cluster.StartTestAPIServer(t)
	sim, err := nodesim.Start(ctx, nodesim.Options{
		Config: api.Config,
		Root:   t.TempDir(),
		// A stalled pod never runs the binary: running it would fail the test.
		WarmpoolBinary: "/nonexistent/warmpool",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Stop(); err != nil {
			t.Errorf("stopping nodesim: %v", err)
		}
	})
	kube := api.Client

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: "stall-node", Annotations: map[string]string{nodesim.AnnotationStallCacheJobs: "true"},
	}}
	createNode(t, kube, node)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "save-stall", Labels: map[string]string{volumes.LabelOp: volumes.OpSave}},
		Spec: corev1.PodSpec{
			NodeName:                      node.Name,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name: volumes.CopierContainer, Image: "ghcr.io/warmpool/warmpool:test",
				Args: []string{"cache", "save", "--cache-dir", "/cache", "--volume-dir", "/volume"},
			}},
		},
	}
	if err := kube.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	poll(t, "the save pod Running and stalled", func(ctx context.Context) (bool, error) {
		if err := kube.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return pod.Status.Phase == corev1.PodRunning && sim.Count(nodesim.CacheJobStalled, node.Name) == 1, nil
	})

	if err := kube.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	deleting := &corev1.Pod{}
	if err := kube.Get(ctx, client.ObjectKeyFromObject(pod), deleting); err != nil {
		t.Fatalf("the stalled pod right after its deletion: %v", err)
	}
	if deleting.DeletionTimestamp == nil {
		t.Fatal("the stalled pod has no deletionTimestamp")
	}
	poll(t, "the stalled pod to be gone", func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})

	var ends []nodesim.Event
	for _, e := range sim.Events() {
		if e.Kind == nodesim.CacheJobFinished && e.Node == node.Name {
			ends = append(ends, e)
		}
	}
	if len(ends) != 1 {
		t.Fatalf("%d ends of the stalled pod recorded, want 1: %v", len(ends), ends)
	}
	end := ends[0]
	if end.ExitCode != 137 || end.Detail != volumes.OpSave {
		t.Errorf("stalled pod ended with exit %d, detail %q; want 137 (SIGKILL) and no result", end.ExitCode, end.Detail)
	}
	// The kill waited for the grace period: the API server set deletionTimestamp to its end.
	if end.Time.Before(deleting.DeletionTimestamp.Time) {
		t.Errorf("stalled pod killed at %s, before its grace period ended at %s",
			end.Time.Format(time.RFC3339Nano), deleting.DeletionTimestamp.Format(time.RFC3339))
	}
}

func poll(t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last error: %v)", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
