// Package scaling turns CI queue depth into runner nodes: per pool it asks the policy for the
// desired node count, keeps that many nodes booted with placeholder (headroom) pods, and marks
// the pool busy so its NodePool blocks consolidation while work is queued or running.
package scaling

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	resourcehelper "k8s.io/component-helpers/resource"
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
	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
	"warmpool.io/warmpool/volumes"
)

// FieldManager owns the headroom objects.
const FieldManager = "warmpool"

// BusyFieldManager owns the busy annotation on NodePools. It is not FieldManager: the pools
// controller applies the rest of the NodePool as FieldManager, and an apply drops every field
// its manager owned but left out, so a shared manager would erase the annotation each render.
const BusyFieldManager = "warmpool-scaling"

// AnnotationBusy on a pool's NodePool records the busy state the scaling controller last
// decided ("true" or "false"). A restarted controller seeds the pool from it, so the NodePool
// keeps blocking consolidation until fresh queue data says the pool is idle, rather than
// opening its budgets while every source is still unknown.
const AnnotationBusy = "warmpool.io/busy"

// Event reasons on the pool's NodePool.
const (
	ReasonScaledUp        = "ScaledUp"
	ReasonScaledDown      = "ScaledDown"
	ReasonBudgetsBlocked  = "ConsolidationBlocked"
	ReasonBudgetsRestored = "ConsolidationRestored"
	ReasonPolicyInvalid   = "ScalingPolicyInvalid"
	ReasonHeadroomFailed  = "HeadroomFailed"
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
	// onBusyChange is told when a pool's busy budget changes (its busy state flips, or in
	// surplus mode the nodes it lets Karpenter consolidate), so its NodePool's budgets follow.
	onBusyChange func(pool string)
	// instanceTypes lists the instance types known to the manager (EC2 discovery), for
	// deriving jobsPerNode of a pool that has no node yet; nil or empty: none known.
	instanceTypes InstanceTypes

	events chan event.GenericEvent
	// priorityClassApplied is set once the shared PriorityClass was applied by this process.
	priorityClassApplied atomic.Bool

	mu    sync.Mutex
	pools map[string]*poolState
}

type poolState struct {
	policyFor   *config.Pool // the pool config the policy was compiled from
	jobsPerNode int          // and the jobs per node it was compiled with
	jobsFrom    string       // where jobsPerNode came from, logged when it changes
	policy      *policy.Policy
	state       policy.State
	desired     int
	busy        bool
	// disruptable is how many nodes the busy budget lets Karpenter consolidate (policy.Surplus);
	// 0 while idle, where the busy budget is not rendered, so idle churn re-renders nothing.
	disruptable int
	// seeded is set once the pool resumed (see resume): busy from the NodePool's annotation,
	// the policy state from the headroom object; persisted is the busy annotation's value as
	// last read or written ("" when absent).
	seeded    bool
	persisted string
	// known is set once the pool's queue data was known in this process.
	known bool
	// recorded is the policy state (JSON) the headroom object carries as AnnotationState, with
	// the desired count and end of hold it was recorded for.
	recorded        string
	recordedDesired int
	recordedUntil   time.Time
	recordedAt      time.Time // the record's LastEvaluation
	// headroomHash and headroomGeneration identify the Deployment this controller last applied,
	// so an unchanged one is not applied again; a hand edit bumps the generation and is reverted.
	headroomHash       string
	headroomGeneration int64
	// bufferHash identifies the CapacityBuffer and PodTemplate last applied ("" when none is
	// known to exist: a fresh process, or after they were deleted); bufferGone is set once a
	// pods-mode pool made sure no CapacityBuffer of it is left.
	bufferHash string
	bufferGone bool
}

// NewController builds the scaling controller. current returns the config in force.
func NewController(kubeClient client.Client, recorder record.EventRecorder, clk clock.Clock, tracker *queue.Tracker, namespace string, current func() *config.Config, onBusyChange func(pool string)) *Controller {
	return &Controller{
		kubeClient: kubeClient, recorder: recorder, clk: clk, tracker: tracker, namespace: namespace,
		current: current, interval: DefaultInterval, onBusyChange: onBusyChange,
		events: make(chan event.GenericEvent, 1024), pools: map[string]*poolState{},
	}
}

// InstanceTypes lists the instance types the manager knows for a config (its discovery
// settings); nil with discovery off.
type InstanceTypes func(ctx context.Context, cfg *config.Config) ([]discovery.InstanceType, error)

