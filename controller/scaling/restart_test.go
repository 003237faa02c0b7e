package scaling_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
)

// waitBusyAnnotation waits for the pool's NodePool to record busy as want.
func waitBusyAnnotation(t testing.TB, pool, want string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s=%s on %s", state.AnnotationBusy, want, nodepools.Name(pool)), func() error {
		np, err := nodePool(t, pool)
		if err != nil {
			return err
		}
		if got := np.Annotations[state.AnnotationBusy]; got != want {
			return fmt.Errorf("annotation %q", got)
		}
		return nil
	})
}

// budgetWatch records the budgets of every version of one NodePool the API server stores,
// from a resourceVersion on: a flip, however brief, cannot hide between two polls.
type budgetWatch struct {
	w      watch.Interface
	seen   chan *karpv1.NodePool
	cancel context.CancelFunc
}

func watchBudgets(t testing.TB, pool, fromRV string) *budgetWatch {
	t.Helper()
	dyn, err := dynamic.NewForConfig(restConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := dyn.Resource(nodepools.NodePoolGV.WithResource("nodepools")).Watch(ctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + nodepools.Name(pool), ResourceVersion: fromRV,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	bw := &budgetWatch{w: w, seen: make(chan *karpv1.NodePool, 1000), cancel: cancel}
	go func() {
		defer close(bw.seen)
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			np := &karpv1.NodePool{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, np); err != nil {
				t.Errorf("decoding NodePool: %v", err)
				continue
			}
			bw.seen <- np
		}
	}()
	t.Cleanup(func() { bw.stop() })
	return bw
}

func (bw *budgetWatch) stop() {
	bw.cancel()
	bw.w.Stop()
}

// TestRestartKeepsBudgetsBlocking: a busy pool's NodePool keeps blocking consolidation across
// a manager restart, while the new manager has no queue data yet (its source has not
// answered), including through a re-render of the NodePool; once data says idle, the
// configured budgets come back.
func TestRestartKeepsBudgetsBlocking(t *testing.T) {
	pool := poolName("restart-busy")
	cfg := func(weight int) string {
		return configYAML(poolYAML(pool, ciSource, fmt.Sprintf("weight: %d", weight), "scaling: {jobsPerNode: 1, warmMinimum: 1}"))
	}
	e := newEnv(t, cfg(10))
	e.record(pool, queue.Counts{Queued: 2}, nil)
	waitBudgets(t, pool, withBlocking(defaultBudgets))
	waitBusyAnnotation(t, pool, "true")
	np, err := nodePool(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	bw := watchBudgets(t, pool, np.ResourceVersion)
	// The headroom (and the state recorded with it) is applied after the NodePool: a restart
	// before it lands would resume from nothing actuated.
	e.waitReplicas(pool, 2)

	e.Stop()
	e.Start()
	// The new manager's first evaluation tells: it resumes at 2 and, without data, holds them.
	waitEvent(t, pool, scaling.ReasonResumed, "resumed at desired nodes 2", "now 2", "known: false")
	if _, known := e.Mgr.Tracker.Pool(pool); known {
		t.Fatal("the new manager knows the queue already; the test would prove nothing")
	}
	if !e.Mgr.State.Busy(pool) {
		t.Errorf("Busy(%s) = false after the restart with no queue data", pool)
	}
	// Make the new manager render the NodePool again, busy state and all.
	e.SetConfig(cfg(20))
	eventually(t, "NodePool re-rendered by the new manager", func() error {
		np, err := nodePool(t, pool)
		if err != nil {
			return err
		}
		if np.Spec.Weight == nil || *np.Spec.Weight != 20 {
			return fmt.Errorf("weight %v", np.Spec.Weight)
		}
		return nil
	})
	checkBudgets(t, pool, withBlocking(defaultBudgets))

	// Every version stored since the restart began blocked consolidation.
	bw.stop()
	versions := 0
	for np := range bw.seen {
		versions++
		if got := np.Spec.Disruption.Budgets; !equality.Semantic.DeepEqual(got, withBlocking(defaultBudgets)) {
			t.Errorf("NodePool version %s (weight %d) had budgets %+v across the restart", np.ResourceVersion, ptr.Deref(np.Spec.Weight, 0), got)
		}
	}
	if versions == 0 {
		t.Error("the watch saw no NodePool version: the re-render was not observed")
	}

	// Fresh data: idle. The budgets open and the annotation follows.
	e.record(pool, queue.Counts{}, nil)
	waitBudgets(t, pool, defaultBudgets)
	waitBusyAnnotation(t, pool, "false")
}

// TestBusyAnnotationOwnedApart: the busy annotation survives the pools controller's applies
// (it is owned by its own field manager) and is the only field that manager owns.
func TestBusyAnnotationOwnedApart(t *testing.T) {
	pool := poolName("annotation")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.record(pool, queue.Counts{Running: 1}, nil)
	waitBusyAnnotation(t, pool, "true")
	// A config edit re-applies the NodePool as the pools controller's manager.
	e.SetConfig(configYAML(poolYAML(pool, ciSource, "weight: 30", "scaling: {jobsPerNode: 1}")))
	eventually(t, "weight applied", func() error {
		np, err := nodePool(t, pool)
		if err != nil {
			return err
		}
		if np.Spec.Weight == nil || *np.Spec.Weight != 30 {
			return fmt.Errorf("weight %v", np.Spec.Weight)
		}
		return nil
	})
	np, err := nodePool(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := np.Annotations[state.AnnotationBusy]; got != "true" {
		t.Errorf("annotation %q after the pools controller applied, want true", got)
	}
	for _, f := range np.ManagedFields {
		if f.Manager != scaling.BusyFieldManager {
			continue
		}
		if f.FieldsV1 == nil || string(f.FieldsV1.Raw) != `{"f:metadata":{"f:annotations":{"f:warmpool.io/busy":{}}}}` {
			t.Errorf("%s owns %s, want the busy annotation only", f.Manager, f.FieldsV1)
		}
	}
}

// TestRunnerPodUpdatesHeadroomAtOnce: a runner pod starting on an existing node of the pool
// (and finishing) changes the headroom through the pod watch. The periodic re-evaluation is
// set to an hour, so nothing else could make the change within the test.
func TestRunnerPodUpdatesHeadroomAtOnce(t *testing.T) {
	pool := poolName("podwatch")
	e := newEnvWith(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")),
		func(o *operator.Options) { o.ScalingInterval = time.Hour }, nil)
	node := pool + "-1"
	newNode(t, node, pool)
	e.record(pool, queue.Counts{Queued: 3}, nil)
	e.waitReplicas(pool, 3)

	// A runner pod in another namespace, bound to the pool's node by the scheduler.
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "runners-"}}
	if err := kube.Create(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	runner := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: other.Name, Name: "runner"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: nodepools.PauseImage}}},
	}
	if err := kube.Create(t.Context(), runner); err != nil {
		t.Fatal(err)
	}
	// Bind it as the scheduler does: the pods/binding subresource sets spec.nodeName.
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: other.Name, Name: "runner"}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := kube.SubResource("binding").Create(t.Context(), runner, binding); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(pool, 2)
	waitGauge(t, headroomGauge, pool, 2)

	// It finishes: the node is free again.
	if err := kube.Get(t.Context(), client.ObjectKeyFromObject(runner), runner); err != nil {
		t.Fatal(err)
	}
	runner.Status.Phase = corev1.PodSucceeded
	if err := kube.Status().Update(t.Context(), runner); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(pool, 3)
}

