package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kwokv1alpha1 "sigs.k8s.io/karpenter/kwok/apis/v1alpha1"
	kwokcloudprovider "sigs.k8s.io/karpenter/kwok/cloudprovider"
	kwokoptions "sigs.k8s.io/karpenter/kwok/options"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/scheduling"

	"warmpool.io/warmpool/cmd/warmpool/status"
)

const (
	pollTimeout = 3 * time.Minute
	poolLabel   = "warmpool.io/pool"
	runnerTaint = "warmpool.io/runner"
)

// TestKarpenterProvisionsAndConsolidatesNVMeNode drives real Karpenter through a whole node
// life: a pending runner pod makes it launch a node of an NVMe type, kwok makes the node
// Ready and the pod Running, and once the pod is gone Karpenter consolidates the empty node
// away.
//
// Consolidation is off ("Never") until the pod runs, so only the test decides when the node
// may go. With 1s from the start, Karpenter marks the NodeClaim consolidatable 1 s after it
// initializes while nothing is bound to it yet (nodeclaim/disruption/consolidation.go), and
// only its nomination of the node for the pending pod, a 20 s window its provisioner renews,
// keeps emptiness from taking it.
//
// The runner is a ReplicaSet's pod, not a bare pod, as CI runners are owned pods (a Job's
// would do, but kwok completes a Job's pods at once): in CI stop 24 and
// in a local run on December 6, 2026 the bare pod was deleted before it ran. The second run's
// Events named the deleter: the scheduler found the new node's taint untolerated, then bound
// the pod once Karpenter had registered the node (and so removed its NoExecute
// karpenter.sh/unregistered taint), and the controller manager's taint-eviction controller
// deleted the bound pod within milliseconds ("TaintManagerEviction"), most likely from a node
// informer that still had the taint. That race is between upstream controllers, not the
// test's; the ReplicaSet replaces its pod, as a runner's controller would on a cluster.
func TestKarpenterProvisionsAndConsolidatesNVMeNode(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	ctx := t.Context()

	const pool = "nvme-runners"
	mustCreate(t, c, &kwokv1alpha1.KWOKNodeClass{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	mustCreate(t, c, &karpv1.NodePool{
		ObjectMeta: metav1.ObjectMeta{Name: pool},
		Spec: karpv1.NodePoolSpec{
			Template: karpv1.NodeClaimTemplate{
				ObjectMeta: karpv1.ObjectMeta{Labels: map[string]string{poolLabel: pool}},
				Spec: karpv1.NodeClaimTemplateSpec{
					NodeClassRef: &karpv1.NodeClassReference{Group: "karpenter.kwok.sh", Kind: "KWOKNodeClass", Name: "default"},
					Taints:       []corev1.Taint{{Key: runnerTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}},
					Requirements: []karpv1.NodeSelectorRequirementWithMinValues{
						{Key: LabelInstanceLocalNVMe, Operator: corev1.NodeSelectorOpGt, Values: []string{"100"}},
					},
				},
			},
			Disruption: karpv1.Disruption{
				ConsolidationPolicy: karpv1.ConsolidationPolicyWhenEmpty,
				ConsolidateAfter:    karpv1.MustParseNillableDuration("Never"),
			},
		},
	})
	labels := map[string]string{"app": "job-1"}
	runner := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "job-1", Namespace: "default"},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       runnerPod("job-1", pool).Spec,
			},
		},
	}
	mustCreate(t, c, runner)
	created := time.Now()
	runnerPods := func() ([]corev1.Pod, error) {
		pods := &corev1.PodList{}
		err := c.Client.List(ctx, pods, client.InNamespace(runner.Namespace), client.MatchingLabels(labels))
		return pods.Items, err
	}

	eventually(t, c, "a NodeClaim for the pool", func() (bool, error) {
		return countNodeClaims(ctx, c, pool) > 0, nil
	})
	t.Logf("NodeClaim created %s after the pod", since(created))

	var node corev1.Node
	eventually(t, c, "a Ready node with more than 100 GB of NVMe", func() (bool, error) {
		nodes := &corev1.NodeList{}
		if err := c.Client.List(ctx, nodes, client.MatchingLabels{poolLabel: pool}); err != nil {
			return false, err
		}
		for _, n := range nodes.Items {
			if !nodeReady(&n) {
				continue
			}
			nvme, err := strconv.Atoi(n.Labels[LabelInstanceLocalNVMe])
			if err != nil || nvme <= 100 {
				return false, fmt.Errorf("node %s (%s) has %s=%q, want > 100", n.Name, n.Labels[corev1.LabelInstanceTypeStable], LabelInstanceLocalNVMe, n.Labels[LabelInstanceLocalNVMe])
			}
			node = n
			return true, nil
		}
		return false, nil
	})
	t.Logf("node %s (%s, %s GB NVMe) Ready %s after the pod", node.Name, node.Labels[corev1.LabelInstanceTypeStable], node.Labels[LabelInstanceLocalNVMe], since(created))

	eventually(t, c, "the runner pod Running on that node", func() (bool, error) {
		pods, err := runnerPods()
		if err != nil {
			return false, err
		}
		for _, p := range pods {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == node.Name {
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("pod Running %s after it was created", since(created))

	// Only the disruption block changes: Karpenter's drift hash covers the template alone, so
	// the node is not replaced for it. A merge patch, not an update: Karpenter writes the
	// NodePool's status meanwhile, which would make an update of a stale copy a conflict.
	np := &karpv1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: pool}}
	consolidate := []byte(`{"spec":{"disruption":{"consolidateAfter":"1s"}}}`)
	if err := c.Client.Patch(ctx, np, client.RawPatch(types.MergePatchType, consolidate)); err != nil {
		t.Fatalf("turning consolidation on: %v", err)
	}

	if err := c.Client.Delete(ctx, runner, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatalf("deleting the ReplicaSet: %v", err)
	}
	deleted := time.Now()
	eventually(t, c, "the runner pods gone", func() (bool, error) {
		pods, err := runnerPods()
		return err == nil && len(pods) == 0, err
	})
	eventually(t, c, "the empty node and its NodeClaim consolidated away", func() (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(&node), &corev1.Node{})
		if client.IgnoreNotFound(err) != nil {
			return false, err
		}
		return apierrors.IsNotFound(err) && countNodeClaims(ctx, c, pool) == 0, nil
	})
	t.Logf("node and NodeClaim deleted %s after the ReplicaSet was deleted", since(deleted))

	assertStopsCleanly(t, c)
}

