package scaling_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
)

const (
	desiredGauge  = "warmpool_desired_nodes"
	headroomGauge = "warmpool_headroom_pods"
	nodesGauge    = "warmpool_pool_nodes"
	busyGauge     = "warmpool_pool_busy"
)

// defaultBudgets are the budgets config defaulting gives a pool that configures none.
var defaultBudgets = []karpv1.Budget{{Nodes: "10%"}}

// withBlocking is the budgets of a busy pool: the blocking budget first, then the configured ones.
func withBlocking(configured []karpv1.Budget) []karpv1.Budget {
	return append([]karpv1.Budget{nodepools.BlockingBudget}, configured...)
}

// waitBudgets waits for the pool's NodePool to carry exactly these disruption budgets.
func waitBudgets(t testing.TB, pool string, want []karpv1.Budget) {
	t.Helper()
	eventually(t, fmt.Sprintf("budgets of %s = %+v", nodepools.Name(pool), want), func() error {
		np, err := nodePool(t, pool)
		if err != nil {
			return err
		}
		if got := np.Spec.Disruption.Budgets; !equality.Semantic.DeepEqual(got, want) {
			return fmt.Errorf("budgets %+v", got)
		}
		return nil
	})
}

// checkBudgets asserts the pool's NodePool carries exactly these budgets now.
func checkBudgets(t testing.TB, pool string, want []karpv1.Budget) {
	t.Helper()
	np, err := nodePool(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := np.Spec.Disruption.Budgets; !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("budgets of %s = %+v, want %+v", np.Name, got, want)
	}
}

func checkGauge(t testing.TB, name, pool string, want float64) {
	t.Helper()
	v, ok := poolMetric(t, name, pool)
	if !ok || v != want {
		t.Errorf("%s{pool=%q} = %v (present %t), want %v", name, pool, v, ok, want)
	}
}

func quantity(s string) resource.Quantity { return resource.MustParse(s) }

func checkRequests(t testing.TB, d *appsv1.Deployment, want corev1.ResourceList) {
	t.Helper()
	c := d.Spec.Template.Spec.Containers
	if len(c) != 1 {
		t.Fatalf("%s has %d containers, want 1", d.Name, len(c))
	}
	got := c[0].Resources.Requests
	if len(got) != len(want) {
		t.Errorf("%s requests %v, want %v", d.Name, got, want)
	}
	for name, q := range want {
		if g, ok := got[name]; !ok || g.Cmp(q) != 0 {
			t.Errorf("%s requests %s = %v, want %v", d.Name, name, got[name], q.String())
		}
	}
}