// restart stops the manager and starts a new one, and waits for the new one to resume the
// pool at desired nodes (its first evaluation's Event).
func (e *env) restart(pool string, desired int) string {
	e.T.Helper()
	before := eventCount(e.T, pool, scaling.ReasonResumed)
	e.Stop()
	e.Start()
	eventually(e.T, "pool resumed by the new manager", func() error {
		if n := eventCount(e.T, pool, scaling.ReasonResumed); n <= before {
			return fmt.Errorf("%d %s events", n, scaling.ReasonResumed)
		}
		return nil
	})
	return waitEvent(e.T, pool, scaling.ReasonResumed, fmt.Sprintf("resumed at desired nodes %d from the state recorded on Deployment", desired))
}

// headroomGeneration is the generation of the pool's headroom Deployment: any change of its
// spec (replicas) bumps it, so an unchanged generation proves no placeholder came or went.
func (e *env) headroomGeneration(pool string) int64 {
	e.T.Helper()
	d, err := e.headroom(pool)
	if err != nil {
		e.T.Fatal(err)
	}
	return d.Generation
}

// checkBudgetsSince fails for every version of the pool's NodePool stored since the watch
// began whose budgets are not want.
func checkBudgetsSince(t testing.TB, bw *budgetWatch, want []karpv1.Budget) {
	t.Helper()
	bw.stop()
	for np := range bw.seen {
		if got := np.Spec.Disruption.Budgets; !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("NodePool version %s had budgets %+v across the restart, want %+v", np.ResourceVersion, got, want)
		}
	}
}

