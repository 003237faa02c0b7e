package scaling_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
)

// The suite runs the whole manager (pools + scaling controllers) against a real etcd +
// kube-apiserver with the real Karpenter CRDs, so every headroom Deployment, PriorityClass and
// NodePool budget the scaling controller causes is judged by the API server itself. There is
// no scheduler, kubelet or controller-manager: tests create Nodes and bound Pods themselves.
var (
	restConfig *rest.Config
	kube       client.Client
)

// testLabel marks the Nodes the tests create, so cleanup finds them.
const testLabel = "scaling.test.warmpool.io/node"

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, func(api *cluster.APIServer) { restConfig, kube = api.Config, api.Client }))
}

// ciSource is a queue source the manager never polls (no runner is wired in operator.New):
// it only declares the source, so the tracker knows the pool's data is unknown until a test
// records into it.
const ciSource = `queue: {sources: [{name: ci, prometheus: {url: "http://127.0.0.1:1", query: q}}]}`

// poolYAML renders one pool with the suite's NVMe and engine; each line is a pool field.
func poolYAML(name string, lines ...string) string {
	return operatortest.Pool(name, append([]string{"nvme: {minSizeGB: 100}", "engine: {version: v0.19.7}"}, lines...)...)
}

var (
	configYAML = operatortest.Config
	poolName   = operatortest.Unique
	eventually = operatortest.Eventually
)

// env is one test's namespace, ConfigMap and running manager (operatortest.Env).
type env struct{ *operatortest.Env }

// newEnv creates a namespace and a ConfigMap holding cfg, and starts the manager on them.
// Each test uses its own pool names, so Events (on cluster-scoped NodePools) and metric series
// (global registry) of earlier tests never match.
func newEnv(t testing.TB, cfg string) *env {
	t.Helper()
	return newEnvWith(t, cfg, nil, nil)
}

// newEnvWith is newEnv with the manager's options adjusted by options (on every start), and
// setup run in the namespace before the manager first starts (Secrets the config refers to).
func newEnvWith(t testing.TB, cfg string, options func(*operator.Options), setup func(namespace string)) *env {
	t.Helper()
	return &env{operatortest.NewEnv(t, restConfig, kube, cfg, operatortest.EnvOptions{
		NamespacePrefix: "warmpool-scaling-", Options: options, Setup: setup, Cleanup: cleanupCluster,
	})}
}

// record stores a reading of the pool's ci source, as a poller would.
func (e *env) record(pool string, c queue.Counts, err error) {
	e.Mgr.Tracker.Record(queue.Key{Pool: pool, Source: "ci"}, c, err)
}

// headroom returns the pool's placeholder Deployment as the API server stores it.
func (e *env) headroom(pool string) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	err := kube.Get(e.T.Context(), client.ObjectKey{Namespace: e.Namespace, Name: nodepools.HeadroomName(pool)}, d)
	return d, err
}