// TestQueuedJobsCreateHeadroom: queued jobs become a placeholder Deployment of
// ceil(jobs/jobsPerNode) replicas, each sized to one node of runner work, pinned to the pool and
// one per node, with the shared never-preempting negative PriorityClass.
func TestQueuedJobsCreateHeadroom(t *testing.T) {
	sizedPool, plainPool := poolName("sized"), poolName("plain")
	e := newEnv(t, configYAML(
		poolYAML(sizedPool, ciSource,
			"taint: {key: example.com/ci, value: ci, effect: NoExecute}",
			"scaling: {jobsPerNode: 3, runnerRequests: {cpu: 1500m, memory: 3Gi}}"),
		poolYAML(plainPool, ciSource, "scaling: {jobsPerNode: 2}"),
	))
	// The first evaluation (no reading yet) applies an empty Deployment.
	e.waitReplicas(sizedPool, 0)
	e.waitReplicas(plainPool, 0)

	e.record(sizedPool, queue.Counts{Queued: 5, Running: 2}, nil) // 7 jobs / 3 per node
	e.record(plainPool, queue.Counts{Queued: 3}, nil)             // 3 jobs / 2 per node
	sized := e.waitReplicas(sizedPool, 3)
	plain := e.waitReplicas(plainPool, 2)

	if want := "warmpool-headroom-" + sizedPool; sized.Namespace != e.Namespace || sized.Name != want {
		t.Errorf("Deployment %s/%s, want %s/%s", sized.Namespace, sized.Name, e.Namespace, want)
	}
	selector := map[string]string{nodepools.LabelPool: sizedPool, nodepools.LabelHeadroom: "true"}
	if sized.Labels[nodepools.LabelManagedBy] != nodepools.ManagedBy || sized.Labels[nodepools.LabelPool] != sizedPool {
		t.Errorf("Deployment labels %v", sized.Labels)
	}
	if sized.Spec.Selector == nil || !equality.Semantic.DeepEqual(sized.Spec.Selector.MatchLabels, selector) {
		t.Errorf("selector %v, want %v", sized.Spec.Selector, selector)
	}
	tpl := sized.Spec.Template
	for k, v := range selector {
		if tpl.Labels[k] != v {
			t.Errorf("pod template labels %v lack %s=%s", tpl.Labels, k, v)
		}
	}
	if tpl.Spec.PriorityClassName != "warmpool-headroom" {
		t.Errorf("priorityClassName %q, want warmpool-headroom", tpl.Spec.PriorityClassName)
	}
	if want := map[string]string{"warmpool.io/pool": sizedPool}; !equality.Semantic.DeepEqual(tpl.Spec.NodeSelector, want) {
		t.Errorf("nodeSelector %v, want %v", tpl.Spec.NodeSelector, want)
	}
	wantTol := []corev1.Toleration{{Key: "example.com/ci", Operator: corev1.TolerationOpEqual, Value: "ci", Effect: corev1.TaintEffectNoExecute}}
	if !equality.Semantic.DeepEqual(tpl.Spec.Tolerations, wantTol) {
		t.Errorf("tolerations %+v, want %+v", tpl.Spec.Tolerations, wantTol)
	}
	wantAnti := []corev1.PodAffinityTerm{{LabelSelector: &metav1.LabelSelector{MatchLabels: selector}, TopologyKey: "kubernetes.io/hostname"}}
	if a := tpl.Spec.Affinity; a == nil || a.PodAntiAffinity == nil ||
		!equality.Semantic.DeepEqual(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, wantAnti) ||
		len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("affinity %+v, want required anti-affinity %+v", a, wantAnti)
	}
	// runnerRequests x jobsPerNode: one node's worth of runner work per placeholder.
	checkRequests(t, sized, corev1.ResourceList{corev1.ResourceCPU: quantity("4500m"), corev1.ResourceMemory: quantity("9Gi")})
	if !slices.ContainsFunc(sized.GetManagedFields(), func(f metav1.ManagedFieldsEntry) bool {
		return f.Manager == config.FieldManager && f.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("Deployment was not server-side applied by %s: %v", config.FieldManager, sized.GetManagedFields())
	}

	// No runnerRequests: the default placeholder size, whatever jobsPerNode says; the default taint.
	checkRequests(t, plain, corev1.ResourceList{corev1.ResourceCPU: quantity("1"), corev1.ResourceMemory: quantity("2Gi")})
	wantTol = []corev1.Toleration{{Key: "warmpool.io/runner", Operator: corev1.TolerationOpEqual, Value: plainPool, Effect: corev1.TaintEffectNoSchedule}}
	if got := plain.Spec.Template.Spec.Tolerations; !equality.Semantic.DeepEqual(got, wantTol) {
		t.Errorf("plain tolerations %+v, want %+v", got, wantTol)
	}
	if got := plain.Spec.Template.Spec.NodeSelector; !equality.Semantic.DeepEqual(got, map[string]string{"warmpool.io/pool": plainPool}) {
		t.Errorf("plain nodeSelector %v", got)
	}

	pc := &schedulingv1.PriorityClass{}
	if err := kube.Get(t.Context(), client.ObjectKey{Name: "warmpool-headroom"}, pc); err != nil {
		t.Fatal(err)
	}
	if pc.Value != -1000 || ptr.Deref(pc.PreemptionPolicy, "") != corev1.PreemptNever || pc.GlobalDefault {
		t.Errorf("PriorityClass value %d preemptionPolicy %v globalDefault %t, want -1000 Never false", pc.Value, pc.PreemptionPolicy, pc.GlobalDefault)
	}
	if pc.Labels[nodepools.LabelManagedBy] != nodepools.ManagedBy {
		t.Errorf("PriorityClass labels %v", pc.Labels)
	}
}

