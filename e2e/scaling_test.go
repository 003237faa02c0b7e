package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

// scalingConfig has a webhook-driven pool, a Prometheus-driven pool and a pool with no queue.
// The queue-fed pools keep no spare and no burst hold: the default adaptive spare starts sizing
// itself from the arrival rate two minutes after the controller starts, and the default burst
// hold keeps 45% of a burst's nodes for 25 minutes, so either would keep the drained pools above
// their floor (TestSpareNodesAheadOfArrivals covers the spare, the policy's tests the hold).
func scalingConfig(promURL string) string {
	return fmt.Sprintf(`apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
webhook:
  secretRef: {name: warmpool-github, key: webhook-secret}
pools:
  - name: burst
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    limits: {nodes: 6}
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 5s}
    engine: {version: v0.19.7}
    queue:
      sources:
        - githubWebhook: {labels: [self-hosted, burst]}
    scaling:
      jobsPerNode: 2
      runnerRequests: {cpu: "1", memory: 2Gi}
      warmMinimum: 1
      scaleDownStabilization: 15s
      spare: {mode: "off"}
      burstHold: {percent: 0}
  - name: metered
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 5s}
    engine: {version: v0.19.7}
    queue:
      sources:
        - name: prom
          prometheus: {url: %q, query: "sum(ci_queued_jobs)", pollInterval: 5s}
    scaling:
      scaleDownStabilization: 10s
      spare: {mode: "off"}
      burstHold: {percent: 0}
  - name: quiet
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    engine: {version: v0.19.7}
`, promURL)
}