// TestStopLeavesNoProcesses runs a cluster without Karpenter next to the other test (two
// clusters at once), checks kwok and the scheduler run a pod on a hand-made kwok node, and
// that Stop ends every process it started.
func TestStopLeavesNoProcesses(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{WithoutKarpenter: true})
	ctx := t.Context()

	pids := c.PIDs()
	for _, name := range []string{Etcd, KubeAPIServer, KubeScheduler, KubeControllerManager, KWOK} {
		if pid, ok := pids[name]; !ok || !alive(pid) {
			t.Fatalf("%s: pid %d (known: %v) is not running", name, pid, ok)
		}
	}
	if _, ok := pids[Karpenter]; ok {
		t.Fatalf("karpenter started despite WithoutKarpenter")
	}

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   "fake-1",
		Labels: map[string]string{"kwok.x-k8s.io/node": "fake", poolLabel: "manual"},
	}}
	mustCreate(t, c, node)
	pod := runnerPod("manual-1", "manual")
	pod.Spec.Tolerations = nil
	mustCreate(t, c, pod)
	eventually(t, c, "the pod Running on the kwok node", func() (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return pod.Status.Phase == corev1.PodRunning && pod.Spec.NodeName == node.Name, nil
	})

	assertStopsCleanly(t, c)
}

func TestInstanceTypesAreReadByKarpenter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instance-types.json")
	if err := writeInstanceTypes(path, DefaultInstanceTypes()); err != nil {
		t.Fatal(err)
	}
	ctx := kwokoptions.ToContext(t.Context(), &kwokoptions.Options{InstanceTypesFilePath: path})
	types, err := kwokcloudprovider.ConstructInstanceTypes(ctx)
	if err != nil {
		t.Fatalf("Karpenter's KWOK provider cannot read the file: %v", err)
	}
	if len(types) != len(DefaultInstanceTypes()) {
		t.Fatalf("got %d instance types, want %d", len(types), len(DefaultInstanceTypes()))
	}

	// The same checks Karpenter's scheduler makes for a NodePool requiring > 100 GB of NVMe.
	reqs := scheduling.NewNodeSelectorRequirementsWithMinValues(karpv1.NodeSelectorRequirementWithMinValues{
		Key: LabelInstanceLocalNVMe, Operator: corev1.NodeSelectorOpGt, Values: []string{"100"},
	})
	want := map[string]bool{}
	for _, it := range DefaultInstanceTypes() {
		want[it.Name] = it.NVMeGB > 100
	}
	for _, it := range types {
		got := it.Requirements.Intersects(reqs) == nil && it.Offerings.Available().HasCompatible(reqs)
		if got != want[it.Name] {
			t.Errorf("%s: compatible with %s Gt 100 = %v, want %v", it.Name, LabelInstanceLocalNVMe, got, want[it.Name])
		}
		if n := len(it.Offerings); n != 2*len(Zones) {
			t.Errorf("%s: %d offerings, want spot and on-demand in %d zones", it.Name, n, len(Zones))
		}
	}
}