// TestBusyNodesReduceHeadroom: nodes already running real work need no placeholder; DaemonSet
// pods, placeholders and finished pods are not work.
func TestBusyNodesReduceHeadroom(t *testing.T) {
	pool := poolName("busy")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.waitReplicas(pool, 0)
	node := func(i int) string { return fmt.Sprintf("%s-%d", pool, i) }

	// Pods first: the controller watches Nodes, so each Node's arrival re-counts its pods.
	e.newPod("job-1", node(1), nil)
	e.newPod("job-2a", node(2), nil)
	e.newPod("job-2b", node(2), nil) // a second job on a busy node: still one busy node
	e.newPod("engine", node(3), func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "dagger-engine", UID: "0a4b2d9e-0000-4000-8000-000000000001", Controller: ptr.To(true)}}
	})
	e.newPod("placeholder", node(4), func(p *corev1.Pod) {
		p.Labels = map[string]string{nodepools.LabelPool: pool, nodepools.LabelHeadroom: "true"}
	})
	e.newPod("finished", node(5), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	for i := 1; i <= 5; i++ {
		newNode(t, node(i), pool)
	}

	e.record(pool, queue.Counts{Queued: 4, Running: 2}, nil)
	e.waitReplicas(pool, 6-2)
	waitGauge(t, headroomGauge, pool, 4)
	checkGauge(t, desiredGauge, pool, 6)
}

// TestBudgetsFollowBusyState: while jobs are queued or running the NodePool carries the blocking
// budget ahead of the configured ones; once the queue is idle the configured budgets alone are
// back, at once: scale-down stabilization holds desired nodes, not budgets.
func TestBudgetsFollowBusyState(t *testing.T) {
	pool := poolName("budget")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource,
		`disruption: {budgets: [{nodes: "3"}, {nodes: "0", reasons: [Drifted], schedule: "0 9 * * *", duration: 8h}]}`,
		"scaling: {jobsPerNode: 1}")))
	configured := []karpv1.Budget{
		{Nodes: "3"},
		{Nodes: "0", Reasons: []karpv1.DisruptionReason{karpv1.DisruptionReasonDrifted}, Schedule: ptr.To("0 9 * * *"), Duration: &metav1.Duration{Duration: 8 * time.Hour}},
	}
	blocking := append([]karpv1.Budget{{Nodes: "0", Reasons: []karpv1.DisruptionReason{"Empty", "Underutilized"}}}, configured...)
	e.waitReplicas(pool, 0)
	checkBudgets(t, pool, configured)

	e.record(pool, queue.Counts{Queued: 2}, nil)
	waitBudgets(t, pool, blocking)
	if !e.Mgr.State.Busy(pool) {
		t.Errorf("Busy(%s) = false with 2 queued", pool)
	}

	// Running jobs alone keep the pool busy.
	e.record(pool, queue.Counts{Running: 3}, nil)
	waitGauge(t, desiredGauge, pool, 3)
	checkGauge(t, busyGauge, pool, 1)
	checkBudgets(t, pool, blocking)

	e.record(pool, queue.Counts{}, nil)
	waitBudgets(t, pool, configured)
	waitGauge(t, busyGauge, pool, 0)
	// The default 5m stabilization still holds the nodes the jobs needed.
	checkGauge(t, desiredGauge, pool, 3)
	if got := e.replicas(pool); got != 3 {
		t.Errorf("headroom replicas %d right after the queue drained, want 3 (stabilizing)", got)
	}
	if e.Mgr.State.Busy(pool) {
		t.Errorf("Busy(%s) = true with an idle queue", pool)
	}
	if n := eventCount(t, pool, scaling.ReasonBudgetsBlocked); n != 1 {
		t.Errorf("%d %s events, want 1", n, scaling.ReasonBudgetsBlocked)
	}
	waitEvent(t, pool, scaling.ReasonBudgetsRestored)
	if n := eventCount(t, pool, scaling.ReasonBudgetsRestored); n != 1 {
		t.Errorf("%d %s events, want 1", n, scaling.ReasonBudgetsRestored)
	}
}

