// Package state holds what several controllers need to know of each other's decisions, behind
// methods with their own locking, so no controller calls into another or holds a function of
// it (Karpenter's pkg/controllers/state.Cluster is the model):
//
//   - the config in force, which the pools controller puts in force after applying it and every
//     other controller reads (ConfigFollowers are told, in order, as it changes);
//   - each pool's busy budget, which the scaling controller decides and the pools controller
//     renders into the pool's NodePool (it watches BusyChanges to re-render);
//   - each pool's job demand as the scaling controller last read it, which the restore
//     controller weighs against a restore (cache.restore.whenJobsWait).
package state

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
)

// AnnotationBusy on a pool's NodePool records the busy state the scaling controller last
// decided ("true" or "false"). A restarted controller seeds the pool from it, so the NodePool
// keeps blocking consolidation until fresh queue data says the pool is idle, rather than
// opening its budgets while every source is still unknown.
const AnnotationBusy = "warmpool.io/busy"

// ConfigFollower is told about each config put in force, on the goroutine that put it in
// force, before the next one can be: queue sources rebuild their pollers, controllers enqueue
// every pool of it. It must not block for long.
type ConfigFollower interface {
	ConfigApplied(ctx context.Context, cfg *config.Config)
}

// Cluster is the shared state. The zero value is not usable: call NewCluster.
type Cluster struct {
	// kube reads NodePools (through the manager's cache) for a busy state no evaluation in this
	// process has decided yet.
	kube client.Reader

	mu        sync.RWMutex
	config    *config.Config
	followers []ConfigFollower
	// busy holds the budgets decided (or seeded) in this process; a pool absent from it
	// answers from its NodePool's AnnotationBusy.
	busy map[string]nodepools.BusyBudget
	// jobs holds each pool's last job demand read by the scaling controller in this process.
	jobs map[string]Jobs

	busyChanged chan event.GenericEvent
}

// Jobs is a pool's job demand as the scaling controller last read it.
type Jobs struct {
	// Needed is the jobs that need a slot: queued plus running.
	Needed int
	// PerNode is how many jobs one of the pool's nodes runs at once (>= 1).
	PerNode int
	// Known is false while the pool's queue sources are stale or failed: Needed is then no
	// evidence of anything.
	Known bool
}

// NewCluster returns an empty state: no config in force, no pool's busy state decided.
func NewCluster(kube client.Reader) *Cluster {
	return &Cluster{kube: kube, busy: map[string]nodepools.BusyBudget{}, jobs: map[string]Jobs{}, busyChanged: make(chan event.GenericEvent, 1)}
}

// Follow adds followers of the config in force, told in the order given. Call it before the
// manager starts.
func (c *Cluster) Follow(f ...ConfigFollower) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.followers = append(c.followers, f...)
}

// Config returns the config in force, or nil before any config was accepted. Controllers read
// pools from here, never from the raw ConfigMap.
func (c *Cluster) Config() *config.Config {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.config
}

// SetConfig puts cfg in force when it differs from the config in force (semantically: an
// equal config keeps the one in force, so what was compiled from it stays valid), and tells
// every follower, in order.
func (c *Cluster) SetConfig(ctx context.Context, cfg *config.Config) {
	c.mu.Lock()
	changed := c.config == nil || !equality.Semantic.DeepEqual(c.config, cfg)
	if changed {
		c.config = cfg
	}
	followers := c.followers
	c.mu.Unlock()
	if !changed {
		return
	}
	for _, f := range followers {
		f.ConfigApplied(ctx, cfg)
	}
}

// Busy reports whether a pool has work queued or running, or is inside a warm window.
func (c *Cluster) Busy(pool string) bool { return c.BusyBudget(pool).Busy }

// BusyBudget is the pool's busy state and how many of its nodes Karpenter may consolidate
// meanwhile (0 with scaling.busyBudget block); the pools controller renders the pool's first
// budget from it.
//
// Before the pool's first evaluation in this process it answers from the NodePool's
// AnnotationBusy, blocking all consolidation while busy, so the NodePool rendered right after
// a restart keeps the budgets the last process decided (or stricter ones).
func (c *Cluster) BusyBudget(pool string) nodepools.BusyBudget {
	c.mu.RLock()
	b, ok := c.busy[pool]
	c.mu.RUnlock()
	if ok {
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	busy, _ := c.PersistedBusy(ctx, pool)
	return nodepools.BusyBudget{Busy: busy}
}

// PersistedBusy reads the NodePool's AnnotationBusy (through the cache); raw is "" when the
// NodePool or its annotation does not exist.
func (c *Cluster) PersistedBusy(ctx context.Context, pool string) (busy bool, raw string) {
	// Typed, like every other NodePool read: one NodePool informer serves them all.
	np := &karpv1.NodePool{}
	if err := c.kube.Get(ctx, types.NamespacedName{Name: nodepools.Name(pool)}, np); err != nil {
		if !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "reading the persisted busy state; taking the pool as idle", "pool", pool)
		}
		return false, ""
	}
	raw = np.GetAnnotations()[AnnotationBusy]
	return raw == "true", raw
}

// SeedBusy records the busy state a pool resumed with in this process (from its NodePool's
// AnnotationBusy, which BusyBudget answered from until now), blocking all consolidation while
// busy. The pools controller is not told: what it renders does not change.
func (c *Cluster) SeedBusy(pool string, busy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy[pool] = nodepools.BusyBudget{Busy: busy}
}

// SetBusyBudget records what the scaling controller decided for a pool; when it changed, the
// pools controller is told (BusyChanges) so the NodePool's budgets follow.
func (c *Cluster) SetBusyBudget(pool string, b nodepools.BusyBudget) {
	c.mu.Lock()
	prev, ok := c.busy[pool]
	c.busy[pool] = b
	c.mu.Unlock()
	if ok && prev == b {
		return
	}
	select {
	case c.busyChanged <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: pool}}}:
	default: // a change is already pending; the render it causes reads the latest state
	}
}

// ForgetPool drops a pool that left the config.
func (c *Cluster) ForgetPool(pool string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.busy, pool)
	delete(c.jobs, pool)
}

// SetJobs records the job demand the scaling controller read for a pool.
func (c *Cluster) SetJobs(pool string, j Jobs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jobs[pool] = j
}

// Jobs returns the pool's last job demand; ok is false before the scaling controller read any
// in this process.
func (c *Cluster) Jobs(pool string) (j Jobs, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	j, ok = c.jobs[pool]
	return j, ok
}

// BusyChanges receives an event (naming the pool) whenever a pool's busy budget changed. One
// consumer: the pools controller, which watches it as a channel source.
func (c *Cluster) BusyChanges() <-chan event.GenericEvent { return c.busyChanged }