// fakePrometheus answers /api/v1/query with one sample whose value the test sets.
func fakePrometheus(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var value atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[%d,"%d"]}]}}`, time.Now().Unix(), value.Load())
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, &value
}

// TestQueueDemandScalesPoolsAhead drives two pools from real queue sources (signed GitHub
// webhooks and a Prometheus query) through real Karpenter: demand boots nodes of that pool
// only before runner pods exist, runner pods preempt the placeholders, nothing of a busy pool
// is consolidated, and once the queue drains the pool shrinks to its warm minimum.
func TestQueueDemandScalesPoolsAhead(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	promURL, promValue := fakePrometheus(t)
	if err := scenario.EnsureWebhookSecret(ctx, kube); err != nil {
		t.Fatal(err)
	}
	wp, err := scenario.StartWarmpool(ctx, local.Config, kube, scalingConfig(promURL), scenario.Options{WebhookAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wp.Stop() })
	timeline := scenario.StartTimeline(ctx, kube, nil)
	t.Cleanup(func() {
		for _, e := range timeline.Entries() {
			t.Log(e)
		}
	})
	select {
	case <-wp.Webhook.Bound:
	case <-time.After(time.Minute):
		t.Fatal("webhook server never started")
	}
	gh := &scenario.GitHub{URL: "http://" + wp.Webhook.BoundAddr + "/webhooks/github", Secret: scenario.WebhookSecret}

	waitFor(t, "the warm minimum: 1 node in pool burst", func(ctx context.Context) (bool, error) {
		n, err := readyNodes(ctx, "burst")
		return n == 1, err
	})

	// A burst of 5 queued jobs: 3 nodes at 2 jobs per node, booted before any runner pod.
	for id := int64(1); id <= 5; id++ {
		if err := gh.Job(ctx, id, "queued", "self-hosted", "burst", "linux"); err != nil {
			t.Fatal(err)
		}
	}
	timeline.Note("github", "5 jobs queued")
	// A delivery with a bad signature changes nothing.
	bad := &scenario.GitHub{URL: gh.URL, Secret: "wrong"}
	if err := bad.Job(ctx, 99, "queued", "self-hosted", "burst"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a wrongly signed delivery was answered %v, want 401", err)
	}
	promValue.Store(1)
	timeline.Note("prometheus", "sum(ci_queued_jobs) = 1")

	waitFor(t, "3 Ready nodes in pool burst and 1 in pool metered", func(ctx context.Context) (bool, error) {
		b, err := readyNodes(ctx, "burst")
		if err != nil {
			return false, err
		}
		m, err := readyNodes(ctx, "metered")
		return b == 3 && m == 1, err
	})
	if n, _ := readyNodes(ctx, "quiet"); n != 0 {
		t.Errorf("pool quiet, with no queue, got %d nodes", n)
	}
	np := &karpv1.NodePool{}
	if err := kube.Get(ctx, client.ObjectKey{Name: nodepools.Name("burst")}, np); err != nil {
		t.Fatal(err)
	}
	if !hasBlockingBudget(np) {
		t.Errorf("busy pool's budgets %+v, want the blocking budget first", np.Spec.Disruption.Budgets)
	}
	burstNodes := nodeNames(ctx, t, "burst")

	// Two runner pods pick up jobs 1 and 2; they preempt placeholders rather than wait.
	for i := 1; i <= 2; i++ {
		pod := scenario.RunnerPod("burst", fmt.Sprintf("runner-%d", i))
		if err := kube.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if err := gh.Job(ctx, int64(i), "in_progress", "self-hosted", "burst", "linux"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both runner pods Running on the pool's nodes", func(ctx context.Context) (bool, error) {
		return runnersRunning(ctx, burstNodes) == 2, nil
	})
	// A runner that needs all the room a placeholder holds preempts it, instead of waiting for a
	// new node: that is what the placeholders' negative priority is for.
	victim := settledPlaceholder(t, "burst")
	big := scenario.RunnerPod("burst", "runner-big")
	big.Spec.Containers[0].Resources.Requests = roomBeside(t, victim)
	big.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{victim.Spec.NodeName}}},
		}}},
	}}
	if err := kube.Create(ctx, big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the big runner Running where the placeholder was, which was preempted", func(ctx context.Context) (bool, error) {
		if err := kube.Get(ctx, client.ObjectKeyFromObject(big), big); err != nil || big.Status.Phase != corev1.PodRunning {
			return false, err
		}
		events := &corev1.EventList{}
		if err := kube.List(ctx, events, client.InNamespace(scenario.Namespace), client.MatchingFields{"reason": "Preempted", "involvedObject.name": victim.Name}); err != nil {
			return false, err
		}
		return big.Spec.NodeName == victim.Spec.NodeName && len(events.Items) > 0, nil
	})
	// Longer than consolidateAfter: a busy pool keeps every node. (It may gain one: a preempted
	// placeholder whose node was already busy is replaced, and needs a node of its own.)
	before := nodeNames(ctx, t, "burst")
	time.Sleep(15 * time.Second)
	after := nodeNames(ctx, t, "burst")
	for _, n := range before {
		if !slices.Contains(after, n) {
			t.Errorf("node %s of the busy pool was removed (nodes %v, then %v)", n, before, after)
		}
	}

	// The queue drains: every job completes, the runners go.
	for id := int64(1); id <= 5; id++ {
		if err := gh.Job(ctx, id, "completed", "self-hosted", "burst", "linux"); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"runner-1", "runner-2", "runner-big"} {
		_ = kube.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: name}})
	}
	promValue.Store(0)
	timeline.Note("queue", "drained")
	waitFor(t, "pool burst consolidated down to its warm minimum and pool metered to zero", func(ctx context.Context) (bool, error) {
		b, err := readyNodes(ctx, "burst")
		if err != nil {
			return false, err
		}
		m, err := readyNodes(ctx, "metered")
		return b == 1 && m == 0, err
	})
	if err := kube.Get(ctx, client.ObjectKey{Name: nodepools.Name("burst")}, np); err != nil {
		t.Fatal(err)
	}
	// warmMinimum alone does not make the pool busy: consolidation of extra nodes is allowed.
	if hasBlockingBudget(np) {
		t.Errorf("idle pool still blocks consolidation: %+v", np.Spec.Disruption.Budgets)
	}
}

func readyNodes(ctx context.Context, pool string) (int, error) {
	return scenario.ReadyNodes(ctx, local.Client, pool)
}

func nodeNames(ctx context.Context, t *testing.T, pool string) []string {
	t.Helper()
	nodes := &corev1.NodeList{}
	if err := local.Client.List(ctx, nodes, client.MatchingLabels{nodepools.LabelPool: pool}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

func runnersRunning(ctx context.Context, onNodes []string) int {
	pods := &corev1.PodList{}
	if err := local.Client.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner"}); err != nil {
		return 0
	}
	n := 0
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && slices.Contains(onNodes, p.Spec.NodeName) {
			n++
		}
	}
	return n
}

func hasBlockingBudget(np *karpv1.NodePool) bool {
	b := np.Spec.Disruption.Budgets
	return len(b) > 0 && b[0].Nodes == "0" && slices.Contains(b[0].Reasons, karpv1.DisruptionReasonEmpty)
}

// settledPlaceholder waits until the pool's headroom Deployment has stopped changing (so the
// ReplicaSet is not about to delete a pod itself) and returns one of its Running pods.
func settledPlaceholder(t *testing.T, pool string) *corev1.Pod {
	t.Helper()
	var pick *corev1.Pod
	stable := 0
	waitFor(t, "the headroom of pool "+pool+" to settle", func(ctx context.Context) (bool, error) {
		d := &appsv1.Deployment{}
		if err := local.Client.Get(ctx, client.ObjectKey{Namespace: scenario.Namespace, Name: nodepools.HeadroomName(pool)}, d); err != nil {
			return false, err
		}
		pods := &corev1.PodList{}
		if err := local.Client.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{nodepools.LabelHeadroom: "true", nodepools.LabelPool: pool}); err != nil {
			return false, err
		}
		var running []*corev1.Pod
		for i := range pods.Items {
			if p := &pods.Items[i]; p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				running = append(running, p)
			}
		}
		settled := d.Status.ObservedGeneration == d.Generation && d.Spec.Replicas != nil &&
			int(*d.Spec.Replicas) == len(running) && len(running) == len(pods.Items) && len(running) > 0
		if !settled {
			stable = 0
			return false, nil
		}
		stable++
		pick = running[0]
		for _, p := range running {
			if !nodeHasRunner(ctx, p.Spec.NodeName) {
				// On an idle node the runner makes the node busy, so the placeholder is not
				// replaced: the cleanest preemption to watch.
				pick = p
				break
			}
		}
		time.Sleep(time.Second)
		return stable >= 3, nil
	})
	return pick
}

// roomBeside is the node's allocatable minus every pod on it but the placeholder: a pod asking
// for exactly this fits only if the placeholder goes.
func roomBeside(t *testing.T, placeholder *corev1.Pod) corev1.ResourceList {
	t.Helper()
	ctx := t.Context()
	node := &corev1.Node{}
	if err := local.Client.Get(ctx, client.ObjectKey{Name: placeholder.Spec.NodeName}, node); err != nil {
		t.Fatal(err)
	}
	pods := &corev1.PodList{}
	if err := local.Client.List(ctx, pods); err != nil {
		t.Fatal(err)
	}
	cpu, mem := node.Status.Allocatable.Cpu().DeepCopy(), node.Status.Allocatable.Memory().DeepCopy()
	for _, p := range pods.Items {
		if p.Spec.NodeName != node.Name || p.UID == placeholder.UID || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		// What the scheduler reserves: an init container's requests count when larger.
		req := resourcehelper.PodRequests(&p, resourcehelper.PodResourcesOptions{})
		cpu.Sub(*req.Cpu())
		mem.Sub(*req.Memory())
	}
	return corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem}
}

func nodeHasRunner(ctx context.Context, node string) bool {
	pods := &corev1.PodList{}
	if err := local.Client.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner"}); err != nil {
		return true
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node {
			return true
		}
	}
	return false
}