// TestEventsOnNodePool: scale-ups and busy flips are told on the pool's NodePool.
func TestEventsOnNodePool(t *testing.T) {
	pool := poolName("events")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 2, busyBudget: block}")))
	e.waitReplicas(pool, 0)

	e.record(pool, queue.Counts{Queued: 3}, nil)
	waitEvent(t, pool, "ScaledUp", "desired nodes 0 -> 2", string(policy.ReasonQueueGrew), "3 queued", "0 running")
	waitEvent(t, pool, "ConsolidationBlocked", "consolidation blocked", "3 queued", "0 running")

	e.record(pool, queue.Counts{Queued: 1, Running: 4}, nil)
	waitEvent(t, pool, "ScaledUp", "desired nodes 2 -> 3", "1 queued", "4 running")

	e.record(pool, queue.Counts{}, nil)
	waitEvent(t, pool, "ConsolidationRestored", "configured disruption budgets restored")

	for reason, want := range map[string]int{
		"ScaledUp": 2, "ConsolidationBlocked": 1, "ConsolidationRestored": 1,
		// The default 5m stabilization holds the nodes: no scale-down yet.
		"ScaledDown": 0,
	} {
		if got := eventCount(t, pool, reason); got != want {
			t.Errorf("%d %s events, want %d: %+v", got, reason, want, events(t, pool, reason))
		}
	}
	np, err := nodePool(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	list := &corev1.EventList{}
	if err := kube.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	for _, ev := range list.Items {
		if ev.InvolvedObject.Name != np.Name {
			continue
		}
		if ev.Type != corev1.EventTypeNormal || ev.InvolvedObject.Kind != "NodePool" || ev.InvolvedObject.APIVersion != "karpenter.sh/v1" {
			t.Errorf("event %s: type %s involvedObject %+v", ev.Reason, ev.Type, ev.InvolvedObject)
		}
	}
}

// TestMetrics: the per-pool gauges and the decisions counter follow each evaluation.
func TestMetrics(t *testing.T) {
	pool := poolName("metrics")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1}")))
	e.waitReplicas(pool, 0)
	waitGauge(t, desiredGauge, pool, 0)
	checkGauge(t, headroomGauge, pool, 0)
	checkGauge(t, busyGauge, pool, 0)

	e.record(pool, queue.Counts{Queued: 3}, nil)
	waitGauge(t, desiredGauge, pool, 3)
	waitGauge(t, busyGauge, pool, 1)
	checkGauge(t, headroomGauge, pool, 3)
	if v := decisions(t, pool, "up", "QueueGrew"); v != 1 {
		t.Errorf("decisions{up,QueueGrew} = %v, want 1", v)
	}

	e.record(pool, queue.Counts{Queued: 3, Running: 2}, nil)
	waitGauge(t, desiredGauge, pool, 5)
	checkGauge(t, headroomGauge, pool, 5)
	checkGauge(t, nodesGauge, pool, 0)
	// The actual node count, set against desired on the dashboard.
	newNode(t, pool+"-n1", pool)
	waitGauge(t, nodesGauge, pool, 1)
	if v := decisions(t, pool, "up", "QueueGrew"); v != 2 {
		t.Errorf("decisions{up,QueueGrew} = %v, want 2", v)
	}
	for _, r := range policy.Reasons() {
		if v := decisions(t, pool, "down", string(r)); v != 0 {
			t.Errorf("decisions{down,%s} = %v, want 0", r, v)
		}
	}
}