// SetInstanceTypes sets where instance types come from. Call it before the manager starts.
func (c *Controller) SetInstanceTypes(f InstanceTypes) { c.instanceTypes = f }

// SetInterval sets how often each pool is re-evaluated without any event (DefaultInterval).
// Call it before the manager starts.
func (c *Controller) SetInterval(d time.Duration) {
	if d > 0 {
		c.interval = d
	}
}

// Busy reports whether a pool has work queued or running, or is inside a warm window.
func (c *Controller) Busy(pool string) bool { return c.BusyBudget(pool).Busy }

// BusyBudget is the pool's busy state and how many of its nodes Karpenter may consolidate
// meanwhile (0 with scaling.busyBudget block); the pools controller renders the pool's first
// budget from it.
//
// Before the pool's first evaluation in this process it answers from the NodePool's
// AnnotationBusy, blocking all consolidation while busy, so the NodePool rendered right after
// a restart keeps the budgets the last process decided (or stricter ones).
func (c *Controller) BusyBudget(pool string) nodepools.BusyBudget {
	c.mu.Lock()
	ps, ok := c.pools[pool]
	if ok && ps.seeded {
		defer c.mu.Unlock()
		return nodepools.BusyBudget{Busy: ps.busy, Disruptable: ps.disruptable}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	busy, _ := c.persistedBusy(ctx, pool)
	return nodepools.BusyBudget{Busy: busy}
}

// persistedBusy reads the NodePool's AnnotationBusy (through the cache); raw is "" when the
// NodePool or its annotation does not exist.
func (c *Controller) persistedBusy(ctx context.Context, pool string) (busy bool, raw string) {
	// Typed, like nodePool's read: one NodePool informer serves both.
	np := &karpv1.NodePool{}
	if err := c.kubeClient.Get(ctx, types.NamespacedName{Name: nodepools.Name(pool)}, np); err != nil {
		if !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "reading the persisted busy state; taking the pool as idle", "pool", pool)
		}
		return false, ""
	}
	raw = np.GetAnnotations()[AnnotationBusy]
	return raw == "true", raw
}