// waitReplicas waits for the pool's headroom Deployment to ask for exactly n replicas.
func (e *env) waitReplicas(pool string, n int32) *appsv1.Deployment {
	e.T.Helper()
	var d *appsv1.Deployment
	eventually(e.T, fmt.Sprintf("headroom of pool %s at %d replicas", pool, n), func() error {
		var err error
		if d, err = e.headroom(pool); err != nil {
			return err
		}
		if d.Spec.Replicas == nil {
			return fmt.Errorf("no replicas")
		}
		if *d.Spec.Replicas != n {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
	return d
}

// replicas reads the pool's headroom replicas now.
func (e *env) replicas(pool string) int32 {
	e.T.Helper()
	d, err := e.headroom(pool)
	if err != nil {
		e.T.Fatal(err)
	}
	if d.Spec.Replicas == nil {
		e.T.Fatalf("headroom of pool %s has no replicas", pool)
	}
	return *d.Spec.Replicas
}

// nodePool returns the pool's NodePool.
func nodePool(t testing.TB, pool string) (*karpv1.NodePool, error) {
	np := &karpv1.NodePool{}
	err := kube.Get(t.Context(), client.ObjectKey{Name: nodepools.Name(pool)}, np)
	return np, err
}

// poolEvent is one core/v1 Event on a pool's NodePool.
type poolEvent struct {
	Reason, Message string
	Count           int32
}

// events lists the Events of reason recorded on the pool's NodePool (in any namespace: the
// recorder files Events on cluster-scoped objects under "default").
func events(t testing.TB, pool, reason string) []poolEvent {
	t.Helper()
	list := &corev1.EventList{}
	if err := kube.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	var out []poolEvent
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == "NodePool" && ev.InvolvedObject.Name == nodepools.Name(pool) && ev.Reason == reason {
			out = append(out, poolEvent{Reason: ev.Reason, Message: ev.Message, Count: max(ev.Count, 1)})
		}
	}
	return out
}

// eventCount is how many times an Event of reason was recorded on the pool's NodePool.
func eventCount(t testing.TB, pool, reason string) int {
	n := 0
	for _, ev := range events(t, pool, reason) {
		n += int(ev.Count)
	}
	return n
}

// waitEvent waits for an Event of reason on the pool's NodePool whose message contains every
// fragment, and returns the message.
func waitEvent(t testing.TB, pool, reason string, fragments ...string) string {
	t.Helper()
	var found string
	eventually(t, "event "+reason+" on "+nodepools.Name(pool), func() error {
		evs := events(t, pool, reason)
		for _, ev := range evs {
			if operatortest.ContainsAll(ev.Message, fragments...) {
				found = ev.Message
				return nil
			}
		}
		return fmt.Errorf("no %s event containing %q; have %+v", reason, fragments, evs)
	})
	return found
}

// metric reads the gauge or counter series of name with exactly these labels from the registry
// the manager serves on /metrics.
var metric = operatortest.Metric

// poolMetric reads a per-pool gauge (warmpool_desired_nodes, _headroom_pods, _pool_busy).
func poolMetric(t testing.TB, name, pool string) (float64, bool) {
	return metric(t, name, map[string]string{"pool": pool})
}

// decisions reads warmpool_scaling_decisions_total for one pool, direction and reason (0 when
// the series does not exist).
func decisions(t testing.TB, pool, direction, reason string) float64 {
	v, _ := metric(t, "warmpool_scaling_decisions_total", map[string]string{"pool": pool, "direction": direction, "reason": reason})
	return v
}

// waitGauge waits for a per-pool gauge to read want.
func waitGauge(t testing.TB, name, pool string, want float64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s{pool=%q} = %v", name, pool, want), func() error {
		v, ok := poolMetric(t, name, pool)
		if !ok {
			return fmt.Errorf("no series")
		}
		if v != want {
			return fmt.Errorf("value %v", v)
		}
		return nil
	})
}

// newNode creates a Node of the pool and marks it Ready through the status subresource, as a
// kubelet would. Pods meant to count on it should exist first: the scaling controller watches
// Nodes, not Pods.
func newNode(t testing.TB, name, pool string) *corev1.Node {
	t.Helper()
	return newNodeWith(t, name, pool, nil)
}

// newNodeWith is newNode with the given allocatable (and capacity) in its status.
func newNodeWith(t testing.TB, name, pool string, allocatable corev1.ResourceList) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		nodepools.LabelPool: pool, corev1.LabelHostname: name, testLabel: "true",
	}}}
	if err := kube.Create(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kube.Delete(context.Background(), n); client.IgnoreNotFound(err) != nil {
			t.Errorf("cleanup Node %s: %v", name, err)
		}
	})
	n.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	n.Status.Allocatable, n.Status.Capacity = allocatable, allocatable
	if err := kube.Status().Update(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

// newPod creates a pod bound to node (spec.nodeName, as the scheduler would bind it).
func (e *env) newPod(name, node string, mutate func(*corev1.Pod)) *corev1.Pod {
	e.T.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "c", Image: nodepools.PauseImage}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	status := p.Status
	if err := kube.Create(e.T.Context(), p); err != nil {
		e.T.Fatal(err)
	}
	if status.Phase != "" {
		p.Status = status
		if err := kube.Status().Update(e.T.Context(), p); err != nil {
			e.T.Fatal(err)
		}
	}
	return p
}

// cleanupCluster deletes the cluster-scoped objects a test left behind, so the next test
// starts clean: NodePools and node classes, the headroom PriorityClass, and the test's Nodes.
// It uses its own context: it runs in cleanup, after t.Context() is cancelled.
func cleanupCluster(t testing.TB) {
	ctx := context.Background()
	for _, gvk := range []schema.GroupVersionKind{nodepools.NodePoolGV.WithKind("NodePoolList"), nodepools.EC2NodeClassGV.WithKind("EC2NodeClassList")} {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk)
		if err := kube.List(ctx, list, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
			t.Errorf("cleanup: listing %s: %v", gvk.Kind, err)
			continue
		}
		for i := range list.Items {
			if err := kube.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
				t.Errorf("cleanup %s %s: %v", list.Items[i].GetKind(), list.Items[i].GetName(), err)
			}
		}
	}
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: nodepools.HeadroomPriorityClass}}
	if err := kube.Delete(ctx, pc); client.IgnoreNotFound(err) != nil {
		t.Errorf("cleanup PriorityClass: %v", err)
	}
	if err := kube.DeleteAllOf(ctx, &corev1.Node{}, client.MatchingLabels{testLabel: "true"}); err != nil {
		t.Errorf("cleanup Nodes: %v", err)
	}
}