// TestUnknownDataHolds: a source that never answered moves nothing but the warm floor, neither
// nodes nor budgets; a failed reading after a good one keeps the good one.
func TestUnknownDataHolds(t *testing.T) {
	pool := poolName("unknown")
	node := func(i int) string { return fmt.Sprintf("%s-%d", pool, i) }
	// The fleet exists before warmpool ever ran for the pool: it is no evidence of demand, and
	// nothing was actuated before, so only the warm minimum is kept.
	newNode(t, node(1), pool)
	newNode(t, node(2), pool)
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1, warmMinimum: 1, scaleDownStabilization: 1s}")))
	e.waitReplicas(pool, 1)
	waitGauge(t, desiredGauge, pool, 1)
	checkGauge(t, busyGauge, pool, 0)
	if e.Mgr.State.Busy(pool) {
		t.Errorf("Busy(%s) = true without any reading", pool)
	}
	checkBudgets(t, pool, defaultBudgets)
	if n := eventCount(t, pool, scaling.ReasonBudgetsBlocked); n != 0 {
		t.Errorf("%d %s events without any reading", n, scaling.ReasonBudgetsBlocked)
	}
	if _, known := e.Mgr.Tracker.Pool(pool); known {
		t.Errorf("tracker says pool %s is known before its source answered", pool)
	}

	e.record(pool, queue.Counts{Queued: 4}, nil)
	e.waitReplicas(pool, 4)
	waitBudgets(t, pool, withBlocking(defaultBudgets))

	// The source fails. Its last value stands (staleness is 5 minutes): with a 1s stabilization
	// a dropped value would take the pool down to its warm minimum within a second or two.
	e.record(pool, queue.Counts{}, errors.New("prometheus: connection refused"))
	// A new node running a job forces an evaluation after the failure: 4 desired, 1 busy.
	e.newPod("job", node(3), nil)
	newNode(t, node(3), pool)
	e.waitReplicas(pool, 3)
	waitGauge(t, headroomGauge, pool, 3)
	checkGauge(t, desiredGauge, pool, 4)
	checkGauge(t, busyGauge, pool, 1)
	checkBudgets(t, pool, withBlocking(defaultBudgets))
	if n := eventCount(t, pool, scaling.ReasonBudgetsRestored); n != 0 {
		t.Errorf("%d %s events after a failed reading, want 0", n, scaling.ReasonBudgetsRestored)
	}
	c, staleness, err := e.Mgr.Tracker.Source(queue.Key{Pool: pool, Source: "ci"})
	if c != (queue.Counts{Queued: 4}) || staleness < 0 || err == nil {
		t.Errorf("tracker source = %+v, %v, %v; want the last good counts and the error", c, staleness, err)
	}
}

// TestWarmMinimum: with no demand the warm minimum is kept booted.
func TestWarmMinimum(t *testing.T) {
	warm, warmq := poolName("warm"), poolName("warmq")
	e := newEnv(t, configYAML(
		poolYAML(warm, "scaling: {warmMinimum: 2}"), // no queue source: known, zero jobs
		poolYAML(warmq, ciSource, "scaling: {warmMinimum: 2}"),
	))
	e.record(warmq, queue.Counts{}, nil)
	for _, pool := range []string{warm, warmq} {
		e.waitReplicas(pool, 2)
		waitGauge(t, desiredGauge, pool, 2)
		checkGauge(t, headroomGauge, pool, 2)
		checkGauge(t, busyGauge, pool, 0)
		checkBudgets(t, pool, defaultBudgets)
		if v := decisions(t, pool, "up", "WarmMinimum"); v != 1 {
			t.Errorf("pool %s: decisions{up,WarmMinimum} = %v, want 1", pool, v)
		}
	}
}

// TestScaleDownWaitsForStabilization: demand falling holds the desired nodes for the
// stabilization window, then lets them go.
func TestScaleDownWaitsForStabilization(t *testing.T) {
	pool := poolName("down")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 20s}")))
	e.waitReplicas(pool, 0)

	e.record(pool, queue.Counts{Queued: 4}, nil)
	waitGauge(t, desiredGauge, pool, 4)
	e.record(pool, queue.Counts{}, nil)
	// The evaluation of the drained queue flips busy off; the nodes stay, stabilizing.
	waitGauge(t, busyGauge, pool, 0)
	checkGauge(t, desiredGauge, pool, 4)
	if got := e.replicas(pool); got != 4 {
		t.Errorf("headroom replicas %d right after the queue drained, want 4", got)
	}
	if n := eventCount(t, pool, scaling.ReasonScaledDown); n != 0 {
		t.Errorf("%d %s events inside the stabilization window", n, scaling.ReasonScaledDown)
	}

	e.waitReplicas(pool, 0)
	waitGauge(t, desiredGauge, pool, 0)
	waitEvent(t, pool, scaling.ReasonScaledDown, "desired nodes 4 -> 0", string(policy.ReasonQueueDrained))
	if v := decisions(t, pool, "down", "QueueDrained"); v != 1 {
		t.Errorf("decisions{down,QueueDrained} = %v, want 1", v)
	}
}

