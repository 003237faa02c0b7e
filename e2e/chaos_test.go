package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
)

const (
	chaosPool     = "chaos"
	chaosHostPath = "/mnt/k8s-disks/0/dagger-chaos"
	// chaosShortKills is the run in `make test`; `make chaos` sets WARMPOOL_CHAOS_KILLS.
	chaosShortKills = 4
	// chaosMinRounds: a cold first round, then at least one of restores; more run while kills
	// are still to be made.
	chaosMinRounds = 2
)

// chaosConfig is one cache-enabled pool of its own. Every empty node may go at once (a
// budget of 100%), and snapshots are kept for the whole run, so a lost one shows as lost
// and not as pruned.
var chaosConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  role: KarpenterNodeRole-local
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: local}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: local}
pools:
  - name: ` + chaosPool + `
    architectures: [amd64]
    instance:
      categories: {in: [c, m]}
      minGeneration: 6
    nvme:
      minSizeGB: 200
    capacityTypes: [on-demand]
    limits:
      nodes: 4
    disruption:
      consolidationPolicy: WhenEmpty
      consolidateAfter: 5s
      budgets:
        - nodes: "100%"
    engine:
      version: ` + simEngineVersion + `
      hostPath: ` + chaosHostPath + `
    cache:
      enabled: true
      storageClassName: ` + nodesim.ClassName + `
      snapshotClassName: ` + nodesim.ClassName + `
      size: 1Gi
      retention:
        keep: 100
