package enginecache_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/volumes"
)

// TestRestoreSkippedForWaitingJobs: with cache.restore.whenJobsWait cold (the default), a new
// node whose pool has more jobs than its usable nodes have slots starts cold at once, before any
// volume is made: those jobs waited for its boot and would wait for the copy too. A node nobody
// waits for still restores, as does every node of a pool set to restore, or whose demand is
// unknown, or whose restore already started.
func TestRestoreSkippedForWaitingJobs(t *testing.T) {
	pool, keen := unique("jobs"), unique("jobs-restore")
	d := newDirect(t, poolYAML(pool), poolYAMLWith(keen, "restore: {whenJobsWait: restore}"))
	for _, p := range []string{pool, keen} {
		d.newSnapshot("cache-"+p, p, "amd64", engineVersion, d.clk.Now().Add(-time.Hour), true)
	}
	// One usable node runs one job of the two the pool needs slots for (1 job per node). A node
	// Karpenter is disrupting and a cordoned one take no new job: they do not count.
	newNode(t, unique("jobs-busy"), pool, "amd64")
	newNode(t, unique("jobs-disrupted"), pool, "amd64", karpv1.DisruptedNoScheduleTaint)
	cordoned := newNode(t, unique("jobs-cordoned"), pool, "amd64")
	cordoned.Spec.Unschedulable = true
	if err := kube.Update(t.Context(), cordoned); err != nil {
		t.Fatal(err)
	}
	d.jobs.SetJobs(pool, state.Jobs{Needed: 2, PerNode: 1, Known: true})

	first := unique("jobs-first")
	newNode(t, first, pool, "amd64", startupTaint())
	expectNotRequeued(t, d.restore(first))
	d.expectTainted(first, false)
	d.expectEvent(first, enginecache.ReasonColdStart, enginecache.ColdJobsWaiting, "2 jobs of pool "+pool, "1 usable nodes have 1",
		"cache-"+pool, "whenJobsWait: restore")
	d.expectGone(volumes.RestoreName(first), &corev1.PersistentVolumeClaim{})
	expectMetric(t, "warmpool_cold_starts_total", map[string]string{"pool": pool, "reason": enginecache.ColdJobsWaiting}, 1)

	// The first node took the waiting job: the next one is not waited for, and restores.
	second := unique("jobs-second")
	newNode(t, second, pool, "amd64", startupTaint())
	expectRequeued(t, d.restore(second), 15*time.Second)
	d.expectTainted(second, true)
	d.expectExists(volumes.RestoreName(second), &corev1.PersistentVolumeClaim{})

	// Jobs that wait after the restore started do not abandon it: the copy is under way.
	d.jobs.SetJobs(pool, state.Jobs{Needed: 10, PerNode: 1, Known: true})
	expectRequeued(t, d.restore(second), 15*time.Second)
	d.expectTainted(second, true)

	// Each of these restores although jobs wait by the first measure: the demand is unknown,
	// the pool prefers the restore, or the usable nodes' slots (2 nodes: the busy one and
	// first, second still restoring; 4 jobs each) take every job.
	for _, tt := range []struct {
		name, pool string
		jobs       state.Jobs
	}{
		{"unknown demand", pool, state.Jobs{Needed: 10, PerNode: 1, Known: false}},
		{"whenJobsWait restore", keen, state.Jobs{Needed: 10, PerNode: 1, Known: true}},
		{"slots per node count", pool, state.Jobs{Needed: 8, PerNode: 4, Known: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := d.in(t)
			d.jobs.SetJobs(tt.pool, tt.jobs)
			node := unique("jobs-restores")
			newNode(t, node, tt.pool, "amd64", startupTaint())
			expectRequeued(t, d.restore(node), 15*time.Second)
			d.expectTainted(node, true)
			d.expectExists(volumes.RestoreName(node), &corev1.PersistentVolumeClaim{})
		})
	}
}