// persistBusy records busy on the pool's NodePool, once the NodePool exists (the pools
// controller creates it, rendering its budgets from Busy, which needs no annotation yet).
func (c *Controller) persistBusy(ctx context.Context, pool string, ps *poolState, busy bool) error {
	want := strconv.FormatBool(busy)
	c.mu.Lock()
	done := ps.persisted == want
	c.mu.Unlock()
	if done {
		return nil
	}
	if err := c.kubeClient.Get(ctx, types.NamespacedName{Name: nodepools.Name(pool)}, &karpv1.NodePool{}); apierrors.IsNotFound(err) {
		return nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePool"))
	u.SetName(nodepools.Name(pool))
	u.SetAnnotations(map[string]string{AnnotationBusy: want})
	if err := c.kubeClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(BusyFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("recording busy=%s on NodePool %s, %w", want, u.GetName(), err)
	}
	c.mu.Lock()
	ps.persisted = want
	c.mu.Unlock()
	return nil
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
	fleet, err := c.poolNodes(ctx, name)
	if err != nil {
		return reconcile.Result{}, err
	}
	jobsPerNode, from := c.jobsPerNode(ctx, cfg, p, fleet.shapes)
	ps, err := c.poolState(p, jobsPerNode)
	if err != nil {
		np := c.nodePool(ctx, name)
		c.recorder.Eventf(np, corev1.EventTypeWarning, ReasonPolicyInvalid, "scaling policy: %v", err)
		return reconcile.Result{}, nil
	}
	if ps.jobsFrom != from {
		ps.jobsFrom = from
		log.FromContext(ctx).Info("jobs per node", "pool", name, "jobsPerNode", jobsPerNode, "from", from)
	}
	counts, known := c.tracker.Pool(name)
	nodes, busyNodes := fleet.nodes, fleet.busy
	c.mu.Lock()
	seeded := ps.seeded
	c.mu.Unlock()
	var resumedFrom string
	if !seeded {
		// First evaluation in this process: start from what the last one actuated, not from
		// the nodes that exist, so a restart changes neither the headroom nor the budgets.
		if resumedFrom, err = c.resume(ctx, p, ps, busyNodes); err != nil {
			return reconcile.Result{}, err
		}
	}
	c.mu.Lock()
	decision, state := ps.policy.Decide(policy.Input{
		Now: c.clk.Now(), Queued: counts.Queued, Running: counts.Running, Known: known,
	}, ps.state)
	if !known && !ps.known {
		// No reading since this process started (its sources have not answered yet): the
		// policy holds the resumed count, but its hold is not recorded as a recommendation.
		// Otherwise every restart would stretch a scale-down in progress by a whole window,
		// and a crash loop would never let one finish.
		state.History = ps.state.History
	}
	ps.known = ps.known || known
	prevDesired, prevBusy, prevDisruptable := ps.desired, ps.busy, ps.disruptable
	ps.state, ps.desired = state, decision.Desired
	// Recorded on the headroom object with the next apply. Not on every evaluation (each moves
	// the history's timestamps): when the count or the end of its hold changes, and, while
	// nodes are desired, once the record is half a window old, so a new process resumes with
	// the recent demand still holding them (a webhook source restarts knowing no job).
	stale := decision.Desired > 0 && !state.LastEvaluation.Before(ps.recordedAt.Add(ps.policy.Stabilization()/2))
	if decision.Desired != ps.recordedDesired || !decision.StabilizedUntil.Equal(ps.recordedUntil) || ps.recorded == "" || stale {
		raw, err := json.Marshal(state)
		if err != nil {
			c.mu.Unlock()
			return reconcile.Result{}, fmt.Errorf("encoding the scaling state of pool %s, %w", name, err)
		}
		ps.recorded, ps.recordedDesired, ps.recordedUntil, ps.recordedAt = string(raw), decision.Desired, decision.StabilizedUntil, state.LastEvaluation
	}
	recorded := ps.recorded
	// Unknown data changes nothing: not the node count (the policy holds it) and not the
	// budgets, which stay as they were.
	if known {
		ps.busy = policy.Busy(counts.Queued, counts.Running, decision.WarmWindowActive)
	}
	busy := ps.busy
	ps.disruptable = 0
	if busy {
		ps.disruptable = policy.Surplus(p.Scaling.BusyBudget == config.BusyBudgetSurplus, nodes, decision.Desired)
	}
	disruptable := ps.disruptable
	c.mu.Unlock()

	// Budgets first: they keep warm nodes from being consolidated, and must follow the busy
	// state even when the headroom cannot be actuated (a missing CapacityBuffer CRD).
	np := c.nodePool(ctx, name)
	if busy != prevBusy {
		switch {
		case busy && p.Scaling.BusyBudget == config.BusyBudgetSurplus:
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsBlocked, "consolidation limited to the nodes beyond desired (%d now): %d queued, %d running jobs (warm window: %t)", disruptable, counts.Queued, counts.Running, decision.WarmWindowActive)
		case busy:
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsBlocked, "consolidation blocked: %d queued, %d running jobs (warm window: %t)", counts.Queued, counts.Running, decision.WarmWindowActive)
		default:
			c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonBudgetsRestored, "queue idle: configured disruption budgets restored")
		}
	}
	if busy != prevBusy || disruptable != prevDisruptable {
		if busy && busy == prevBusy {
			log.FromContext(ctx).Info("busy budget", "pool", name, "disruptable", disruptable, "previous", prevDisruptable, "nodes", nodes, "desired", decision.Desired)
		}
		if c.onBusyChange != nil {
			c.onBusyChange(name)
		}
	}
	persistErr := c.persistBusy(ctx, name, ps, busy)

	headroom := int32(max(0, decision.Desired-busyNodes))
	// Placeholders are sized to one node's worth of runner work, with the jobs per node in force.
	sized := *p
	sized.Scaling.JobsPerNode = jobsPerNode
	actErr := c.actuate(ctx, &sized, ps, headroom, recorded)
	if actErr != nil {
		c.recorder.Eventf(np, corev1.EventTypeWarning, ReasonHeadroomFailed, "headroom of %d not actuated: %v", headroom, actErr)
	}
	desiredNodes.WithLabelValues(name).Set(float64(decision.Desired))
	headroomPods.WithLabelValues(name).Set(float64(headroom))
	poolNodes.WithLabelValues(name).Set(float64(nodes))
	poolBusy.WithLabelValues(name).Set(boolFloat(busy))
	if decision.Direction != policy.DirectionNone {
		decisions.WithLabelValues(name, string(decision.Direction), string(decision.Reason)).Inc()
	}
	if resumedFrom != "" {
		c.recorder.Eventf(np, corev1.EventTypeNormal, ReasonResumed, "scaling resumed at desired nodes %d from %s; now %d (%s): %d queued, %d running jobs (known: %t), %d nodes, %d busy, %d headroom pods",
			prevDesired, resumedFrom, decision.Desired, decision.Reason, counts.Queued, counts.Running, known, nodes, busyNodes, headroom)
		log.FromContext(ctx).Info("scaling resumed", "pool", name, "desired", prevDesired, "from", resumedFrom, "now", decision.Desired, "known", known)
	}
	if decision.Desired != prevDesired {
		reason := ReasonScaledUp
		if decision.Desired < prevDesired {
			reason = ReasonScaledDown
		}
		c.recorder.Eventf(np, corev1.EventTypeNormal, reason, "desired nodes %d -> %d (%s): %d queued, %d running jobs, %d nodes, %d busy, %d headroom pods",
			prevDesired, decision.Desired, decision.Reason, counts.Queued, counts.Running, nodes, busyNodes, headroom)
		log.FromContext(ctx).Info("scaling decision", "pool", name, "desired", decision.Desired, "previous", prevDesired, "reason", decision.Reason, "queued", counts.Queued, "running", counts.Running, "known", known)
	}
	if err := errors.Join(actErr, persistErr); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: c.requeueAfter(decision)}, nil
}

