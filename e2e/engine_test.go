package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/cachejob"
	"warmpool.io/warmpool/volumes/engine"
)

// The e2e tier runs one cache pool per kind of engine contract: v0.21+ proves a clean exit
// with its clean-shutdown record, everything before with the lock file alone (Wolfi image,
// no HTTP client, since v0.19.8).
const (
	legacyPool     = "cached-v019"
	legacyVersion  = "v0.19.11"
	legacyHostPath = "/mnt/k8s-disks/0/dagger-cached-v019"
)

// contractsConfig is cacheConfig plus the legacy-contract pool.
var contractsConfig = cacheConfig + strings.NewReplacer(
	"name: "+cachedPool, "name: "+legacyPool,
	"version: "+simEngineVersion, "version: "+legacyVersion,
	"hostPath: "+cachedHostPath, "hostPath: "+legacyHostPath,
).Replace(cacheConfig[strings.Index(cacheConfig, "  - name: "):])

// cyclesFromEnv is how many save/restore cycles the v0.21 pool runs (WARMPOOL_E2E_CYCLES; at
// least 10 by default, the measure of the verified-warm ratio).
func cyclesFromEnv(t *testing.T) int {
	if s := os.Getenv("WARMPOOL_E2E_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			t.Fatalf("WARMPOOL_E2E_CYCLES=%q: want an integer >= 2", s)
		}
		return n
	}
	return 10
}

// TestCacheEveryEngineContractRestoresWarm runs save/restore cycles on one pool per contract,
// side by side, on the local cluster with real Karpenter: a runner gets a node, its engine
// starts (cold the first time, else on the previous node's cache restored before it), the
// runner goes, Karpenter consolidates the node, the engine stops cleanly through its real
// drain hook, the save copies its cache, and the next node restores it. Each restore must be
// verified warm by the engine itself (nodesim decides keep or wipe exactly as the release
// does), with every file, mode, device number and xattr (trusted.overlay.* included) equal to
// what the previous engine left. The v0.21 pool runs at least 10 cycles and reports the
// verified-warm ratio.
func TestCacheEveryEngineContractRestoresWarm(t *testing.T) {
	startCacheWarmpoolWith(t, contractsConfig, nil)
	logSimEvents(t)
	defer cleanupPool(t, cachedPool)
	defer cleanupPool(t, legacyPool)

	for _, tc := range []struct {
		pool, version, hostPath string
		cycles                  int
	}{
		{legacyPool, legacyVersion, legacyHostPath, 3},
		{cachedPool, simEngineVersion, cachedHostPath, cyclesFromEnv(t)},
	} {
		t.Run(tc.version, func(t *testing.T) {
			t.Parallel()
			c, err := engine.ForVersion(tc.version)
			if err != nil {
				t.Fatal(err)
			}
			warm := runCycles(t, tc.pool, tc.hostPath, c, tc.cycles)
			t.Logf("%s (%s contract): %d of %d restores verified warm (%.0f%%)", tc.version, c.Name, warm, tc.cycles-1, 100*float64(warm)/float64(tc.cycles-1))
			if warm != tc.cycles-1 {
				t.Errorf("%d of %d restores with a compatible snapshot verified warm, want all", warm, tc.cycles-1)
			}
		})
	}
}

