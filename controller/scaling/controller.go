// Package scaling turns CI queue depth into runner nodes: per pool it asks the policy for the
// desired node count, keeps that many nodes booted with placeholder (headroom) pods, and marks
// the pool busy so its NodePool blocks consolidation while work is queued or running.
//
// One reconcile evaluates one pool, in steps that each live in their own file: read the fleet
// (fleet.go) and the jobs per node (jobspernode.go), resume in a new process (resume.go),
// decide (evaluate.go), follow and persist the busy state (busy.go), actuate the headroom
// (headroom.go) with each placeholder's deletion cost so a scale-down keeps the warm nodes
// (keepwarm.go), report (report.go). What wakes it is in watches.go and wake.go, and when it
// must look again on the clock alone in next.go: an idle pool is not evaluated at all until
// something it depends on changes or its policy's next change is due. The busy state is kept
// in the shared state.Cluster, where the pools controller reads it.
package scaling

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/echo"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
)

// DefaultInterval is how often a pool is evaluated again while it has queued jobs, while a
// step-limited scale-down is under way (scaleDownStep counts nodes per evaluation), and while
// an evaluation left something to retry. Any other pool is evaluated when something it depends
// on changes, or when its policy's next change on the clock is due (next.go).
const DefaultInterval = 10 * time.Second

// Controller evaluates one pool per reconcile (the request name is the pool name).
type Controller struct {
	kubeClient client.Client
	recorder   record.EventRecorder
	clk        clock.Clock
	tracker    *queue.Tracker
	// cluster holds the config in force (the pools controller's) and the busy state this
	// controller decides for each pool.
	cluster   *state.Cluster
	namespace string
	interval  time.Duration
	// written filters the watch events of the controller's own headroom Deployment applies.
	written *echo.Writes
	// instanceTypes lists the instance types known to the manager (EC2 discovery), for
	// deriving jobsPerNode of a pool that has no node yet; nil or empty: none known.
	instanceTypes InstanceTypes

	// wake is what Enqueue feeds (wake.go); ageOut holds each pool's timer for its queue
	// reading ageing out (ageout.go).
	wake   *wakeups
	ageOut ageOutTimers
	// nodesIndexed is set once Register indexed Nodes by pool; a controller driven without a
	// manager reads the pool's nodes by label from its client instead.
	nodesIndexed bool
	// priorityClassApplied is set once the shared PriorityClass was applied by this process.
	priorityClassApplied atomic.Bool

	mu    sync.Mutex
	pools map[string]*poolState
}

// poolState is what this process remembers of a pool between evaluations (its busy budget
// is in the shared state.Cluster).
type poolState struct {
	policyFor   *config.Pool // the pool config the policy was compiled from
	jobsPerNode int          // and the jobs per node it was compiled with
	jobsFrom    string       // where jobsPerNode came from, logged when it changes
	policy      *policy.Policy
	state       policy.State
	desired     int
	// seeded is set once the pool resumed (see resume): busy from the NodePool's annotation,
	// the policy state from the headroom object; persisted is the busy annotation's value as
	// last read or written ("false" when absent, which reads as idle).
	seeded    bool
	persisted string
	// known is set once the pool's queue data was known in this process.
	known bool
	// held is set once this process recorded a recommendation of the pool: heldTarget, in
	// force until the next evaluation or at most until heldUntil, the policy's next change on
	// the clock (zero: none). See heldState.
	held       bool
	heldTarget int
	heldUntil  time.Time
	// recorded is the policy state (JSON) the headroom object carries as AnnotationState, with
	// the desired count and end of hold it was recorded for.
	recorded        string
	recordedDesired int
	recordedUntil   time.Time
	recordedAt      time.Time // the record's LastEvaluation
	recordedSlots   int       // the record's SpareSlots
	recordedSpare   int       // the record's Spare
	recordedHold    int       // the record's BurstHold
	// reportedSpare, reportedFrom and reportedAt are the spare last reported by an Event.
	reportedSpare int
	reportedFrom  policy.SpareSource
	reportedAt    time.Time
	// headroomRendering and headroomGeneration identify the Deployment this controller last
	// applied (its rendering's digest, package unchanged), so an unchanged one is not applied
	// again; a hand edit bumps the generation and is reverted.
	headroomRendering  string
	headroomGeneration int64
	// bufferHash identifies the CapacityBuffer and PodTemplate last applied ("" when none is
	// known to exist: a fresh process, or after they were deleted); bufferGone is set once a
	// pods-mode pool made sure no CapacityBuffer of it is left.
	bufferHash string
	bufferGone bool
	// worked are the pool's nodes known to have run runner jobs, and costs the deletion costs
	// this process wrote on placeholders (keepwarm.go), both for the nodes and pods that exist.
	worked map[types.UID]bool
	costs  map[types.UID]written
}