// minRequeue is the requeue of a hold whose window already ran out: as soon as possible, but
// positive (a zero RequeueAfter means no requeue at all).
const minRequeue = time.Millisecond

// requeueAfter is when the pool must be evaluated again without any event: when the
// stabilization window holding it above its target runs out, else at the periodic interval.
// The window may run out while this evaluation actuates (a short window, a slow apply): the
// pool is then evaluated again at once. Requeueing only for a window still ahead left such a
// hold, and so the scale-down a delivery asked for, to the next periodic evaluation.
func (c *Controller) requeueAfter(decision policy.Decision) time.Duration {
	if decision.StabilizedUntil.IsZero() {
		return c.interval
	}
	return min(c.interval, max(decision.StabilizedUntil.Sub(c.clk.Now()), minRequeue))
}

// poolState returns the pool's state, recompiling the policy when the pool's config or its
// jobs per node changed.
func (c *Controller) poolState(p *config.Pool, jobsPerNode int) (*poolState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.pools[p.Name]
	if ok && ps.policyFor == p && ps.jobsPerNode == jobsPerNode {
		return ps, nil
	}
	pol, err := policy.Compile(PolicyConfig(p, jobsPerNode))
	if err != nil {
		return nil, err
	}
	if !ok {
		ps = &poolState{}
		c.pools[p.Name] = ps
	}
	ps.policyFor, ps.jobsPerNode, ps.policy = p, jobsPerNode, pol
	return ps, nil
}

// PolicyConfig maps a pool's scaling config to the policy's, with the jobs per node in force
// (configured, or derived: see jobsPerNode).
func PolicyConfig(p *config.Pool, jobsPerNode int) policy.Config {
	s := p.Scaling
	maxNodes := 1 << 20
	if s.MaxNodes != nil {
		maxNodes = *s.MaxNodes
	}
	stabilization := s.ScaleDownStabilization.Duration
	if stabilization == 0 {
		// The config's 0 means no window (scale down at the next evaluation); the policy reads
		// a zero as its own default, so hand it the shortest window there is.
		stabilization = time.Nanosecond
	}
	return policy.Config{
		JobsPerNode:            max(jobsPerNode, 1),
		WarmMinimum:            s.WarmMinimum,
		WarmWindows:            s.WarmWindows,
		MaxNodes:               maxNodes,
		ScaleDownStabilization: stabilization,
		ScaleDownStep:          s.ScaleDownStep,
	}
}

// Where jobs per node came from, as logged.
const (
	jobsConfigured    = "configured"
	jobsNoRequests    = "default: no runnerRequests"
	jobsNodes         = "the pool's Ready nodes"
	jobsInstanceTypes = "the instance types the pool admits"
	jobsUnknown       = "default: no Ready node and no known instance type to derive it from"
)

