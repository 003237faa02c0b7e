// Package scaling turns CI queue depth into runner nodes: per pool it asks the policy for the
// desired node count, keeps that many nodes booted with placeholder (headroom) pods, and marks
// the pool busy so its NodePool blocks consolidation while work is queued or running.
package scaling

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
)

// FieldManager owns the headroom objects.
const FieldManager = "warmpool"

// Event reasons on the pool's NodePool.
const (
	ReasonScaledUp        = "ScaledUp"
	ReasonScaledDown      = "ScaledDown"
	ReasonBudgetsBlocked  = "ConsolidationBlocked"
	ReasonBudgetsRestored = "ConsolidationRestored"
	ReasonPolicyInvalid   = "ScalingPolicyInvalid"
)

// DefaultInterval is how often every pool is re-evaluated even when nothing changed: warm
// windows open and close, and stabilization windows run out, on the clock alone.
const DefaultInterval = 10 * time.Second

// Controller evaluates one pool per reconcile (the request name is the pool name).
type Controller struct {
	kubeClient client.Client
	recorder   record.EventRecorder
	clk        clock.Clock
	tracker    *queue.Tracker
	namespace  string
	// current returns the config in force (the pools controller's).
	current  func() *config.Config
	interval time.Duration
	// onBusyChange is told when a pool's busy state flips, so its NodePool's budgets follow.
	onBusyChange func(pool string)

	events chan event.GenericEvent
	// priorityClassApplied is set once the shared PriorityClass was applied by this process.
	priorityClassApplied atomic.Bool

	mu    sync.Mutex
	pools map[string]*poolState
}

type poolState struct {
	policyFor *config.Pool // the pool config the policy was compiled from
	policy    *policy.Policy
	state     policy.State
	desired   int
	busy      bool
	evaluated bool
	// headroomHash and headroomGeneration identify the Deployment this controller last applied,
	// so an unchanged one is not applied again; a hand edit bumps the generation and is reverted.
	headroomHash       string
	headroomGeneration int64
}

// NewController builds the scaling controller. current returns the config in force.
func NewController(kubeClient client.Client, recorder record.EventRecorder, clk clock.Clock, tracker *queue.Tracker, namespace string, current func() *config.Config, onBusyChange func(pool string)) *Controller {
	return &Controller{
		kubeClient: kubeClient, recorder: recorder, clk: clk, tracker: tracker, namespace: namespace,
		current: current, interval: DefaultInterval, onBusyChange: onBusyChange,
		events: make(chan event.GenericEvent, 1024), pools: map[string]*poolState{},
	}
}

// Busy reports whether a pool has work queued or running, or is inside a warm window; the
// pools controller renders the pool's blocking budget from it.
func (c *Controller) Busy(pool string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.pools[pool]
	return ok && ps.busy
}

// Enqueue asks for a pool to be evaluated now (a queue reading changed, the config changed).
func (c *Controller) Enqueue(pool string) {
	select {
	case c.events <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: pool}}}:
	default:
		// The queue is full of pending evaluations; this pool's periodic requeue picks it up.
	}
}

// EnqueueAll evaluates every pool of the config in force (after a config change).
func (c *Controller) EnqueueAll() {
	if cfg := c.current(); cfg != nil {
		for i := range cfg.Pools {
			c.Enqueue(cfg.Pools[i].Name)
		}
	}
}

