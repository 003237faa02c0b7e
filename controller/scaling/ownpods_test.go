package scaling_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// TestCachePodsAreNotWork: a new node restoring its cache runs warmpool's restore pod (and
// later its verify pod) next to the placeholder that brought it up. Neither counts as runner
// work, so the headroom stays what it was: the Deployment's spec never changes (its
// generation), so the ReplicaSet has no placeholder to delete and recreate (envtest runs no
// Deployment controller: the spec is what the test can see). Evaluations are forced by a
// second node coming and going, with the cache pods in place.
func TestCachePodsAreNotWork(t *testing.T) {
	pool := poolName("restoring")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.record(pool, queue.Counts{Queued: 1}, nil)
	gen := e.waitReplicas(pool, 1).Generation

	node := pool + "-1"
	newNode(t, node, pool)
	waitGauge(t, nodesGauge, pool, 1)
	// The placeholder the Deployment put there, and the cache protocol's pods, labelled as
	// volumes renders them.
	e.newPod("placeholder", node, func(p *corev1.Pod) {
		p.Labels = map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy, nodepools.LabelPool: pool, nodepools.LabelHeadroom: "true"}
	})
	cacheLabels := func(op string) map[string]string {
		return map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy, volumes.LabelPool: pool, volumes.LabelNode: node, volumes.LabelOp: op}
	}
	running := func(op string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Labels = cacheLabels(op)
			p.Status.Phase = corev1.PodRunning
		}
	}
	restore := e.newPod("restore", node, running(volumes.OpRestore))

	// A second node forces an evaluation while the restore runs.
	other := newNode(t, pool+"-2", pool)
	waitGauge(t, nodesGauge, pool, 2)
	checkGauge(t, headroomGauge, pool, 1)
	checkGauge(t, busyGauge, pool, 1) // one queued job

	// The restore ends and the engine's verify runs; the second node goes.
	restore.Status.Phase = corev1.PodSucceeded
	if err := kube.Status().Update(t.Context(), restore); err != nil {
		t.Fatal(err)
	}
	e.newPod("verify", node, running(volumes.OpVerify))
	if err := kube.Delete(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, nodesGauge, pool, 1)
	checkGauge(t, headroomGauge, pool, 1)

	d, err := e.headroom(pool)
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation != gen || *d.Spec.Replicas != 1 {
		t.Errorf("headroom Deployment changed while the node restored: generation %d -> %d, replicas %d (want 1)", gen, d.Generation, *d.Spec.Replicas)
	}
}
