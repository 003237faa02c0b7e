package scaling_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// placeholderOn creates a placeholder of pool bound to node, labelled as the headroom
// Deployment's pods are (envtest runs no ReplicaSet controller to make them). Its phase is
// left alone: the controller may write its cost at once, and the cost does not depend on it.
func (e *env) placeholderOn(pool, node string) *corev1.Pod {
	e.T.Helper()
	return e.newPod("placeholder-"+node, node, func(p *corev1.Pod) {
		p.Labels = map[string]string{nodepools.LabelManagedBy: nodepools.ManagedBy, nodepools.LabelPool: pool, nodepools.LabelHeadroom: "true"}
		p.Spec.NodeSelector = map[string]string{nodepools.LabelPool: pool}
	})
}

// setVerdict records a restore verdict on the node, as the cache controller does when it
// releases the node to its engine and when the engine answered.
func setVerdict(t *testing.T, n *corev1.Node, verdict string) {
	t.Helper()
	patch := client.MergeFrom(n.DeepCopy())
	n.Annotations = map[string]string{enginecache.AnnotationRestore: verdict}
	if err := kube.Patch(t.Context(), n, patch); err != nil {
		t.Fatal(err)
	}
}

// wantCost is the cost a placeholder on n must carry for the cache tier c.
func wantCost(n *corev1.Node, c policy.NodeCache) string {
	return policy.FormatCost(policy.DeletionCost(policy.NodeValue{Cache: c, Created: n.CreationTimestamp.Time}))
}

// waitCost waits for the placeholder's deletion cost to read want, and returns the pod.
func waitCost(t *testing.T, p *corev1.Pod, want string) *corev1.Pod {
	t.Helper()
	eventually(t, fmt.Sprintf("placeholder %s with deletion cost %s", p.Name, want), func() error {
		if err := kube.Get(t.Context(), client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if got := p.Annotations[policy.AnnotationDeletionCost]; got != want {
			return fmt.Errorf("cost %q", got)
		}
		return nil
	})
	return p
}

// TestPlaceholdersCarryTheirNodesValue: each placeholder gets the deletion cost of the node it
// holds: a node that ran a job above one whose restore the engine confirmed, above one whose
// restored copy is unconfirmed, above a cold one. The costs are written once: evaluations that
// change no node's cache patch nothing. A node that starts a job moves up, and a new process
// still knows it ran one after its runner pod is gone.
func TestPlaceholdersCarryTheirNodesValue(t *testing.T) {
	pool := poolName("keepwarm")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.record(pool, queue.Counts{Queued: 4}, nil)
	e.waitReplicas(pool, 4)

	cold := newNode(t, pool+"-cold", pool)
	restored := newNode(t, pool+"-restored", pool)
	setVerdict(t, restored, "verifying") // the copy is in place, the engine has not answered
	warm := newNode(t, pool+"-warm", pool)
	setVerdict(t, warm, volumes.ResultWarm)
	wiped := newNode(t, pool+"-wiped", pool)
	setVerdict(t, wiped, volumes.ResultWiped)
	worked := newNode(t, pool+"-worked", pool)
	// A job ran on it and finished; its pod is still listed.
	e.newPod("runner-done", worked.Name, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })

	want := map[*corev1.Node]policy.NodeCache{
		cold: policy.CacheCold, restored: policy.CacheRestored, warm: policy.CacheWarm, wiped: policy.CacheCold, worked: policy.CacheWorked,
	}
	placeholders := map[*corev1.Node]*corev1.Pod{}
	for n, c := range want {
		placeholders[n] = waitCost(t, e.placeholderOn(pool, n.Name), wantCost(n, c))
	}
	// The order the ReplicaSet controller deletes them in: cold ones first, the worked one last.
	order := []*corev1.Node{cold, restored, warm, worked}
	for i := 1; i < len(order); i++ {
		lo, hi := placeholders[order[i-1]], placeholders[order[i]]
		if costOf(t, lo) >= costOf(t, hi) {
			t.Errorf("placeholder on %s costs %d, on %s %d: want the first lower", order[i-1].Name, costOf(t, lo), order[i].Name, costOf(t, hi))
		}
	}

	// Evaluations that change no node's cache patch nothing: a node comes and goes, the queue
	// moves.
	versions := map[string]string{}
	for _, p := range placeholders {
		versions[p.Name] = p.ResourceVersion
	}
	patchesBefore := podPatches(t)
	extra := newNode(t, pool+"-extra", pool)
	waitGauge(t, nodesGauge, pool, 6)
	e.record(pool, queue.Counts{Queued: 5}, nil)
	e.waitReplicas(pool, 5)
	if err := kube.Delete(t.Context(), extra); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, nodesGauge, pool, 5)
	// A change that is patched, as a marker that every evaluation before it was seen: the cold
	// node gets a runner.
	runner := e.newPod("runner-cold", cold.Name, func(p *corev1.Pod) { p.Status.Phase = corev1.PodRunning })
	waitCost(t, placeholders[cold], wantCost(cold, policy.CacheWorked))
	// The API server counts the requests, no-op patches included: only the cold node's
	// placeholder was patched.
	if n := podPatches(t) - patchesBefore; n != 1 {
		t.Errorf("%v pod PATCH requests while one node's cache changed, want 1", n)
	}
	for n, p := range placeholders {
		if n == cold {
			continue
		}
		if err := kube.Get(t.Context(), client.ObjectKeyFromObject(p), p); err != nil {
			t.Fatal(err)
		}
		if p.ResourceVersion != versions[p.Name] {
			t.Errorf("placeholder on %s was written again (resourceVersion %s -> %s) though its node did not change: cost %s",
				n.Name, versions[p.Name], p.ResourceVersion, p.Annotations[policy.AnnotationDeletionCost])
		}
	}

	// A new process, after the runner is gone: the node still ran a job, and its placeholder
	// says so.
	if err := kube.Delete(t.Context(), runner); err != nil {
		t.Fatal(err)
	}
	e.Stop()
	e.Start()
	late := newNode(t, pool+"-late", pool)
	waitCost(t, e.placeholderOn(pool, late.Name), wantCost(late, policy.CacheCold))
	// The headroom moves only once this process evaluated, after it wrote the costs.
	e.record(pool, queue.Counts{Queued: 6}, nil)
	e.waitReplicas(pool, 6)
	p := placeholders[cold]
	if err := kube.Get(t.Context(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	if got, want := p.Annotations[policy.AnnotationDeletionCost], wantCost(cold, policy.CacheWorked); got != want {
		t.Errorf("after a restart the placeholder on %s costs %s, want %s (the node ran a job)", cold.Name, got, want)
	}
}

func costOf(t *testing.T, p *corev1.Pod) int64 {
	t.Helper()
	var c int64
	if _, err := fmt.Sscan(p.Annotations[policy.AnnotationDeletionCost], &c); err != nil {
		t.Fatalf("placeholder %s cost %q: %v", p.Name, p.Annotations[policy.AnnotationDeletionCost], err)
	}
	return c
}

// podPatches is the API server's count of PATCH requests on pods (apiserver_request_total).
// Tests run one at a time, and nothing else in this suite patches pods.
func podPatches(t *testing.T) float64 {
	t.Helper()
	n, err := cluster.Requests(t.Context(), restConfig, map[string]string{"verb": "PATCH", "resource": "pods", "subresource": ""})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