// runCycles runs n save/restore cycles on pool and returns how many restores the engine
// verified warm.
func runCycles(t *testing.T, pool, hostPath string, c engine.Contract, n int) int {
	ctx, kube, sim := t.Context(), local.Client, local.Nodesim
	warm := 0
	var prev string // the node whose cache the next one restores
	var prevFiles map[string]string
	for i := 1; i <= n; i++ {
		runner, node := runPoolRunner(t, pool, fmt.Sprintf("%s-cycle-%d", pool, i))
		t.Logf("cycle %d: node %s", i, node)
		if prev == "" {
			waitFor(t, "the first engine to start cold", func(context.Context) (bool, error) {
				return sim.Count(nodesim.EngineColdStart, node) == 1, nil
			})
		} else {
			ev := nodeEvent(t, node, enginecache.ReasonRestored)
			if !strings.Contains(ev.Message, "kept it") {
				t.Fatalf("cycle %d: %s", i, ev.Message)
			}
			if sim.Count(nodesim.EngineWarmStart, node) != 1 || sim.Count(nodesim.EngineWiped, node) != 0 {
				t.Fatalf("cycle %d: node %s: %d warm starts, %d wipes", i, node, sim.Count(nodesim.EngineWarmStart, node), sim.Count(nodesim.EngineWiped, node))
			}
			warm++
			files := cacheDigest(t, sim.NodePath(node, hostPath))
			sameFiles(t, fmt.Sprintf("cycle %d: %s restored from %s", i, node, prev), files, prevFiles)
		}
		if got := trustedXattrs(t, sim.NodePath(node, hostPath)); got == 0 {
			t.Fatalf("cycle %d: no trusted.* xattr in %s's cache: the comparison would prove nothing", i, node)
		}

		// Consolidation: the engine stops cleanly through its drain hook, the save runs.
		if err := kube.Delete(ctx, runner); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("cycle %d: the save of %s", i, node), func(context.Context) (bool, error) {
			return savesOn(sim, node, volumes.ResultSaved) == 1, nil
		})
		if sim.Count(nodesim.EngineStopped, node) != 1 || sim.Count(nodesim.EngineKilled, node) != 0 {
			t.Fatalf("cycle %d: engine on %s: %d clean stops, %d kills", i, node, sim.Count(nodesim.EngineStopped, node), sim.Count(nodesim.EngineKilled, node))
		}
		waitSnapshotReady(t, pool, node)
		waitNodeGone(t, node)
		prev, prevFiles = node, cacheDigest(t, sim.NodePath(node, hostPath))
	}
	return warm
}

// cacheDigest is digest less what an engine rewrites each time it runs (its lock file and its
// dagql database) and warmpool's restore marker.
func cacheDigest(t *testing.T, dir string) map[string]string {
	files := digest(t, dir)
	for p := range files {
		if p == engine.LockFile || strings.HasPrefix(p, engine.DagqlFile) || p == cachejob.RestoreMarker {
			delete(files, p)
		}
	}
	return files
}

// runPoolRunner creates a runner pod of pool on a node of its own and waits until it runs.
func runPoolRunner(t *testing.T, pool, name string, mutate ...func(*corev1.Pod)) (*corev1.Pod, string) {
	t.Helper()
	pod := scenario.RunnerPod(pool, name)
	// One runner per node, so each cycle gets a node of its own.
	pod.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ci-runner"}},
			TopologyKey:   corev1.LabelHostname,
		}},
	}}
	for _, m := range mutate {
		m(pod)
	}
	if err := local.Client.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	waitFor(t, name+" Running", func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return err == nil && pod.Status.Phase == corev1.PodRunning, err
	})
	return pod, pod.Spec.NodeName
}

// waitSnapshotReady waits for the one snapshot saved from node to be ready, and returns it.
func waitSnapshotReady(t *testing.T, pool, node string) *snapshotv1.VolumeSnapshot {
	t.Helper()
	snap := &snapshotv1.VolumeSnapshot{}
	waitFor(t, node+"'s VolumeSnapshot readyToUse", func(ctx context.Context) (bool, error) {
		list := &snapshotv1.VolumeSnapshotList{}
		if err := local.Client.List(ctx, list, client.InNamespace(scenario.Namespace), client.MatchingLabels{
			volumes.LabelPool: pool, volumes.LabelSourceNode: volumes.LabelValue(node),
		}); err != nil || len(list.Items) != 1 {
			return false, err
		}
		*snap = list.Items[0]
		return snap.Status != nil && ptr.Deref(snap.Status.ReadyToUse, false), nil
	})
	return snap
}

func waitNodeGone(t *testing.T, node string) {
	t.Helper()
	waitFor(t, node+" to be gone", func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// cleanupPool removes the pool's runners, waits for its nodes to go (their saves run), then
// deletes its snapshots.
func cleanupPool(t *testing.T, pool string) {
	t.Helper()
	ctx, kube := context.WithoutCancel(t.Context()), local.Client
	if err := kube.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner", "warmpool.io/pool": pool}); err != nil {
		t.Error(err)
	}
	waitFor(t, "pool "+pool+"'s nodes to go", func(ctx context.Context) (bool, error) {
		nodes := &corev1.NodeList{}
		err := kube.List(ctx, nodes, client.MatchingLabels{volumes.LabelPool: pool})
		return err == nil && len(nodes.Items) == 0, err
	})
	if err := kube.DeleteAllOf(ctx, &snapshotv1.VolumeSnapshot{}, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelPool: pool}); err != nil {
		t.Error(err)
	}
	// The next test's first node must find no snapshot of this one's (deletion waits for the
	// snapshotter's finalizers).
	waitFor(t, "pool "+pool+"'s snapshots to go", func(ctx context.Context) (bool, error) {
		list := &snapshotv1.VolumeSnapshotList{}
		err := kube.List(ctx, list, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelPool: pool})
		return err == nil && len(list.Items) == 0, err
	})
}