`

// chaosTargets are the phases the kills of the single-replica run are aimed at, by group: the
// first kills take one of each (restore, consolidation, save), then the rest.
var chaosTargets = [][]string{
	{phaseRestoreJob, phaseVerifying},
	{phaseDisrupted},
	{phaseGuard, phaseSaveJob, phaseSnapshotCut, phaseConcluded},
	{phaseAnytime, phaseStarting},
}

// TestChaosControllerKilledThroughSaveAndRestore is issue #11's chaos run in the suite: the real
// `warmpool controller` binary, one replica with leader election on a short lease, is SIGKILLed
// by its PID at random moments through restore, consolidation and save (a seeded source picks
// the phase each kill aims at, one of each group first, and a jitter; each kill is logged with
// what the objects showed), and started again after 0-3 s, while rounds of runners come and go
// on real Karpenter: two nodes a round, each restored from the newest snapshot, consolidated
// when its runner goes, and saved. Then it checks what an uninterrupted run guarantees (chaosRun.verify): no duplicate or
// lost snapshot, no false report, no silent loss, no orphan, no guard past its deadline, no
// startup taint left, every new node warm from the newest snapshot with equal checksums.
//
// WARMPOOL_CHAOS_KILLS sets the number of kills (default 4, a few minutes; `make chaos` makes
// it a long run), WARMPOOL_CHAOS_SEED the seed (default: the clock, logged).
func TestChaosControllerKilledThroughSaveAndRestore(t *testing.T) {
	kills := chaosKills(t)
	seed := chaosSeed(t)
	t.Logf("chaos seed %d (WARMPOOL_CHAOS_SEED=%d repeats its choices), %d kills", seed, seed, kills)
	run := newChaosRun(t, "chaos", 2)
	// Deferred, not a cleanup: the pool's remaining nodes are saved on the way out by a live
	// controller, before the cleanups kill it.
	defer cleanupPool(t, chaosPool)
	run.replicas = []*chaosReplica{startChaosReplica(t, "warmpool")}
	if awaitLeader(t.Context(), run.replicas, 2*time.Minute) == nil {
		t.Fatal("warmpool did not lead within 2 minutes")
	}
	killer := &chaosKiller{
		t: t, rng: rand.New(rand.NewPCG(seed, seed)), obs: run.obs, replicas: run.replicas,
		kills: kills, targets: chaosTargets, phaseWait: 90 * time.Second,
	}
	killer.start(t.Context())
	maxRounds := chaosMinRounds + 2*kills
	for round := 1; round <= chaosMinRounds || !killer.finished(); round++ {
		if round > maxRounds {
			t.Fatalf("%d rounds ran and the kills are not all made", maxRounds)
		}
		run.round(round)
	}
	run.verify(killer.wait(), killer.errs)
}

// TestChaosLeaderKilledDuringConsolidation runs two replicas of the real binary with leader
// election on a short lease, as the chart runs them, and SIGKILLs the leader as soon as a
// consolidation shows on a node with a cache to save. The standby takes over (the killed one
// comes back as the new standby), and the node's cache must be saved, reported once, and
// restored warm on the next node, with every check of the chaos run.
func TestChaosLeaderKilledDuringConsolidation(t *testing.T) {
	seed := chaosSeed(t)
	t.Logf("chaos seed %d (WARMPOOL_CHAOS_SEED=%d repeats its choices)", seed, seed)
	run := newChaosRun(t, "failover", 1)
	defer cleanupPool(t, chaosPool)
	run.replicas = []*chaosReplica{startChaosReplica(t, "replica-a"), startChaosReplica(t, "replica-b")}
	if awaitLeader(t.Context(), run.replicas, 2*time.Minute) == nil {
		t.Fatal("no replica led within 2 minutes")
	}
	killer := &chaosKiller{
		t: t, rng: rand.New(rand.NewPCG(seed, seed)), obs: run.obs, replicas: run.replicas,
		kills: 1, targets: [][]string{{phaseConsolidation}}, phaseWait: 4 * time.Minute, restartAfterTakeover: true,
	}
	killer.start(t.Context())
	run.round(1)
	kills := killer.wait()
	if len(kills) != 1 {
		t.Fatalf("%d kills made, want 1 (%v)", len(kills), killer.errs)
	}
	k := kills[0]
	if !k.targetSeen {
		t.Errorf("the leader was killed without a consolidation showing: %s", k)
	}
	if k.takeoverReplica == "" || k.takeoverReplica == k.victimReplica {
		t.Errorf("after the leader %s was killed, %q led, want the standby", k.replica, k.takeover)
	}
	run.round(2)
	run.verify(kills, killer.errs)
}

// chaosRun drives rounds of runners on the chaos pool and remembers, per node, what the checks
// compare it with.
type chaosRun struct {
	t        *testing.T
	prefix   string // of runner names
	width    int    // nodes per round
	began    time.Time
	obs      *chaosObserver
	replicas []*chaosReplica
	rounds   int
	nodes    map[string]*chaosNodeRun
}

// chaosNodeRun is what a round learnt of its node while it ran.
type chaosNodeRun struct {
	round int
	// newest: the newest good snapshots when its round began (what it must restore).
	newest []string
	// digestChecked: its cache was compared, at its engine's warm start, with the cache of the
	// node the snapshot it restored was saved from; digestDiff lists what differed, trusted
	// counts its entries with trusted.* xattrs (none would make the comparison prove nothing).
	digestChecked bool
	digestSource  string
	digestDiff    []string
	trusted       int
	// taintAtRun: the startup taint was still on the node while its runner ran.
	taintAtRun bool
}

func newChaosRun(t *testing.T, prefix string, width int) *chaosRun {
	t.Helper()
	expectNodesStayReady(t)
	if err := scenario.SetConfig(t.Context(), local.Client, chaosConfig); err != nil {
		t.Fatal(err)
	}
	r := &chaosRun{t: t, prefix: prefix, width: width, began: time.Now(), nodes: map[string]*chaosNodeRun{}}
	r.obs = startChaosObserver(t, chaosPool)
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range local.Nodesim.Events() {
				if !e.Time.Before(r.began) {
					t.Log(e)
				}
			}
		}
	})
	return r
}

// round runs width runners, each on a node of its own, and waits until each node's engine
// started (on a restored cache when a snapshot was there) and its restore was verified; then
// the runners go, Karpenter consolidates the nodes, and the round ends when they are gone and
// their snapshots ready.
func (r *chaosRun) round(n int) {
	t, ctx, sim := r.t, r.t.Context(), local.Nodesim
	r.rounds = n
	newest := r.obs.newestGood(simArch, simEngineVersion)
	var runners []*corev1.Pod
	for i := 1; i <= r.width; i++ {
		pod := scenario.RunnerPod(chaosPool, fmt.Sprintf("%s-r%d-%d", r.prefix, n, i))
		pod.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ci-runner"}},
				TopologyKey:   corev1.LabelHostname,
			}},
		}}
		if err := local.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		runners = append(runners, pod)
	}
	var nodes []string
	for _, pod := range runners {
		r.wait(pod.Name+" Running", 5*time.Minute, func(ctx context.Context) (bool, error) {
			err := local.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
			return err == nil && pod.Status.Phase == corev1.PodRunning, err
		})
		nodes = append(nodes, pod.Spec.NodeName)
	}
	t.Logf("round %d (%s into the run): nodes %v; newest snapshots when it began: %v", n, time.Since(r.began).Round(time.Second), nodes, newest)
	for _, node := range nodes {
		nr := &chaosNodeRun{round: n, newest: newest}
		r.nodes[node] = nr
		obj := &corev1.Node{}
		if err := local.Client.Get(ctx, client.ObjectKey{Name: node}, obj); err != nil {
			t.Fatal(err)
		}
		nr.taintAtRun = hasStartupTaint(obj.Spec.Taints)
		r.wait("the engine on "+node+" to start", 3*time.Minute, func(context.Context) (bool, error) {
			return sim.Count(nodesim.EngineColdStart, node)+sim.Count(nodesim.EngineWarmStart, node) > 0, nil
		})
		if restoredWarm(sim, node) {
			r.compareCache(node, nr)
		}
		// The release that removed the taint marked a restored node "verifying" in the same
		// patch, so this reads the verdict's state, not a stale Node.
		r.wait("the restore on "+node+" to be verified", 3*time.Minute, func(ctx context.Context) (bool, error) {
			err := local.Client.Get(ctx, client.ObjectKey{Name: node}, obj)
			return err == nil && obj.Annotations[enginecache.AnnotationRestore] != "verifying", err
		})
	}
	for _, pod := range runners {
		if err := local.Client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
	for _, node := range nodes {
		r.wait(node+" to be gone", 5*time.Minute, func(context.Context) (bool, error) {
			rec, ok := r.obs.node(node)
			return ok && rec.gone, nil
		})
	}
	// The next round restores the newest of these: their uploads end first.
	r.wait("the round's snapshots to be ready", 3*time.Minute, func(context.Context) (bool, error) {
		for _, node := range nodes {
			for _, s := range r.obs.snapshotsFrom(node) {
				if !s.ready && !s.failed && !s.deleted {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

// restoredWarm says whether node's engine started on a restored copy it kept.
func restoredWarm(sim *nodesim.Sim, node string) bool {
	for _, e := range sim.Events() {
		if e.Kind == nodesim.EngineWarmStart && e.Node == node && e.Detail == "restored" {
			return true
		}
	}
	return false
}

// compareCache compares node's cache, as its engine started on it, with the cache of the node
// the restored snapshot was saved from (gone, so final).
func (r *chaosRun) compareCache(node string, nr *chaosNodeRun) {
	rec, _ := r.obs.node(node)
	source := r.obs.sourceNode(rec.restoredFrom)
	if source == "" {
		nr.digestDiff = []string{fmt.Sprintf("the snapshot it restored (%q) names no node seen in this run", rec.restoredFrom)}
		nr.digestChecked = true
		return
	}
	sim := local.Nodesim
	got := cacheDigest(r.t, sim.NodePath(node, chaosHostPath))
	want := cacheDigest(r.t, sim.NodePath(source, chaosHostPath))
	nr.digestChecked, nr.digestSource = true, source
	nr.digestDiff = diffDigests(got, want)
	nr.trusted = trustedXattrs(r.t, sim.NodePath(node, chaosHostPath))
}

// diffDigests names what differs between two digests (at most 5 paths, then a count).
func diffDigests(got, want map[string]string) []string {
	var diff []string
	if len(want) == 0 {
		return []string{"the source cache is empty"}
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			diff = append(diff, "missing "+p)
		} else if g != w {
			diff = append(diff, "differs "+p)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diff = append(diff, "unexpected "+p)
		}
	}
	if len(diff) > 5 {
		diff = append(diff[:5], fmt.Sprintf("and %d more", len(diff)-5))
	}
	return diff
}

// wait is waitFor with its own bound, and the phases of the pool's nodes in the failure.
func (r *chaosRun) wait(what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), timeout)
	defer cancel()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
			phases, perr := r.obs.phases(context.Background())
			r.t.Fatalf("timed out after %s waiting for %s (last error: %v); the pool's nodes: %s %v", timeout, what, lastErr, describePhases(phases), perr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func chaosKills(t *testing.T) int {
	s := os.Getenv("WARMPOOL_CHAOS_KILLS")
	if s == "" {
		return chaosShortKills
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("WARMPOOL_CHAOS_KILLS=%q: want an integer >= 1", s)
	}
	return n
}

func chaosSeed(t *testing.T) uint64 {
	s := os.Getenv("WARMPOOL_CHAOS_SEED")
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("WARMPOOL_CHAOS_SEED=%q: want an unsigned integer", s)
	}
	return n
}