// NewController builds the scaling controller. It reads the config in force from cluster and
// records each pool's busy budget there.
func NewController(kubeClient client.Client, recorder record.EventRecorder, clk clock.Clock, tracker *queue.Tracker, cluster *state.Cluster, namespace string) *Controller {
	c := &Controller{
		kubeClient: kubeClient, recorder: recorder, clk: clk, tracker: tracker, cluster: cluster, namespace: namespace,
		interval: DefaultInterval, wake: &wakeups{}, pools: map[string]*poolState{},
	}
	c.written = echo.New(func(o client.Object) {
		if pool := o.GetLabels()[nodepools.LabelPool]; pool != "" {
			c.Enqueue(pool)
		}
	})
	return c
}

// SetInterval sets how often a busy pool is evaluated again (DefaultInterval). Call it before
// the manager starts.
func (c *Controller) SetInterval(d time.Duration) {
	if d > 0 {
		c.interval = d
	}
}

// Enqueue asks for a pool to be evaluated now (a queue reading changed, the config changed).
func (c *Controller) Enqueue(pool string) { c.wake.add(pool) }

// ConfigApplied evaluates every pool of a config put in force, and every pool this process
// evaluated that the config dropped, so its headroom goes (forget).
func (c *Controller) ConfigApplied(_ context.Context, cfg *config.Config) {
	kept := map[string]bool{}
	for i := range cfg.Pools {
		kept[cfg.Pools[i].Name] = true
		c.Enqueue(cfg.Pools[i].Name)
	}
	c.mu.Lock()
	var dropped []string
	for pool := range c.pools {
		if !kept[pool] {
			dropped = append(dropped, pool)
		}
	}
	c.mu.Unlock()
	for _, pool := range dropped {
		c.Enqueue(pool)
	}
}

// Reconcile evaluates one pool: read, decide, follow the busy state, actuate headroom,
// report. Only the decision is needed by every later step; the busy state and the headroom
// are actuated independently and their errors joined, so one failing never holds the other.
func (c *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	name := req.Name
	cfg := c.cluster.Config()
	if cfg == nil {
		// No config is in force yet (startup, or no valid config so far): that says nothing
		// about which pools exist, so nothing is forgotten now. Look again later: a config
		// change only enqueues the pools it keeps, not one that left it while warmpool was down.
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
	jobsPerNode, from, jobsRetry := c.jobsPerNode(ctx, cfg, p, fleet.shapes)
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
	ev := &evaluation{pool: p, jobsPerNode: jobsPerNode, fleet: fleet, retry: jobsRetry}
	ev.counts, ev.known = c.tracker.Pool(name)
	// For the restore controller: a new node of a pool whose jobs wait skips its restore.
	c.cluster.SetJobs(name, state.Jobs{Needed: max(ev.counts.Queued, 0) + max(ev.counts.Running, 0),
		PerNode: max(jobsPerNode, 1), Known: ev.known})
	c.mu.Lock()
	seeded := ps.seeded
	c.mu.Unlock()
	if !seeded {
		// First evaluation in this process: start from what the last one actuated, not from
		// the nodes that exist, so a restart changes neither the headroom nor the budgets.
		if ev.resumedFrom, err = c.resume(ctx, p, ps, fleet.busy); err != nil {
			return reconcile.Result{}, err
		}
	}
	// Taken only now, just before the policy folds them in: a resume that fails would
	// otherwise drop them, and the rate estimate would miss them for good.
	ev.arrivals = c.tracker.TakeArrivals(name)
	if err := c.evaluate(ps, ev); err != nil {
		return reconcile.Result{}, err
	}

	// Budgets first: they keep warm nodes from being consolidated, and must follow the busy
	// state even when the headroom cannot be actuated (a missing CapacityBuffer CRD).
	np := c.nodePool(ctx, name)
	c.followBusy(ctx, np, ev)
	persistErr := c.persistBusy(ctx, np, ps, ev.busy.Busy)
	// A reading that ages out on the clock alone wakes the pool (ageout.go); a new one
	// wakes it through the tracker's OnChange.
	ev.ageOut = c.watchAgeOut(name)
	// The placeholders' deletion costs before the headroom: a scale-down this evaluation
	// applies must find the costs of the nodes as they are now.
	keepErr := c.keepWarm(ctx, ps, ev)
	actErr := c.actuateHeadroom(ctx, np, ps, ev)
	c.report(ctx, np, ev)
	if err := errors.Join(actErr, persistErr, keepErr); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: c.requeueAfter(ev)}, nil
}

// forget drops a pool that left the config: its headroom goes, its state is cleared.
func (c *Controller) forget(ctx context.Context, pool string) error {
	c.mu.Lock()
	delete(c.pools, pool)
	c.mu.Unlock()
	c.ageOut.stop(pool)
	c.cluster.ForgetPool(pool)
	for _, m := range []interface{ DeleteLabelValues(...string) bool }{desiredNodes, headroomPods, poolNodes, poolBusy, spareNodes, arrivalRate, burstHoldNodes} {
		m.DeleteLabelValues(pool)
	}
	spareFrom.DeletePartialMatch(prometheus.Labels{"pool": pool})
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