// TestCacheEngineStopsOnlyAfterTheRunner: a runner still working when its node's removal is
// committed (its NodeClaim deleted, as a drift or a manual delete does; Karpenter does not
// evict it, it is do-not-disrupt) keeps the engine running: warmpool waits for it, and only
// once it is gone does the engine get its SIGTERM, through its real drain hook, with no client
// attached, so it stops cleanly and the save is clean.
func TestCacheEngineStopsOnlyAfterTheRunner(t *testing.T) {
	ctx, kube, sim := t.Context(), local.Client, local.Nodesim
	startCacheWarmpool(t)
	logSimEvents(t)
	defer cleanupPool(t, cachedPool)

	runner, node := runPoolRunner(t, cachedPool, "busy-runner", func(p *corev1.Pod) {
		p.Annotations = map[string]string{nodesim.AnnotationEngineClient: "true", karpv1.DoNotDisruptAnnotationKey: "true"}
	})
	waitFor(t, "the engine to start", func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, node)+sim.Count(nodesim.EngineWarmStart, node) == 1, nil
	})
	claim := &karpv1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: nodeClaimOf(t, node)}}
	if err := kube.Delete(ctx, claim); err != nil {
		t.Fatal(err)
	}
	expectNodeEvent(t, node, enginecache.ReasonAwaitingRunners)
	// The job goes on for a while; nothing may stop the engine meanwhile.
	time.Sleep(5 * time.Second)
	if n := sim.Count(nodesim.EnginePreStop, node) + sim.Count(nodesim.EngineStopped, node) + sim.Count(nodesim.EngineKilled, node); n != 0 {
		t.Fatalf("the engine was told to stop while its client still ran (%d stop events)", n)
	}
	finished := time.Now()
	if err := kube.Delete(ctx, runner); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the clean save", func(context.Context) (bool, error) {
		return savesOn(sim, node, volumes.ResultSaved) == 1, nil
	})
	for _, e := range sim.Events() {
		if e.Node != node {
			continue
		}
		switch e.Kind {
		case nodesim.EngineKilled:
			t.Errorf("engine killed: %s", e.Detail)
		case nodesim.EnginePreStop, nodesim.EngineStopped:
			if e.Time.Before(finished) {
				t.Errorf("%s at %s, before the runner finished at %s", e.Kind, e.Time.Format(time.RFC3339Nano), finished.Format(time.RFC3339Nano))
			}
		}
	}
	if n := sim.Count(nodesim.EngineStopped, node); n != 1 {
		t.Errorf("%d clean engine stops, want 1", n)
	}
	waitSnapshotReady(t, cachedPool, node)
}

// TestCacheWithoutCapSysAdminMakesNoSnapshot: a save whose copier runs without CAP_SYS_ADMIN
// (nodesim's kubelet grants exactly the securityContext's capabilities; here the node drops
// SYS_ADMIN, as a restrictive runtime or policy would) cannot see the engine's trusted.overlay
// xattrs: it refuses before copying, no snapshot is made, and the node still goes.
func TestCacheWithoutCapSysAdminMakesNoSnapshot(t *testing.T) {
	ctx, kube, sim := t.Context(), local.Client, local.Nodesim
	startCacheWarmpool(t)
	logSimEvents(t)
	defer cleanupPool(t, cachedPool)

	runner, node := runPoolRunner(t, cachedPool, "nocap-runner")
	annotateNode(t, node, nodesim.AnnotationDropCapabilities, "SYS_ADMIN")
	if err := kube.Delete(ctx, runner); err != nil {
		t.Fatal(err)
	}
	ev := nodeEvent(t, node, enginecache.ReasonSaveFailed)
	if !strings.Contains(ev.Message, "CAP_SYS_ADMIN") {
		t.Errorf("CacheSaveFailed says %q, want it to name CAP_SYS_ADMIN", ev.Message)
	}
	if savesOn(sim, node, volumes.ResultFailed) != 1 {
		t.Errorf("save pod results on %s: want one failed", node)
	}
	waitNodeGone(t, node)
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := kube.List(ctx, snaps, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelSourceNode: volumes.LabelValue(node)}); err != nil {
		t.Fatal(err)
	}
	if len(snaps.Items) != 0 {
		t.Errorf("%d snapshots of a cache copied without CAP_SYS_ADMIN, want none", len(snaps.Items))
	}
}