// jobsPerNode is the configured scaling.jobsPerNode, or, when it is 0 and runnerRequests are
// set, derived from what one node offers: the pool's Ready nodes (their allocatable minus
// their DaemonSet pods), else the instance types the pool admits (estimated allocatable minus
// the engine's requests), else 1.
func (c *Controller) jobsPerNode(ctx context.Context, cfg *config.Config, p *config.Pool, nodeShapes []corev1.ResourceList) (int, string) {
	s := &p.Scaling
	switch {
	case s.JobsPerNode > 0:
		return s.JobsPerNode, jobsConfigured
	case len(s.RunnerRequests) == 0:
		return 1, jobsNoRequests
	}
	if n, ok := policy.DeriveJobsPerNode(s.RunnerRequests, nodeShapes); ok {
		return n, jobsNodes
	}
	if n, ok := policy.DeriveJobsPerNode(s.RunnerRequests, c.instanceTypeShapes(ctx, cfg, p)); ok {
		return n, jobsInstanceTypes
	}
	return 1, jobsUnknown
}

// instanceTypeShapes estimates what a new node of each instance type the pool admits offers.
func (c *Controller) instanceTypeShapes(ctx context.Context, cfg *config.Config, p *config.Pool) []corev1.ResourceList {
	if c.instanceTypes == nil {
		return nil
	}
	types, err := c.instanceTypes(ctx, cfg)
	if err != nil {
		log.FromContext(ctx).Info("instance types unavailable for deriving jobs per node", "pool", p.Name, "error", err.Error())
	}
	var engine corev1.ResourceList
	if r := p.Engine.Resources; r != nil && p.Engine.ExistingDaemonSet == nil {
		engine = r.Requests
	}
	var maxPods int32
	if k := cfg.NodeClass.Kubelet; k != nil && k.MaxPods != nil {
		maxPods = *k.MaxPods
	}
	var shapes []corev1.ResourceList
	for _, it := range discovery.Filter(nodepools.DiscoveryRequirements(p), types) {
		shapes = append(shapes, policy.Available(policy.EstimateAllocatable(it.VCPU, it.MemoryMiB, maxPods), engine))
	}
	return shapes
}

// fleet is what the pool's nodes say: how many there are, how many run real work, and what
// each Ready one offers runner pods.
type fleet struct {
	nodes, busy int
	shapes      []corev1.ResourceList
}

