package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
)

const scalingConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: local}}]
pools:
  - name: burst
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    limits: {nodes: 6}
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 5s}
    engine: {version: v0.19.7}
    queue:
      sources:
        - name: ci
          prometheus: {url: "http://127.0.0.1:1", query: "ci_jobs"}
    scaling:
      jobsPerNode: 2
      runnerRequests: {cpu: "1", memory: 2Gi}
      scaleDownStabilization: 20s
  - name: quiet
    architectures: [amd64]
    nvme: {minSizeGB: 200}
    engine: {version: v0.19.7}
`

func TestTrackedDemandScalesPoolAhead(t *testing.T) {
	ctx := t.Context()
	kube := local.Client
	wp, err := scenario.StartWarmpool(ctx, local.Config, kube, scalingConfig, scenario.Options{})
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
	waitFor(t, "NodePools", func(ctx context.Context) (bool, error) {
		return kube.Get(ctx, client.ObjectKey{Name: "warmpool-burst"}, &karpv1.NodePool{}) == nil, nil
	})
	wp.Tracker.Record(queue.Key{Pool: "burst", Source: "ci"}, queue.Counts{Queued: 5}, nil)
	timeline.Note("queue burst", "5 queued")
	waitFor(t, "3 Ready nodes in pool burst", func(ctx context.Context) (bool, error) {
		n, err := readyNodes(ctx, "burst")
		return n == 3, err
	})
	np := &karpv1.NodePool{}
	if err := kube.Get(ctx, client.ObjectKey{Name: "warmpool-burst"}, np); err != nil {
		t.Fatal(err)
	}
	if !hasBlockingBudget(np) {
		t.Errorf("busy pool budgets %+v, want the blocking budget", np.Spec.Disruption.Budgets)
	}
	if n, _ := readyNodes(ctx, "quiet"); n != 0 {
		t.Errorf("pool quiet got %d nodes", n)
	}
	for i := range 2 {
		pod := scenario.RunnerPod("burst", fmt.Sprintf("burst-%d", i))
		pod.Spec.Tolerations[0].Value = "burst"
		if err := kube.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "runner pods running", func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := kube.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner"}); err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 2, nil
	})
	wp.Tracker.Record(queue.Key{Pool: "burst", Source: "ci"}, queue.Counts{}, nil)
	for i := range 2 {
		_ = kube.Delete(ctx, &corev1.Pod{ObjectMeta: podMeta(fmt.Sprintf("burst-%d", i))})
	}
	waitFor(t, "consolidated to zero", func(ctx context.Context) (bool, error) {
		n, err := readyNodes(ctx, "burst")
		return n == 0, err
	})
}

func podMeta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: scenario.Namespace, Name: name} }

func readyNodes(ctx context.Context, pool string) (int, error) {
	nodes := &corev1.NodeList{}
	if err := local.Client.List(ctx, nodes, client.MatchingLabels{nodepools.LabelPool: pool}); err != nil {
		return 0, err
	}
	n := 0
	for _, node := range nodes.Items {
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && node.DeletionTimestamp == nil {
				n++
			}
		}
	}
	return n, nil
}

func hasBlockingBudget(np *karpv1.NodePool) bool {
	for _, b := range np.Spec.Disruption.Budgets {
		if b.Nodes == "0" && strings.Contains(fmt.Sprint(b.Reasons), "Empty") {
			return true
		}
	}
	return false
}
