package enginecache

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache/steps"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/storagecheck"
)

// JobDemand is a pool's job demand as the scaling controller last read it; state.Cluster
// implements it.
type JobDemand interface {
	Jobs(pool string) (state.Jobs, bool)
}

// releasedFor is how long a node this controller released for waiting jobs counts as usable
// although the cache may not show its taint gone yet: the informer catches up within
// milliseconds, a scaling evaluation within seconds.
const releasedFor = time.Minute

// waitingJobs serializes the decisions of concurrent restores (MaxConcurrentReconciles) to skip
// a restore for waiting jobs, and remembers the nodes it released, so that two nodes booting
// for one waiting job do not both start cold.
type waitingJobs struct {
	mu       sync.Mutex
	released map[string]time.Time // node name -> when it was released for waiting jobs
}

// skipForWaitingJobs starts a node cold at once, before its restore is planned or its volume
// made, when its pool has more jobs than its usable nodes (Ready, released, not deleting) have
// slots, and the pool's cache.restore.whenJobsWait is cold (the default). Those jobs already
// waited for this node's boot; with the restore they would also wait for the copy (minutes),
// where a cold engine only makes their builds slower. Nodes nobody waits for (the spare, the
// burst hold, a warm minimum) still restore. Unknown demand (no reading yet in this process, a
// stale source) is no evidence of waiting jobs: the restore goes on.
func (c *RestoreController) skipForWaitingJobs(ctx context.Context, s *restoreState) (steps.Exit, error) {
	if s.pvc != nil || s.pool.Cache.Restore.WhenJobsWait != config.WhenJobsWaitCold || c.opts.Jobs == nil {
		return steps.Next, nil
	}
	jobs, ok := c.opts.Jobs.Jobs(s.poolName)
	if !ok || !jobs.Known || jobs.Needed <= 0 {
		return steps.Next, nil
	}
	w := &c.waiting
	w.mu.Lock()
	defer w.mu.Unlock()
	now := c.clk.Now()
	usable, err := c.usableNodes(ctx, s.poolName, now)
	if err != nil {
		return steps.Stop, err
	}
	slots := usable * max(jobs.PerNode, 1)
	if jobs.Needed <= slots {
		return steps.Next, nil
	}
	if w.released == nil {
		w.released = map[string]time.Time{}
	}
	w.released[s.name] = now
	bytes, _ := snapshotBytes(s.snap, s.pool)
	budget := s.pool.Cache.Restore.Budget()
	return steps.Stop, c.cold(ctx, s, ColdJobsWaiting, fmt.Sprintf(
		"%d jobs of pool %s need a slot and its %d usable nodes have %d: restoring snapshot %s (%s: about %s at %s/s, plus provisioning) would keep the waiting jobs waiting for it; set cache.restore.whenJobsWait: restore to restore anyway",
		jobs.Needed, s.poolName, usable, slots, s.snapshot, storagecheck.FormatBytes(bytes),
		max(budget.Transfer(bytes), time.Second).Round(time.Second), storagecheck.FormatBytes(budget.Throughput)))
}

// usableNodes counts the pool's nodes a job can run on now: Ready, without the startup taint,
// schedulable and not on their way out (deleting, or tainted by Karpenter's disruption), plus
// those this controller released for waiting jobs within releasedFor that the cache does not
// show released yet. Called with w.mu held.
func (c *RestoreController) usableNodes(ctx context.Context, pool string, now time.Time) (int, error) {
	list := &corev1.NodeList{}
	if err := c.kube.List(ctx, list, client.MatchingLabels{volumes.LabelPool: pool}, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing the nodes of pool %s, %w", pool, err)
	}
	w := &c.waiting
	for name, at := range w.released {
		if now.Sub(at) >= releasedFor {
			delete(w.released, name)
		}
	}
	n := 0
	for i := range list.Items {
		node := &list.Items[i]
		if node.DeletionTimestamp != nil || node.Spec.Unschedulable || hasTaint(node, karpv1.DisruptedTaintKey, karpv1.DisruptedNoScheduleTaint.Effect) {
			continue
		}
		_, releasing := w.released[node.Name]
		if releasing || nodewatch.Ready(node) && !hasTaint(node, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect) {
			n++
		}
	}
	return n, nil
}