// poolNodes counts the pool's live nodes, and those running runner work (see isWork).
func (c *Controller) poolNodes(ctx context.Context, pool string) (fleet, error) {
	var f fleet
	list := &corev1.NodeList{}
	if err := c.kubeClient.List(ctx, list, client.MatchingLabels{nodepools.LabelPool: pool}); err != nil {
		return f, fmt.Errorf("listing nodes of pool %s, %w", pool, err)
	}
	for i := range list.Items {
		n := &list.Items[i]
		if n.DeletionTimestamp != nil {
			continue
		}
		f.nodes++
		pods := &corev1.PodList{}
		if err := c.kubeClient.List(ctx, pods, client.MatchingFields{nodeNameField: n.Name}); err != nil {
			return f, fmt.Errorf("listing pods on %s, %w", n.Name, err)
		}
		var daemons []corev1.ResourceList
		busy := false
		for j := range pods.Items {
			pod := &pods.Items[j]
			busy = busy || isWork(pod)
			if isDaemon(pod) && !finished(pod) {
				daemons = append(daemons, podRequests(pod))
			}
		}
		if busy {
			f.busy++
		}
		if ready(n) && len(n.Status.Allocatable) > 0 {
			f.shapes = append(f.shapes, policy.Available(n.Status.Allocatable, daemons...))
		}
	}
	return f, nil
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func isDaemon(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podRequests is what the scheduler reserves for a pod: its containers' requests, or an init
// container's when larger (the engine pod's warmpool-tools init container is), plus sidecars
// and pod overhead, computed by the scheduler's own helper.
func podRequests(p *corev1.Pod) corev1.ResourceList {
	return resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
}

// mirrorPodAnnotation marks a static pod's mirror in the API server (kubelet types).
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// isWork says whether a pod makes its node busy for scaling: runner work, that is any pod that
// has not finished and is not being deleted, except node agents (DaemonSet and static pods)
// and what warmpool runs itself (placeholders; guard, save, restore and verify pods). A
// restore pod counted as work would shrink the headroom by the node it restores, deleting the
// placeholder that brought the node up, to recreate it when the restore ends.
func isWork(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && !finished(p) && !isDaemon(p) && !isStatic(p) && !isWarmpools(p)
}

// isWarmpools says whether warmpool runs the pod itself: a placeholder, a pod of the cache
// protocol, or any other pod labelled as managed by warmpool.
func isWarmpools(p *corev1.Pod) bool {
	if p.Labels[nodepools.LabelHeadroom] == "true" || p.Labels[nodepools.LabelManagedBy] == nodepools.ManagedBy {
		return true
	}
	_, op := p.Labels[volumes.LabelOp]
	return op
}

func isStatic(p *corev1.Pod) bool { return p.Annotations[mirrorPodAnnotation] != "" }

// actuate keeps replicas nodes' worth of headroom with the pool's actuator and removes the
// other actuator's objects, so switching scaling.headroom hands over without leaving both.
func (c *Controller) actuate(ctx context.Context, p *config.Pool, ps *poolState, replicas int32, state string) error {
	// Both actuators' pod template names the PriorityClass.
	if !c.priorityClassApplied.Load() {
		if _, err := c.apply(ctx, nodepools.HeadroomPriorityClassObject()); err != nil {
			return err
		}
		c.priorityClassApplied.Store(true)
	}
	if p.Scaling.Headroom == config.HeadroomCapacityBuffer {
		if err := c.applyBuffer(ctx, p, ps, replicas, state); err != nil {
			return err
		}
		d := &appsv1.Deployment{}
		err := c.kubeClient.Get(ctx, types.NamespacedName{Namespace: c.namespace, Name: nodepools.HeadroomName(p.Name)}, d)
		if err == nil && d.DeletionTimestamp == nil {
			if err := c.kubeClient.Delete(ctx, d); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting placeholder Deployment of pool %s (it now uses a CapacityBuffer), %w", p.Name, err)
			}
		}
		ps.headroomHash = ""
		return nil
	}
	if err := c.applyHeadroom(ctx, p, ps, replicas, state); err != nil {
		return err
	}
	if ps.bufferGone {
		return nil
	}
	if err := c.deleteBuffer(ctx, p.Name); err != nil {
		return err
	}
	ps.bufferHash, ps.bufferGone = "", true
	return nil
}

// applyBuffer server-side-applies the pool's PodTemplate (one chunk's shape) and its
// CapacityBuffer of replicas chunks. Neither is read back: a watch on a kind whose CRD may not
// be installed is not worth it, so an unchanged pair is skipped by hash alone.
func (c *Controller) applyBuffer(ctx context.Context, p *config.Pool, ps *poolState, replicas int32, state string) error {
	tpl := nodepools.HeadroomPodTemplate(p, c.namespace)
	buf := nodepools.HeadroomCapacityBuffer(p, c.namespace, replicas)
	buf.Annotations = map[string]string{AnnotationState: state}
	raw, err := json.Marshal([]any{tpl.Template, buf.Spec, state})
	if err != nil {
		return fmt.Errorf("hashing capacity buffer, %w", err)
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:8])
	if ps.bufferHash == hash {
		return nil
	}
	// The template first: Karpenter resolves the buffer's podTemplateRef when it sees it.
	for _, obj := range []client.Object{tpl, buf} {
		if _, err := c.apply(ctx, obj); err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("pool %s asks for a CapacityBuffer, but the cluster serves no %s (install Karpenter's CapacityBuffer CRD and enable its feature gate), %w", p.Name, nodepools.CapacityBufferGV, err)
			}
			return err
		}
	}
	ps.bufferHash, ps.bufferGone = hash, false
	return nil
}

// deleteBuffer removes the pool's CapacityBuffer and PodTemplate, if any. A cluster without
// the CapacityBuffer CRD has none.
func (c *Controller) deleteBuffer(ctx context.Context, pool string) error {
	buf := &unstructured.Unstructured{}
	buf.SetGroupVersionKind(nodepools.CapacityBufferGV.WithKind("CapacityBuffer"))
	buf.SetNamespace(c.namespace)
	buf.SetName(nodepools.HeadroomName(pool))
	tpl := &corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: nodepools.HeadroomName(pool)}}
	for _, obj := range []client.Object{buf, tpl} {
		if err := c.kubeClient.Delete(ctx, obj); client.IgnoreNotFound(err) != nil && !meta.IsNoMatchError(err) {
			return fmt.Errorf("deleting capacity buffer of pool %s, %w", pool, err)
		}
	}
	return nil
}