// TestCacheSnapshotTheEngineWipesIsQuarantined reproduces dagger#13952: a cleanly stopped
// v0.21 cache whose persisted results name a snapshot that is no longer on disk is wiped by
// the next engine at start. warmpool saves it (it is clean), restores it once, learns from the
// engine that it was wiped, quarantines the snapshot, and the next node gets the older good
// one instead.
func TestCacheSnapshotTheEngineWipesIsQuarantined(t *testing.T) {
	ctx, kube, sim := t.Context(), local.Client, local.Nodesim
	startCacheWarmpool(t)
	logSimEvents(t)
	defer cleanupPool(t, cachedPool)
	dir := func(node string) string { return sim.NodePath(node, cachedHostPath) }

	// A good snapshot first.
	r1, a := runPoolRunner(t, cachedPool, "quarantine-1")
	if err := kube.Delete(ctx, r1); err != nil {
		t.Fatal(err)
	}
	good := waitSnapshotReady(t, cachedPool, a)
	waitNodeGone(t, a)

	// Node B restores it warm; then, while B's engine runs, a snapshot its results name goes
	// (as an engine GC racing its persistence would leave it). B stops cleanly and is saved.
	r2, b := runPoolRunner(t, cachedPool, "quarantine-2")
	nodeEvent(t, b, enginecache.ReasonRestored)
	snaps, err := os.ReadDir(filepath.Join(dir(b), "worker/snapshots/snapshots"))
	if err != nil || len(snaps) == 0 {
		t.Fatalf("B's snapshots: %v (%d)", err, len(snaps))
	}
	if err := os.RemoveAll(filepath.Join(dir(b), "worker/snapshots/snapshots", snaps[0].Name())); err != nil {
		t.Fatal(err)
	}
	if err := kube.Delete(ctx, r2); err != nil {
		t.Fatal(err)
	}
	bad := waitSnapshotReady(t, cachedPool, b)
	waitNodeGone(t, b)

	// Node C restores the newest snapshot; its engine discards it at start.
	r3, c := runPoolRunner(t, cachedPool, "quarantine-3")
	ev := nodeEvent(t, c, enginecache.ReasonColdStart)
	if !strings.Contains(ev.Message, enginecache.ColdWiped) || !strings.Contains(ev.Message, bad.Name) {
		t.Errorf("C's ColdStart: %q, want %s of %s", ev.Message, enginecache.ColdWiped, bad.Name)
	}
	if sim.Count(nodesim.EngineWiped, c) != 1 {
		t.Errorf("C's engine wiped %d times, want once", sim.Count(nodesim.EngineWiped, c))
	}
	expectNodeEvent(t, c, enginecache.ReasonQuarantined)
	if err := kube.Get(ctx, client.ObjectKeyFromObject(bad), bad); err != nil {
		t.Fatal(err)
	}
	if !volumes.Quarantined(bad) {
		t.Fatalf("snapshot %s labels %v: not quarantined", bad.Name, bad.Labels)
	}

	// While C still runs (its own save would make a newer good snapshot), node D comes: it
	// must get the older good snapshot, never the quarantined one.
	_, d := runPoolRunner(t, cachedPool, "quarantine-4")
	nodeEvent(t, d, enginecache.ReasonRestored)
	pvcSource := ""
	for _, e := range nodeEventsOf(t, d, enginecache.ReasonRestored) {
		pvcSource = e
	}
	if !strings.Contains(pvcSource, good.Name) {
		t.Errorf("D restored %q, want the good snapshot %s", pvcSource, good.Name)
	}
	_ = r3
}

// nodeEventsOf lists the messages of the Events of reason on node.
func nodeEventsOf(t *testing.T, node, reason string) []string {
	t.Helper()
	events := &corev1.EventList{}
	if err := local.Client.List(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

// annotateNode sets one annotation on a Node (a nodesim knob).
func annotateNode(t *testing.T, node, key, value string) {
	t.Helper()
	n := &corev1.Node{}
	if err := local.Client.Get(t.Context(), client.ObjectKey{Name: node}, n); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(n.DeepCopy())
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[key] = value
	if err := local.Client.Patch(t.Context(), n, patch); err != nil {
		t.Fatal(err)
	}
}
