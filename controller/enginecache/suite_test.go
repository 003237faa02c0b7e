package enginecache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// The suite runs the whole manager against a real etcd + kube-apiserver with the real Karpenter
// and VolumeSnapshot CRDs. Nothing else runs: the tests play Karpenter (taints, conditions,
// deletions), the kubelet (pod status, evictions), the Job controller (a Job's pod) and the CSI
// snapshotter (readyToUse), by writing exactly the objects those would write. Deadlines run on
// a fake clock. Tests of the protocol's steps call the reconcilers directly instead
// (expect_test.go: newDirect); those that need a manager (watches, restarts) use newEnv.
var (
	restConfig *rest.Config
	kube       client.Client
)

// testLabel marks the cluster-scoped objects the tests create, so cleanup finds them.
const testLabel = "cache.test.warmpool.io/object"

const engineVersion = "v0.19.7"

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, func(api *cluster.APIServer) {
		restConfig, kube = api.Config, api.Client
		createStorageClasses(api.Client) // storage_test.go: the "sim" classes poolYAML names
	}))
}

// poolYAML is a cache-enabled pool; extra lines are pool fields.
func poolYAML(name string, extra ...string) string {
	return operatortest.Pool(name, append([]string{
		"architectures: [amd64, arm64]",
		"nvme: {minSizeGB: 100}",
		"engine: {version: " + engineVersion + "}",
		"cache: {enabled: true, storageClassName: sim, snapshotClassName: sim-snap, size: 10Gi, retention: {keep: 2, maxAge: 168h}}",
	}, extra...)...)
}

var (
	configHeader = operatortest.ConfigHeader
	unique       = operatortest.Unique
	eventually   = operatortest.Eventually
)

// consistently checks cond stays nil for a second (the controller had every chance to act).
func consistently(t testing.TB, what string, cond func() error) {
	t.Helper()
	operatortest.Consistently(t, what, time.Second, cond)
}

// env is one test's namespace, config and running manager (operatortest.Env) on a fake clock.
type env struct {
	*operatortest.Env
	clk *clocktesting.FakeClock
}

// newEnv starts a manager on a config of pools, with the kubelet's part for guard pods played.
func newEnv(t testing.TB, pools ...string) *env {
	t.Helper()
	e := &env{clk: clocktesting.NewFakeClock(time.Now())}
	e.Env = operatortest.NewEnv(t, restConfig, kube, operatortest.Config(pools...), operatortest.EnvOptions{
		NamespacePrefix: "warmpool-cache-",
		Options: func(o *operator.Options) {
			o.WebhookAddr, o.CopierImage, o.GuardImage, o.Clock = "0", "copier:test", "pause:test", e.clk
		},
		Cleanup: cleanupCluster,
	})
	e.playGuards() // guard_test.go: the kubelet runs guard pods
	return e
}

// --- playing Karpenter and the kubelet -------------------------------------------------------

// newNode creates a Ready Node of pool, with the given arch and taints, held by Karpenter's
// termination finalizer so a deletion leaves it terminating, as on a real cluster.
func newNode(t testing.TB, name, pool, arch string, taints ...corev1.Taint) *corev1.Node {
	t.Helper()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{karpv1.TerminationFinalizer}, Labels: map[string]string{
			nodepools.LabelPool: pool, corev1.LabelArchStable: arch, corev1.LabelHostname: name, testLabel: "true",
		}},
		Spec: corev1.NodeSpec{Taints: taints},
	}
	if err := kube.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	if err := kube.Status().Update(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	registerCSIDriver(t, name) // as the CSI node plugin does on a real node (storage_test.go)
	return n
}

