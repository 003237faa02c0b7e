package enginecache_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/volumes"
)

// karpenterSpotInterrupted publishes the Event Karpenter's interruption controller records on
// a NodeClaim when EC2 warns of a spot interruption, just before it deletes the NodeClaim
// (aws/karpenter-provider-aws v1.14 pkg/controllers/interruption/events SpotInterrupted, through
// the core/v1 recorder, which puts a cluster-scoped object's Events in "default").
func karpenterSpotInterrupted(t testing.TB, node string) {
	t.Helper()
	nc := &karpv1.NodeClaim{}
	get(t, node, "", nc)
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, GenerateName: node + "."},
		InvolvedObject: corev1.ObjectReference{
			Kind: "NodeClaim", APIVersion: "karpenter.sh/v1", Name: nc.Name, UID: nc.UID, ResourceVersion: nc.ResourceVersion,
		},
		Reason: "SpotInterrupted", Message: "Spot interruption warning was triggered", Type: corev1.EventTypeWarning,
		Source: corev1.EventSource{Component: "karpenter"}, FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if err := kube.Create(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
}

func spotClaim(nc *karpv1.NodeClaim) {
	nc.Labels[karpv1.CapacityTypeLabelKey] = karpv1.CapacityTypeSpot
}

// waitGuardDeadline waits for the guard to record a deadline and returns it and whether it is
// the spot notice window.
func (e *env) waitGuardDeadline(node string) (time.Time, bool) {
	e.T.Helper()
	guard := &corev1.Pod{}
	var at time.Time
	eventually(e.T, "guard deadline recorded", func() error {
		e.waitExists(volumes.GuardName(node), guard)
		var err error
		at, err = time.Parse(time.RFC3339, guard.Annotations[enginecache.AnnotationDeadline])
		return err
	})
	return at, guard.Annotations["warmpool.io/spot-interruption"] == "true"
}

// A spot node deleted for any other reason than Karpenter's interruption (a manual delete, a
// consolidation, an expiry) has its whole grace period: it is saved like any other.
func TestSaveSpotNodeDeletedWithoutInterruptionGetsItsGrace(t *testing.T) {
	pool, node := unique("spotgrace"), unique("spotgrace-node")
	e := newEnv(t, poolYAML(pool, "terminationGracePeriod: 1h"))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, spotClaim)
	e.newEnginePod(node, pool)
	commit(t, node)

	at, spot := e.waitGuardDeadline(node)
	nc := &karpv1.NodeClaim{}
	get(t, node, "", nc)
	if spot || at.Before(nc.DeletionTimestamp.Add(59*time.Minute)) {
		t.Fatalf("deadline %s (spot %v), want the deletion %s plus the hour's grace", at, spot, nc.DeletionTimestamp)
	}
	// The save goes on: the engine is stopped for the copy.
	e.finishEviction(node)
	e.waitExists(volumes.SaveName(node), &corev1.PersistentVolumeClaim{})
	if n := len(nodeEvents(t, node, enginecache.ReasonLost)); n != 0 {
		t.Fatalf("%d CacheLost events for a spot node that was not interrupted", n)
	}
}

// Karpenter sends its Event asynchronously, just before the deletion: a save that looked before
// it arrived still cuts its deadline to the notice window when it does, and does not start a
// copy that cannot finish.
func TestSaveSpotInterruptionSeenAfterTheDeletion(t *testing.T) {
	pool, node := unique("spotlate"), unique("spotlate-node")
	e := newEnv(t, poolYAML(pool, "terminationGracePeriod: 1h"))
	newNode(t, node, pool, "amd64")
	newNodeClaim(t, node, pool, spotClaim)
	e.newEnginePod(node, pool)
	update(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace}}, "engine-"+node, func(p *corev1.Pod) {
		// The engine's stop takes a while: the save is still waiting for it when the notice comes.
		p.Finalizers = append(p.Finalizers, "cache.test.warmpool.io/stopping")
	})
	t.Cleanup(func() {
		p := &corev1.Pod{}
		if err := kube.Get(context.Background(), types.NamespacedName{Namespace: e.Namespace, Name: "engine-" + node}, p); err == nil {
			p.Finalizers = nil
			_ = kube.Update(context.Background(), p)
		}
	})
	commit(t, node)
	if _, spot := e.waitGuardDeadline(node); spot {
		t.Fatal("deadline cut to the spot window before any interruption was published")
	}

	karpenterSpotInterrupted(t, node)
	touch(t, node)
	waitNodeEvent(t, node, enginecache.ReasonLost, "spot-interruption")
	waitMetric(t, "warmpool_cache_lost_total", map[string]string{"pool": pool, "reason": "spot-interruption"}, 1)
	if err := e.noSaveObjects(node); err != nil {
		t.Fatal(err)
	}
}