// Reconcile evaluates one pool: decide, actuate headroom, flip budgets, report.
func (c *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	name := req.Name
	cfg := c.current()
	if cfg == nil {
		// No config is in force yet (startup, or no valid config so far): that says nothing
		// about which pools exist, so nothing is forgotten now. Look again later: EnqueueAll
		// only names the pools a config keeps, not one that left it while warmpool was down.
		return reconcile.Result{RequeueAfter: c.interval}, nil
	}
	p := findPool(cfg, name)
	if p == nil {
		return reconcile.Result{}, c.forget(ctx, name)
	}
	ps, err := c.poolState(p)
	if err != nil {
		np := c.nodePool(ctx, name)
		c.recorder.Eventf(np, corev1.EventTypeWarning, ReasonPolicyInvalid, "scaling policy: %v", err)
		return reconcile.Result{}, nil
	}
	counts, known := c.tracker.Pool(name)
	nodes, busyNodes, err := c.poolNodes(ctx, name)
	if err != nil {
		return reconcile.Result{}, err
	}
	c.mu.Lock()
	decision, state := ps.policy.Decide(policy.Input{
		Now: c.clk.Now(), Queued: counts.Queued, Running: counts.Running, Known: known, CurrentNodes: nodes,
	}, ps.state)
	prevDesired, prevBusy, first := ps.desired, ps.busy, !ps.evaluated
	ps.state, ps.desired, ps.evaluated = state, decision.Desired, true
	// Unknown data changes nothing: not the node count (the policy holds it) and not the
	// budgets, which stay as they were.
	if known {
		ps.busy = policy.Busy(counts.Queued, counts.Running, decision.WarmWindowActive)
	}
	busy := ps.busy
	c.mu.Unlock()

	headroom := int32(max(0, decision.Desired-busyNodes))
	if err := c.applyHeadroom(ctx, p, ps, headroom); err != nil {
		return reconcile.Result{}, err
	}
	desiredNodes.WithLabelValues(name).Set(float64(decision.Desired))
	headroomPods.WithLabelValues(name).Set(float64(headroom))
	poolBusy.WithLabelValues(name).Set(boolFloat(busy))
	if decision.Direction != policy.DirectionNone {
		decisions.WithLabelValues(name, string(decision.Direction), string(decision.Reason)).Inc()
	}

	np := c.nodePool(ctx, name)
	if decision.Desired != prevDesired || first && decision.Desired > 0 {
		reason := ReasonScaledUp
		if decision.Desired < prevDesired {
			reason = ReasonScaledDown
		}
		c.recorder.Eventf(np, corev1.EventTypeNormal, reason, "desired nodes %d -> %d (%s): %d queued, %d running jobs, %d nodes, %d busy, %d headroom pods",
			prevDesired, decision.Desired, decision.Reason, counts.Queued, counts.Running, nodes, busyNodes, headroom)
		log.FromContext(ctx).Info("scaling decision", "pool", name, "desired", decision.Desired, "previous", prevDesired, "reason", decision.Reason, "queued", counts.Queued, "running", counts.Running, "known", known)
	}
	if busy != prevBusy {
		if busy {
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsBlocked, "consolidation blocked: %d queued, %d running jobs (warm window: %t)", counts.Queued, counts.Running, decision.WarmWindowActive)
		} else {
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsRestored, "queue idle: configured disruption budgets restored")
		}
		if c.onBusyChange != nil {
			c.onBusyChange(name)
		}
	}
	after := c.interval
	if !decision.StabilizedUntil.IsZero() {
		if d := decision.StabilizedUntil.Sub(c.clk.Now()); d > 0 && d < after {
			after = d
		}
	}
	return reconcile.Result{RequeueAfter: after}, nil
}

// poolState returns the pool's state, recompiling the policy when the pool's config changed.
func (c *Controller) poolState(p *config.Pool) (*poolState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.pools[p.Name]
	if ok && ps.policyFor == p {
		return ps, nil
	}
	pol, err := policy.Compile(PolicyConfig(p))
	if err != nil {
		return nil, err
	}
	if !ok {
		ps = &poolState{}
		c.pools[p.Name] = ps
	}
	ps.policyFor, ps.policy = p, pol
	return ps, nil
}

// PolicyConfig maps a pool's scaling config to the policy's.
func PolicyConfig(p *config.Pool) policy.Config {
	s := p.Scaling
	maxNodes := 1 << 20
	if s.MaxNodes != nil {
		maxNodes = *s.MaxNodes
	}
	windows := make([]policy.WarmWindow, 0, len(s.WarmWindows))
	for _, w := range s.WarmWindows {
		windows = append(windows, policy.WarmWindow{Schedule: w.Schedule, Duration: w.Duration.Duration, Minimum: w.Minimum, TimeZone: w.TimeZone})
	}
	return policy.Config{
		JobsPerNode:            max(s.JobsPerNode, 1),
		WarmMinimum:            s.WarmMinimum,
		WarmWindows:            windows,
		MaxNodes:               maxNodes,
		ScaleDownStabilization: s.ScaleDownStabilization.Duration,
		ScaleDownStep:          s.ScaleDownStep,
	}
}

// poolNodes counts the pool's live nodes, and those running real work (any pod that is not a
// placeholder, not a DaemonSet pod and not finished).
func (c *Controller) poolNodes(ctx context.Context, pool string) (nodes, busy int, err error) {
	list := &corev1.NodeList{}
	if err := c.kubeClient.List(ctx, list, client.MatchingLabels{nodepools.LabelPool: pool}); err != nil {
		return 0, 0, fmt.Errorf("listing nodes of pool %s, %w", pool, err)
	}
	for i := range list.Items {
		n := &list.Items[i]
		if n.DeletionTimestamp != nil {
			continue
		}
		nodes++
		pods := &corev1.PodList{}
		if err := c.kubeClient.List(ctx, pods, client.MatchingFields{nodeNameField: n.Name}); err != nil {
			return 0, 0, fmt.Errorf("listing pods on %s, %w", n.Name, err)
		}
		for j := range pods.Items {
			if isWork(&pods.Items[j]) {
				busy++
				break
			}
		}
	}
	return nodes, busy, nil
}