// TestRemovedPoolLosesHeadroom: a pool that leaves the config loses its placeholders and its
// metric series; the others keep theirs.
func TestRemovedPoolLosesHeadroom(t *testing.T) {
	stay, gone := poolName("stay"), poolName("gone")
	e := newEnv(t, configYAML(
		poolYAML(stay, "scaling: {warmMinimum: 1}"),
		poolYAML(gone, "scaling: {warmMinimum: 1}"),
	))
	e.waitReplicas(stay, 1)
	e.waitReplicas(gone, 1)
	waitGauge(t, desiredGauge, gone, 1)

	e.SetConfig(configYAML(poolYAML(stay, "scaling: {warmMinimum: 1}")))
	eventually(t, "headroom of the removed pool deleted", func() error {
		d, err := e.headroom(gone)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case d.DeletionTimestamp != nil:
			return nil // the garbage collector would finish it; envtest runs none
		}
		return fmt.Errorf("still there: %d replicas", ptr.Deref(d.Spec.Replicas, -1))
	})
	eventually(t, "metric series of the removed pool dropped", func() error {
		for _, g := range []string{desiredGauge, headroomGauge, busyGauge} {
			if _, ok := poolMetric(t, g, gone); ok {
				return fmt.Errorf("%s{pool=%s} still exported", g, gone)
			}
		}
		return nil
	})
	if got := e.replicas(stay); got != 1 {
		t.Errorf("headroom of pool %s at %d replicas, want 1", stay, got)
	}
	checkGauge(t, desiredGauge, stay, 1)
}

// TestMaxNodesCaps: maxNodes caps the desired nodes whatever the queue says.
func TestMaxNodesCaps(t *testing.T) {
	pool := poolName("capped")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {maxNodes: 4}")))
	e.waitReplicas(pool, 0)
	e.record(pool, queue.Counts{Queued: 100}, nil)
	e.waitReplicas(pool, 4)
	waitGauge(t, desiredGauge, pool, 4)
	checkGauge(t, headroomGauge, pool, 4)
	if v := decisions(t, pool, "up", "AtMax"); v != 1 {
		t.Errorf("decisions{up,AtMax} = %v, want 1", v)
	}
	waitEvent(t, pool, scaling.ReasonScaledUp, "desired nodes 0 -> 4", string(policy.ReasonAtMax), "100 queued")
}

// TestRestartKeepsHeadroom: a restarted controller must not take a pool it has no config for
// yet as a pool that left the config: the placeholders keep the pool's nodes until a config is
// in force again.
func TestRestartKeepsHeadroom(t *testing.T) {
	pool := poolName("restart")
	cfg := configYAML(poolYAML(pool, "scaling: {warmMinimum: 2}"))
	e := newEnv(t, cfg)
	before := e.waitReplicas(pool, 2)
	waitEvent(t, pool, scaling.ReasonScaledUp, "desired nodes 0 -> 2")

	// Restart with a config that cannot be put in force: no pool is known to the new manager,
	// while the informers replay the existing headroom Deployment to the scaling controller.
	e.Stop()
	e.SetConfig("not: [valid")
	e.Start()
	e.waitRejected()
	// The config comes back; the new manager resumes the pool where the last one left it.
	e.SetConfig(cfg)
	waitEvent(t, pool, scaling.ReasonResumed, "resumed at desired nodes 2 from the state recorded on Deployment", "now 2")
	if n := eventCount(t, pool, scaling.ReasonScaledUp); n != 1 {
		t.Errorf("%d %s events, want the first manager's only", n, scaling.ReasonScaledUp)
	}
	after := e.waitReplicas(pool, 2)
	if after.UID != before.UID {
		t.Errorf("headroom Deployment was deleted and recreated across the restart (uid %s -> %s)", before.UID, after.UID)
	}
}