// applyHeadroom server-side-applies the pool's placeholder Deployment at the given size. Every
// pool is evaluated every few seconds, so an apply that would change nothing is skipped: when
// the cached Deployment is the generation this controller last wrote with the same rendered
// spec. (actuate applies the shared PriorityClass once per process: it is not read back, a
// watch on PriorityClasses for one object is not worth its informer.)
func (c *Controller) applyHeadroom(ctx context.Context, p *config.Pool, ps *poolState, replicas int32, state string) error {
	d := nodepools.HeadroomDeployment(p, c.namespace, replicas)
	// On the Deployment, not its pod template: a new state must not replace the placeholders.
	d.Annotations = map[string]string{AnnotationState: state}
	u, err := nodepools.ToUnstructured(d)
	if err != nil {
		return err
	}
	spec, err := json.Marshal([]any{u.Object["spec"], state})
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
	for _, m := range []interface{ DeleteLabelValues(...string) bool }{desiredNodes, headroomPods, poolNodes, poolBusy} {
		m.DeleteLabelValues(pool)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: nodepools.HeadroomName(pool)}}
	if err := c.kubeClient.Delete(ctx, d); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting headroom of removed pool %s, %w", pool, err)
	}
	return c.deleteBuffer(ctx, pool)
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
// from the pool's nodes, its headroom Deployment and the pods on its nodes changing, and from
// each reconcile's requeue.
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
	hasPool := builder.WithPredicates(predicate.NewPredicateFuncs(hasPoolLabel))
	// Pods: a runner pod landing on (or leaving) a node changes the pool's busy nodes, so its
	// headroom should follow at once, not on the next periodic evaluation. This reuses the
	// full-object Pod informer the busy-node count above already needs (spec.nodeName, phase,
	// owners, all namespaces: runners live anywhere), so it costs no second cache. A
	// metadata-only watch would add an informer of its own and still could not tell which node
	// a pod is on; a label filter cannot name runner pods, which carry no warmpool label.
	return ctrl.NewControllerManagedBy(mgr).
		Named("scaling").
		WatchesRawSource(source.Channel(c.events, &handler.EnqueueRequestForObject{})).
		Watches(&corev1.Node{}, toPool, builder.WithPredicates(predicate.NewPredicateFuncs(hasPoolLabel), nodewatch.Changed)).
		Watches(&appsv1.Deployment{}, toPool, hasPool).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(c.podPool), builder.WithPredicates(podMoved)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(counted.Reconciler("scaling", c))
}

func hasPoolLabel(o client.Object) bool { return o.GetLabels()[nodepools.LabelPool] != "" }

// podPool maps a pod to its pool: the pool label of the node it is bound to, or, before it is
// bound, the pool its nodeSelector asks for.
func (c *Controller) podPool(ctx context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	pool := p.Spec.NodeSelector[nodepools.LabelPool]
	if p.Spec.NodeName != "" {
		// The typed Node informer this controller already watches answers this.
		n := &corev1.Node{}
		if err := c.kubeClient.Get(ctx, types.NamespacedName{Name: p.Spec.NodeName}, n); err == nil {
			pool = n.GetLabels()[nodepools.LabelPool]
		}
	}
	if pool == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: pool}}}
}

// podMoved passes the pod events that can change a pool's busy nodes or node shapes: a pod
// created bound or aimed at a pool, bound to a node, finished, being deleted, or gone.
// warmpool's own pods (placeholders, cache protocol pods) never count as work, and status
// churn of a running pod changes nothing, so neither wakes the controller. DaemonSet pods
// (the engine's included, though warmpool renders it) do: their requests shape what a node
// offers runner pods.
var podMoved = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return podRelevant(e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return podRelevant(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Pod)
		cur, okNew := e.ObjectNew.(*corev1.Pod)
		if !okOld || !okNew || !podRelevant(cur) {
			return false
		}
		return old.Spec.NodeName != cur.Spec.NodeName || finished(old) != finished(cur) ||
			(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil)
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func podRelevant(o client.Object) bool {
	p, ok := o.(*corev1.Pod)
	if !ok || isWarmpools(p) && !isDaemon(p) {
		return false
	}
	return p.Spec.NodeName != "" || p.Spec.NodeSelector[nodepools.LabelPool] != ""
}