func TestCRDs(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, crd := range crds {
		names = append(names, crd.Name)
	}
	for _, want := range []string{
		"ec2nodeclasses.karpenter.k8s.aws", "nodepools.karpenter.sh", "nodeclaims.karpenter.sh",
		"nodeoverlays.karpenter.sh", "capacitybuffers.autoscaling.x-k8s.io", "kwoknodeclasses.karpenter.kwok.sh",
		"volumesnapshots.snapshot.storage.k8s.io", "volumesnapshotcontents.snapshot.storage.k8s.io",
		"volumesnapshotclasses.snapshot.storage.k8s.io",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("CRDs() lacks %s (has %v)", want, names)
		}
	}
	if len(names) != 9 {
		t.Errorf("CRDs() returned %d CRDs, want 9: %v", len(names), names)
	}
}

// startCluster starts a cluster whose work dir (and logs) live in the test's temp dir; on
// failure the tail of every log is printed before they are removed.
func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.WorkDir = t.TempDir()
	opts.Log = testLog{t}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping cluster: %v", err)
		}
	})
	return c
}

func assertStopsCleanly(t *testing.T, c *Cluster) {
	t.Helper()
	pids := c.PIDs()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for name, pid := range pids {
		if alive(pid) {
			t.Errorf("%s (pid %d) still running after Stop", name, pid)
		}
	}
}

func runnerPod(name, pool string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{poolLabel: pool},
			Tolerations:  []corev1.Toleration{{Key: runnerTaint, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule}},
			Containers: []corev1.Container{{
				Name:  "job",
				Image: "registry.invalid/job:latest", // never pulled: kwok has no kubelet
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("1"),
					corev1.ResourceMemory: resource.MustParse("1Gi"),
				}},
			}},
		},
	}
}

func mustCreate(t *testing.T, c *Cluster, obj client.Object) {
	t.Helper()
	if err := c.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func countNodeClaims(ctx context.Context, c *Cluster, pool string) int {
	claims := &karpv1.NodeClaimList{}
	if err := c.Client.List(ctx, claims, client.MatchingLabels{karpv1.NodePoolLabelKey: pool}); err != nil {
		return -1
	}
	return len(claims.Items)
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// eventually polls cond every half second until it holds; errors are remembered and reported
// only on timeout, as the state may still be converging.
func eventually(t *testing.T, c *Cluster, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v); logs in %s", pollTimeout, what, last, filepath.Join(c.WorkDir, "logs"))
}

func dumpLogs(t *testing.T, c *Cluster) {
	entries, _ := os.ReadDir(filepath.Join(c.WorkDir, "logs"))
	for _, e := range entries {
		t.Logf("--- %s (last lines)%s", e.Name(), logTail(filepath.Join(c.WorkDir, "logs", e.Name()), 40))
	}
	t.Logf("--- Events%s", eventLog(c))
}

// eventLog lists the cluster's Events in time order, one per line: who did what to which
// object (the scheduler's bindings, Karpenter's disruptions and evictions, the kubelet's
// rejections) outlives the pods and nodes it was about.
func eventLog(c *Cluster) string {
	// The test's context is done by the time its cleanups run.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list := &corev1.EventList{}
	if err := c.Client.List(ctx, list); err != nil {
		return "\n    listing Events: " + err.Error()
	}
	slices.SortStableFunc(list.Items, func(a, b corev1.Event) int {
		return status.EventTime(&a).Compare(status.EventTime(&b))
	})
	var b strings.Builder
	for _, e := range list.Items {
		src := e.Source.Component
		if src == "" {
			src = e.ReportingController
		}
		fmt.Fprintf(&b, "\n    %s %s %s/%s %s (%s): %s", status.EventTime(&e).Format("15:04:05.000"), e.Type,
			e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, src, e.Message)
	}
	return b.String()
}

// testLog sends Start's progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