// TestRestartWithoutHeadroomPinsNothing: a pool idle at no headroom, with two idle nodes, is
// resumed as it was: no placeholder appears on the nodes and nothing blocks their
// consolidation, neither while the new manager has no queue data nor once it has; and its
// NodePool is never written a busy state.
func TestRestartWithoutHeadroomPinsNothing(t *testing.T) {
	pool := poolName("restart-idle")
	newNode(t, pool+"-1", pool)
	newNode(t, pool+"-2", pool)
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.record(pool, queue.Counts{}, nil)
	e.waitReplicas(pool, 0)
	gen := e.headroomGeneration(pool)
	np, err := nodePool(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	bw := watchBudgets(t, pool, np.ResourceVersion)

	msg := e.restart(pool, 0)
	if !strings.Contains(msg, "now 0") {
		t.Errorf("first evaluation after the restart: %q, want desired 0", msg)
	}
	if e.Mgr.State.Busy(pool) {
		t.Errorf("Busy(%s) = true after the restart of an idle pool", pool)
	}
	// Fresh data (idle), then a third node forces an evaluation that has it.
	e.record(pool, queue.Counts{}, nil)
	newNode(t, pool+"-3", pool)
	waitGauge(t, nodesGauge, pool, 3)
	checkGauge(t, headroomGauge, pool, 0)
	if g := e.headroomGeneration(pool); g != gen || e.replicas(pool) != 0 {
		t.Errorf("headroom changed across the restart: generation %d -> %d, replicas %d", gen, g, e.replicas(pool))
	}
	checkBudgetsSince(t, bw, defaultBudgets)
	if n := eventCount(t, pool, scaling.ReasonScaledUp); n != 0 {
		t.Errorf("%d %s events for a pool that never needed a node", n, scaling.ReasonScaledUp)
	}
	// A NodePool without the annotation reads as idle: a pool never busy is not written.
	if np, err := nodePool(t, pool); err != nil {
		t.Fatal(err)
	} else if v, ok := np.Annotations[state.AnnotationBusy]; ok {
		t.Errorf("%s=%q written on the NodePool of a pool that was never busy", state.AnnotationBusy, v)
	}
}

// TestRestartKeepsHeadroomOfBootingNodes: a pool at 3 placeholders whose nodes have not booted
// yet (no Node exists) stays at 3 across a restart: without queue data the new manager holds
// what was actuated, never the 0 nodes it sees, so the placeholders do not go and come back.
func TestRestartKeepsHeadroomOfBootingNodes(t *testing.T) {
	pool := poolName("restart-booting")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.record(pool, queue.Counts{Queued: 3}, nil)
	e.waitReplicas(pool, 3)
	gen := e.headroomGeneration(pool)
	applies := deploymentApplies(t)

	msg := e.restart(pool, 3)
	if !strings.Contains(msg, "now 3") || !strings.Contains(msg, "known: false") {
		t.Errorf("first evaluation after the restart: %q, want 3 held without data", msg)
	}
	// The data comes back unchanged; the first node boots and forces an evaluation with it.
	e.record(pool, queue.Counts{Queued: 3}, nil)
	newNode(t, pool+"-1", pool)
	waitGauge(t, nodesGauge, pool, 1)
	checkGauge(t, headroomGauge, pool, 3)
	if g := e.headroomGeneration(pool); g != gen || e.replicas(pool) != 3 {
		t.Errorf("headroom changed across the restart: generation %d -> %d, replicas %d", gen, g, e.replicas(pool))
	}
	// The new process finds the Deployment applied from the rendering it would apply.
	if n := deploymentApplies(t) - applies; n != 0 {
		t.Errorf("the restarted controller sent %v applies of an unchanged headroom Deployment", n)
	}
	if n := eventCount(t, pool, scaling.ReasonScaledDown); n != 0 {
		t.Errorf("%d %s events across the restart", n, scaling.ReasonScaledDown)
	}
}

// deploymentApplies counts the API server's server-side applies of Deployments: only the
// scaling controller's headroom applies them.
func deploymentApplies(t *testing.T) float64 {
	t.Helper()
	n, err := cluster.Requests(t.Context(), restConfig, map[string]string{"verb": "APPLY", "resource": "deployments"})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestartPoolWithoutSourceIsNotHeld: a pool with no queue source and no warm minimum, with
// idle nodes, gets no placeholder after a restart, not even for a stabilization window.
func TestRestartPoolWithoutSourceIsNotHeld(t *testing.T) {
	pool := poolName("restart-nosource")
	newNode(t, pool+"-1", pool)
	newNode(t, pool+"-2", pool)
	e := newEnv(t, configYAML(poolYAML(pool, "scaling: {jobsPerNode: 1, scaleDownStabilization: 1h}")))
	e.waitReplicas(pool, 0)
	gen := e.headroomGeneration(pool)
	np, err := nodePool(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	bw := watchBudgets(t, pool, np.ResourceVersion)

	for range 2 { // a crash loop
		if msg := e.restart(pool, 0); !strings.Contains(msg, "now 0") {
			t.Errorf("first evaluation after the restart: %q, want 0", msg)
		}
	}
	newNode(t, pool+"-3", pool)
	waitGauge(t, nodesGauge, pool, 3)
	checkGauge(t, headroomGauge, pool, 0)
	checkGauge(t, desiredGauge, pool, 0)
	if g := e.headroomGeneration(pool); g != gen || e.replicas(pool) != 0 {
		t.Errorf("headroom changed across the restarts: generation %d -> %d, replicas %d", gen, g, e.replicas(pool))
	}
	checkBudgetsSince(t, bw, defaultBudgets)
}