// waitRejected waits for the pools controller to reject the test's config.
func (e *env) waitRejected() {
	e.T.Helper()
	eventually(e.T, "config rejected", func() error {
		list := &corev1.EventList{}
		if err := kube.List(e.T.Context(), list, client.InNamespace(e.Namespace)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Reason == pools.ReasonRejected && ev.InvolvedObject.Name == e.ConfigMap.Name {
				return nil
			}
		}
		return fmt.Errorf("no %s event", pools.ReasonRejected)
	})
}

// TestPoolRemovedWhileDownLosesHeadroom: a pool dropped from the config while the controller
// was down (and before its new config is in force) still loses its placeholders.
func TestPoolRemovedWhileDownLosesHeadroom(t *testing.T) {
	stay, gone := poolName("stay"), poolName("gone")
	e := newEnv(t, configYAML(
		poolYAML(stay, "scaling: {warmMinimum: 1}"),
		poolYAML(gone, "scaling: {warmMinimum: 1}"),
	))
	e.waitReplicas(stay, 1)
	e.waitReplicas(gone, 1)

	e.Stop()
	e.SetConfig("not: [valid")
	e.Start()
	e.waitRejected()
	e.SetConfig(configYAML(poolYAML(stay, "scaling: {warmMinimum: 1}")))
	eventually(t, "headroom of the removed pool deleted", func() error {
		d, err := e.headroom(gone)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case d.DeletionTimestamp != nil:
			return nil
		}
		return fmt.Errorf("still there: %d replicas", ptr.Deref(d.Spec.Replicas, -1))
	})
	if got := e.replicas(stay); got != 1 {
		t.Errorf("headroom of pool %s at %d replicas, want 1", stay, got)
	}
}

// TestHandEditedHeadroomIsReverted: an unchanged Deployment is not re-applied on every
// evaluation, but a hand edit (a new generation) is put back.
func TestHandEditedHeadroomIsReverted(t *testing.T) {
	pool := poolName("edited")
	e := newEnv(t, configYAML(poolYAML(pool, "scaling: {warmMinimum: 2}")))
	d := e.waitReplicas(pool, 2)
	d.Spec.Replicas = ptr.To[int32](7)
	if err := kube.Update(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	// The edit is seen (it bumps the generation) and reverted by the next evaluation.
	e.waitReplicas(pool, 2)
}

// TestOwnHeadroomAppliesDoNotWakeThePool: a change of a pool's headroom evaluates the pool once,
// not again for the watch event of the Deployment apply it made (a new generation, as a hand
// edit's), and a hand edit is put back by one evaluation, not two. Each step ends at a barrier:
// a hand edit of the Deployment, put back, whose event the Deployment informer delivers after
// every earlier one, so the echo of the step's apply has been seen by then.
func TestOwnHeadroomAppliesDoNotWakeThePool(t *testing.T) {
	pool := poolName("echo")
	e := newEnv(t, configYAML(poolYAML(pool, "scaling: {warmMinimum: 2}")))
	e.waitReplicas(pool, 2)
	e.editAndWaitRevert(pool, 2)
	before := operatortest.Reconciles(t, "scaling")

	e.SetConfig(configYAML(poolYAML(pool, "scaling: {warmMinimum: 3}")))
	e.waitReplicas(pool, 3)
	operatortest.WaitIdle(t, "scaling")
	e.editAndWaitRevert(pool, 3)
	if n := operatortest.Reconciles(t, "scaling") - before; n != 2 {
		t.Errorf("%v evaluations for one config change and one hand edit, want 2: the controller's own applies woke it", n)
	}
}

// editAndWaitRevert sets the pool's headroom to 7 replicas by hand and waits until the
// controller has put back want and is idle again.
func (e *env) editAndWaitRevert(pool string, want int32) {
	e.T.Helper()
	operatortest.WaitIdle(e.T, "scaling")
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := e.headroom(pool)
		if err != nil {
			return err
		}
		d.Spec.Replicas = ptr.To[int32](7)
		return kube.Update(e.T.Context(), d)
	})
	if err != nil {
		e.T.Fatal(err)
	}
	e.waitReplicas(pool, want)
	operatortest.WaitIdle(e.T, "scaling")
}