func isWork(p *corev1.Pod) bool {
	if p.Labels[nodepools.LabelHeadroom] == "true" || p.DeletionTimestamp != nil ||
		p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return false
		}
	}
	return true
}

// applyHeadroom server-side-applies the shared PriorityClass and the pool's placeholder
// Deployment at the given size. Every pool is evaluated every few seconds, so an apply that
// would change nothing is skipped: the PriorityClass after this process applied it once (it is
// not read back: a watch on PriorityClasses for one object is not worth its informer), the
// Deployment when the cached one is the generation this controller last wrote with the same
// rendered spec.
func (c *Controller) applyHeadroom(ctx context.Context, p *config.Pool, ps *poolState, replicas int32) error {
	if !c.priorityClassApplied.Load() {
		if _, err := c.apply(ctx, nodepools.HeadroomPriorityClassObject()); err != nil {
			return err
		}
		c.priorityClassApplied.Store(true)
	}

	d := nodepools.HeadroomDeployment(p, c.namespace, replicas)
	u, err := nodepools.ToUnstructured(d)
	if err != nil {
		return err
	}
	spec, err := json.Marshal(u.Object["spec"])
	if err != nil {
		return fmt.Errorf("hashing headroom spec, %w", err)
	}
	sum := sha256.Sum256(spec)
	hash := hex.EncodeToString(sum[:8])
	cur := &appsv1.Deployment{}
	if err := c.kubeClient.Get(ctx, client.ObjectKeyFromObject(d), cur); err == nil && ps.headroomHash == hash && cur.Generation == ps.headroomGeneration {
		return nil
	}
	applied, err := c.apply(ctx, d)
	if err != nil {
		return err
	}
	ps.headroomHash, ps.headroomGeneration = hash, applied.GetGeneration()
	return nil
}

// apply server-side-applies obj and returns what the server stored.
func (c *Controller) apply(ctx context.Context, obj client.Object) (*unstructured.Unstructured, error) {
	u, err := nodepools.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	if err := c.kubeClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("applying %s %s, %w", u.GetKind(), u.GetName(), err)
	}
	return u, nil
}

// forget drops a pool that left the config: its headroom goes, its state is cleared.
func (c *Controller) forget(ctx context.Context, pool string) error {
	c.mu.Lock()
	delete(c.pools, pool)
	c.mu.Unlock()
	for _, m := range []interface{ DeleteLabelValues(...string) bool }{desiredNodes, headroomPods, poolBusy} {
		m.DeleteLabelValues(pool)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: nodepools.HeadroomName(pool)}}
	if err := c.kubeClient.Delete(ctx, d); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting headroom of removed pool %s, %w", pool, err)
	}
	return nil
}

// nodePool is the object Events are recorded on; without a UID the Event still lists by name.
func (c *Controller) nodePool(ctx context.Context, pool string) *karpv1.NodePool {
	np := &karpv1.NodePool{}
	if err := c.kubeClient.Get(ctx, types.NamespacedName{Name: nodepools.Name(pool)}, np); err != nil {
		np = &karpv1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: nodepools.Name(pool)}}
	}
	np.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePool"))
	return np
}

func findPool(cfg *config.Config, name string) *config.Pool {
	if cfg == nil {
		return nil
	}
	for i := range cfg.Pools {
		if cfg.Pools[i].Name == name {
			return &cfg.Pools[i]
		}
	}
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// nodeNameField indexes pods by node, so counting a pool's busy nodes reads only its pods.
const nodeNameField = "spec.nodeName"

// Register wires the controller: requests come from Enqueue (queue changes, config changes),
// from the pool's nodes and headroom Deployment changing, and from each reconcile's requeue.
func (c *Controller) Register(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, nodeNameField, func(o client.Object) []string {
		return []string{o.(*corev1.Pod).Spec.NodeName}
	}); err != nil {
		return fmt.Errorf("indexing pods by node, %w", err)
	}
	toPool := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if pool := o.GetLabels()[nodepools.LabelPool]; pool != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: pool}}}
		}
		return nil
	})
	hasPool := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[nodepools.LabelPool] != ""
	}))
	return ctrl.NewControllerManagedBy(mgr).
		Named("scaling").
		WatchesRawSource(source.Channel(c.events, &handler.EnqueueRequestForObject{})).
		Watches(&corev1.Node{}, toPool, hasPool).
		Watches(&appsv1.Deployment{}, toPool, hasPool).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(c)
}