// newNodeClaim creates the NodeClaim of a node, as Karpenter would (with its finalizer).
func newNodeClaim(t testing.TB, node, pool string, mutate func(*karpv1.NodeClaim)) *karpv1.NodeClaim {
	t.Helper()
	nc := &karpv1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: node, Finalizers: []string{karpv1.TerminationFinalizer}, Labels: map[string]string{
			karpv1.NodePoolLabelKey: nodepools.Name(pool), karpv1.CapacityTypeLabelKey: karpv1.CapacityTypeOnDemand, testLabel: "true",
		}},
		Spec: karpv1.NodeClaimSpec{
			NodeClassRef: &karpv1.NodeClassReference{Group: "karpenter.k8s.aws", Kind: "EC2NodeClass", Name: nodepools.Name(pool)},
			Requirements: []karpv1.NodeSelectorRequirementWithMinValues{{Key: corev1.LabelArchStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64"}}},
		},
	}
	if mutate != nil {
		mutate(nc)
	}
	if err := kube.Create(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
	nc.Status.NodeName = node
	nc.Status.ProviderID = "aws:///us-west-2a/i-" + node
	if err := kube.Status().Update(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
	return nc
}

// markDisrupted does what Karpenter's disruption queue does before deleting: taint the node
// and set the DisruptionReason condition.
func markDisrupted(t testing.TB, node string) {
	t.Helper()
	update(t, &corev1.Node{}, node, func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, karpv1.DisruptedNoScheduleTaint) })
	nc := &karpv1.NodeClaim{}
	get(t, node, "", nc)
	nc.StatusConditions().SetTrueWithReason(karpv1.ConditionTypeDisruptionReason, string(karpv1.DisruptionReasonEmpty), "Empty")
	if err := kube.Status().Update(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
}

// unmarkDisrupted is Karpenter withdrawing a failed disruption command.
func unmarkDisrupted(t testing.TB, node string) {
	t.Helper()
	update(t, &corev1.Node{}, node, func(n *corev1.Node) {
		var kept []corev1.Taint
		for _, tt := range n.Spec.Taints {
			if tt.Key != karpv1.DisruptedTaintKey {
				kept = append(kept, tt)
			}
		}
		n.Spec.Taints = kept
	})
	nc := &karpv1.NodeClaim{}
	get(t, node, "", nc)
	_ = nc.StatusConditions().Clear(karpv1.ConditionTypeDisruptionReason)
	if err := kube.Status().Update(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
}

// deleteNodeClaim commits the disruption: the NodeClaim is deleted (its finalizer keeps it).
func deleteNodeClaim(t testing.TB, node string) {
	t.Helper()
	if err := kube.Delete(t.Context(), &karpv1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
}

// update reads obj by name, applies mutate and writes it back, retrying on conflicts.
func update[T client.Object](t testing.TB, obj T, name string, mutate func(T)) {
	t.Helper()
	eventually(t, "updating "+name, func() error {
		if err := kube.Get(t.Context(), types.NamespacedName{Name: name, Namespace: obj.GetNamespace()}, obj); err != nil {
			return err
		}
		mutate(obj)
		return kube.Update(t.Context(), obj)
	})
}

func get(t testing.TB, name, namespace string, obj client.Object) {
	t.Helper()
	if err := kube.Get(t.Context(), types.NamespacedName{Name: name, Namespace: namespace}, obj); err != nil {
		t.Fatal(err)
	}
}

// exists reports whether the object exists (and is not being deleted).
func exists(t testing.TB, name, namespace string, obj client.Object) bool {
	t.Helper()
	err := kube.Get(t.Context(), types.NamespacedName{Name: name, Namespace: namespace}, obj)
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj.GetDeletionTimestamp() == nil
}

func (e *env) waitExists(name string, obj client.Object) {
	e.T.Helper()
	eventually(e.T, fmt.Sprintf("%T %s exists", obj, name), func() error {
		if !exists(e.T, name, e.Namespace, obj) {
			return fmt.Errorf("not found")
		}
		return nil
	})
}

func (e *env) waitGone(name string, obj client.Object) {
	e.T.Helper()
	eventually(e.T, fmt.Sprintf("%T %s gone", obj, name), func() error {
		if exists(e.T, name, e.Namespace, obj) {
			return fmt.Errorf("still there")
		}
		return nil
	})
}

// touch changes a Node label so the controllers look at the node again (after a clock step:
// a fake clock fires no requeue).
func touch(t testing.TB, node string) {
	t.Helper()
	update(t, &corev1.Node{}, node, func(n *corev1.Node) { n.Labels["cache.test.warmpool.io/touch"] = fmt.Sprint(time.Now().UnixNano()) })
}

// newEnginePod creates the node's running engine pod, as the DaemonSet controller would.
func (e *env) newEnginePod(node, pool string) *corev1.Pod {
	e.T.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: "engine-" + node, Labels: map[string]string{
			volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: pool, volumes.LabelEngineVersion: engineVersion,
		}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: volumes.EngineContainer, Image: "engine"}}},
	}
	if err := kube.Create(e.T.Context(), p); err != nil {
		e.T.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if err := kube.Status().Update(e.T.Context(), p); err != nil {
		e.T.Fatal(err)
	}
	return p
}

// committedAndStopped makes a node of pool with its NodeClaim and running engine, commits its
// disruption, and plays the kubelet's part of the engine's eviction: the save goes on to its
// volume and copy Job.
func (e *env) committedAndStopped(node, pool string) {
	e.T.Helper()
	newNode(e.T, node, pool, "amd64")
	newNodeClaim(e.T, node, pool, nil)
	e.newEnginePod(node, pool)
	commit(e.T, node)
	e.finishEviction(node)
}

// finishEviction plays the kubelet once the engine was evicted: the engine exits and the pod goes.
func (e *env) finishEviction(node string) {
	e.T.Helper()
	name := "engine-" + node
	eventually(e.T, "engine pod evicted", func() error {
		p := &corev1.Pod{}
		if err := kube.Get(e.T.Context(), types.NamespacedName{Namespace: e.Namespace, Name: name}, p); err != nil {
			return err
		}
		if p.DeletionTimestamp == nil {
			return fmt.Errorf("not evicted")
		}
		return nil
	})
	if err := kube.Delete(e.T.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name}}, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		e.T.Fatal(err)
	}
}

// runJob plays the Job controller and the kubelet: the Job's pod is created and terminates with
// the result as its termination message.
func (e *env) runJob(name string, exitCode int32, r volumes.JobResult) {
	e.T.Helper()
	job := &batchv1.Job{}
	e.waitExists(name, job)
	labels := map[string]string{batchv1.ControllerUidLabel: string(job.UID), batchv1.JobNameLabel: job.Name}
	for k, v := range job.Spec.Template.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name + "-pod", Labels: labels, Annotations: job.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}},
		Spec: job.Spec.Template.Spec,
	}
	if err := kube.Create(e.T.Context(), pod); err != nil {
		e.T.Fatal(err)
	}
	msg, err := json.Marshal(r)
	if err != nil {
		e.T.Fatal(err)
	}
	phase := corev1.PodSucceeded
	if exitCode != 0 {
		phase = corev1.PodFailed
	}
	pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{
		Name: volumes.CopierContainer, Image: "copier:test",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exitCode, Message: string(msg)}},
	}}}
	if err := kube.Status().Update(e.T.Context(), pod); err != nil {
		e.T.Fatal(err)
	}
}

// setSnapshotStatus plays the CSI snapshotter.
func (e *env) setSnapshotStatus(name string, ready bool, created time.Time) {
	e.T.Helper()
	eventually(e.T, "snapshot status of "+name, func() error {
		s := &snapshotv1.VolumeSnapshot{}
		if err := kube.Get(e.T.Context(), types.NamespacedName{Namespace: e.Namespace, Name: name}, s); err != nil {
			return err
		}
		s.Status = &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(ready), CreationTime: ptr.To(metav1.NewTime(created)), RestoreSize: ptr.To(resourceQuantity("20Gi"))}
		return kube.Status().Update(e.T.Context(), s)
	})
}

// --- Events and metrics ------------------------------------------------------------------------

// nodeEvents lists the notes of Events of reason on a Node.
func nodeEvents(t testing.TB, node, reason string) []string {
	t.Helper()
	list := &corev1.EventList{}
	if err := kube.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == "Node" && ev.InvolvedObject.Name == node && ev.Reason == reason {
			out = append(out, ev.Message)
		}
	}
	return out
}

// reportedOnce asserts a report was delivered exactly once: one Event of reason on the node and
// the metric series at 1.
func reportedOnce(t testing.TB, node, reason, name string, labels map[string]string) {
	t.Helper()
	if got := nodeEvents(t, node, reason); len(got) != 1 {
		t.Fatalf("%d %s events on node %s, want 1: %q", len(got), reason, node, got)
	}
	if v := metric(t, name, labels); v != 1 {
		t.Fatalf("%s%v = %v, want 1", name, labels, v)
	}
}

// waitNodeEvent waits for an Event of reason on the Node whose note contains every fragment.
func waitNodeEvent(t testing.TB, node, reason string, fragments ...string) string {
	t.Helper()
	var found string
	eventually(t, "event "+reason+" on node "+node, func() error {
		notes := nodeEvents(t, node, reason)
		for _, n := range notes {
			ok := true
			for _, f := range fragments {
				ok = ok && strings.Contains(n, f)
			}
			if ok {
				found = n
				return nil
			}
		}
		return fmt.Errorf("no %s event containing %q; have %q", reason, fragments, notes)
	})
	return found
}

// metric reads a counter or gauge series (0 when absent), or a histogram's sample count.
func metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := operatortest.Metric(t, name, labels)
	return v
}

func waitMetric(t testing.TB, name string, labels map[string]string, want float64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s%v = %v", name, labels, want), func() error {
		if v := metric(t, name, labels); v != want {
			return fmt.Errorf("value %v", v)
		}
		return nil
	})
}

// --- cleanup -----------------------------------------------------------------------------------

// cleanupCluster removes the cluster-scoped objects tests made (finalizers first, as Karpenter
// would) and the NodePools and node classes the managers applied.
func cleanupCluster(t testing.TB) {
	ctx := context.Background()
	nodes := &corev1.NodeList{}
	if err := kube.List(ctx, nodes, client.HasLabels{testLabel}); err == nil {
		for i := range nodes.Items {
			n := &nodes.Items[i]
			n.Finalizers = nil
			_ = kube.Update(ctx, n)
			_ = kube.Delete(ctx, n)
		}
	}
	cleanupStorage(ctx) // storage_test.go
	claims := &karpv1.NodeClaimList{}
	if err := kube.List(ctx, claims, client.HasLabels{testLabel}); err == nil {
		for i := range claims.Items {
			c := &claims.Items[i]
			c.Finalizers = nil
			_ = kube.Update(ctx, c)
			_ = kube.Delete(ctx, c)
		}
	}
	for _, gvk := range []schema.GroupVersionKind{nodepools.NodePoolGV.WithKind("NodePoolList"), nodepools.EC2NodeClassGV.WithKind("EC2NodeClassList")} {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk)
		if err := kube.List(ctx, list, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
			continue
		}
		for i := range list.Items {
			if err := kube.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
				t.Errorf("cleanup %s %s: %v", list.Items[i].GetKind(), list.Items[i].GetName(), err)
			}
		}
	}
}
