package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// The cache path on nodesim's EBS model (e2e/nodesim/ebs.go): save and restore volumes capped
// at a modeled throughput, restore volumes lazily loaded from their snapshot, snapshots that
// upload for much longer than a copy takes. On a cache of realistic shape (ebsTree) it runs a
// first, full save, a restore onto a new node, and a save of that node's cache after 5% of
// its files changed.
//
// TestCacheOnEBS asserts what is behaviour: the incremental save writes at most 10% of the
// bytes the full one wrote, starts from the previous snapshot, every node is released
// before its snapshot's upload ends, and a snapshot too large for the pool's restore budget
// starts the next node cold at once. BenchmarkCacheOnEBS runs the same at two modeled
// throughputs and reports the times (full save, incremental save, hold, restore) and the
// restore's share of the least time the model allows (its bytes at the throughput cap or
// lazy rate, or its I/Os at the IOPS cap, whichever is longer):
//
//	go test -run '^$' -bench CacheOnEBS -benchtime 1x ./e2e/
//	WARMPOOL_EBS_MB=4096 WARMPOOL_EBS_MIBPS=64,128 go test -run '^$' -bench CacheOnEBS -benchtime 1x -timeout 60m ./e2e/

const (
	ebsPool     = "ebs"
	ebsHostPath = "/mnt/k8s-disks/0/dagger-ebs"
	// ebsSnapshotClass uploads at ebsUploadMiBps: a full 1 GiB snapshot takes a minute, many
	// times the copy, so a node held until readyToUse would show.
	ebsSnapshotClass = "ebs-sim-upload"
	ebsUploadMiBps   = 16
)

// ebsStorageClass is the class of volumes capped at mibps, lazily loaded from snapshots.
func ebsStorageClass(mibps int) string { return fmt.Sprintf("ebs-sim-%d", mibps) }

// ebsConfig is the cached pool's config on the EBS classes, with a volume of sizeGi.
func ebsConfig(mibps, sizeGi int) string {
	return strings.NewReplacer(
		"name: "+cachedPool+"\n", "name: "+ebsPool+"\n",
		"hostPath: "+cachedHostPath, "hostPath: "+ebsHostPath,
		"storageClassName: "+nodesim.ClassName, "storageClassName: "+ebsStorageClass(mibps),
		"snapshotClassName: "+nodesim.ClassName, "snapshotClassName: "+ebsSnapshotClass,
		"size: 1Gi", fmt.Sprintf("size: %dGi", sizeGi),
	).Replace(cacheConfig)
}

// ebsResult is what one run measured.
type ebsResult struct {
	mibps              int
	cacheBytes         int64
	files              int
	fullSave, incrSave time.Duration
	// fullCopy, incrCopy and restoreCopy are the copier's own times within those Jobs
	// (its log's summary): the rest is the Job's start, checks and verification.
	fullCopy, incrCopy, restoreCopy time.Duration
	fullWritten, incrWritten        int64
	hold                            []time.Duration // each save's end to its node's deletion
	restore                         time.Duration
	restoreRead                     int64
	restoreFirstReads               int64
	// restoreModeled is the restore volume's modeled read throughput (bytes/s): the lower of
	// its cap and its lazy loading rate; restoreModeledTime the least time its model lets it
	// serve what the restore read (that throughput, or its IOPS cap for the reads' I/Os).
	restoreModeled     float64
	restoreModeledTime time.Duration
	// fullLeast and incrLeast are the least times the save volumes' model allows for what
	// each save read and wrote there (nodesim.VolumeStats.ModeledTime).
	fullLeast, incrLeast time.Duration
}

// restoreShare is the restore's rate as a share of what the modeled volume can serve: the
// least time the model allows for its reads over the time it took.
func (r ebsResult) restoreShare() float64 {
	return r.restoreModeledTime.Seconds() / r.restore.Seconds()
}

func TestCacheOnEBS(t *testing.T) {
	r := runEBS(t, 64, ebsCacheMB(t), true)
	t.Logf("EBS model at %d MiB/s, %d MiB cache in %d files: full save %s (%d MiB written), incremental save %s (%d MiB written), holds %v, restore %s (%.0f%% of the modeled throughput, %d first reads)",
		r.mibps, r.cacheBytes>>20, r.files, r.fullSave, r.fullWritten>>20, r.incrSave, r.incrWritten>>20, r.hold, r.restore, 100*r.restoreShare(), r.restoreFirstReads)
	if r.incrWritten*10 > r.fullWritten {
		t.Errorf("the incremental save wrote %d bytes, more than 10%% of the full save's %d", r.incrWritten, r.fullWritten)
	}
	if r.fullWritten < r.cacheBytes {
		t.Errorf("the full save wrote %d bytes through its volume, less than the cache's %d", r.fullWritten, r.cacheBytes)
	}
	if r.restoreRead < r.cacheBytes || r.restoreFirstReads == 0 {
		t.Errorf("the restore read %d bytes with %d first reads, want the whole cache (%d) from a lazily loaded volume", r.restoreRead, r.restoreFirstReads, r.cacheBytes)
	}
}

func BenchmarkCacheOnEBS(b *testing.B) {
	rates := []int{32, 64}
	if v := os.Getenv("WARMPOOL_EBS_MIBPS"); v != "" {
		rates = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				b.Fatalf("WARMPOOL_EBS_MIBPS: %v", err)
			}
			rates = append(rates, n)
		}
	}
	var rows []ebsResult
	for _, mibps := range rates {
		b.Run(fmt.Sprintf("%dMiBps", mibps), func(b *testing.B) {
			var r ebsResult
			for range b.N {
				r = runEBS(b, mibps, ebsCacheMB(b), false)
			}
			b.ReportMetric(r.fullSave.Seconds(), "full-save-s")
			b.ReportMetric(r.incrSave.Seconds(), "incr-save-s")
			b.ReportMetric(float64(r.incrSave)/float64(r.fullSave), "incr/full-time")
			b.ReportMetric(float64(r.incrWritten)/float64(r.fullWritten), "incr/full-bytes")
			b.ReportMetric(maxDuration(r.hold).Seconds(), "max-hold-s")
			b.ReportMetric(r.restore.Seconds(), "restore-s")
			b.ReportMetric(r.restoreShare(), "restore/modeled")
			b.ReportMetric(r.copyShare(), "restore-copy/modeled")
			rows = append(rows, r)
		})
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| modeled (restore reads) | cache | files | full save (copy; least) | incremental save (copy; least), bytes | hold (max) | restore: Job (least the model allows), share; copy, share |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %d MiB/s (%.0f MiB/s) | %d MiB | %d | %.1f s (%.1f s; %.1f s) | %.1f s = %.1f%% (%.1f s = %.0f%%; %.1f s), %.1f%% | %.1f s | %.1f s (%.1f s), %.0f%%; %.1f s, %.0f%% |\n",
			r.mibps, r.restoreModeled/(1<<20), r.cacheBytes>>20, r.files, r.fullSave.Seconds(), r.fullCopy.Seconds(), r.fullLeast.Seconds(),
			r.incrSave.Seconds(), 100*float64(r.incrSave)/float64(r.fullSave), r.incrCopy.Seconds(), 100*float64(r.incrCopy)/float64(r.fullCopy), r.incrLeast.Seconds(),
			100*float64(r.incrWritten)/float64(r.fullWritten), maxDuration(r.hold).Seconds(),
			r.restore.Seconds(), r.restoreModeledTime.Seconds(), 100*r.restoreShare(), r.restoreCopy.Seconds(), 100*r.copyShare())
	}
	b.Log(sb.String())
}

// copyShare is the restore's copy phase's rate as a share of what the modeled volume can
// serve: the least time for the cache's share of the restore's reads over the copy's time.
func (r ebsResult) copyShare() float64 {
	return r.restoreModeledTime.Seconds() * float64(r.cacheBytes) / float64(r.restoreRead) / r.restoreCopy.Seconds()
}

// copierTime is the copier's own time in node's last cache pod of op, from its log's summary
// ("saved ... in 1.2s (" or "restored ... in 1.2s"); 0 when the log does not say.
func copierTime(tb testing.TB, node, op string) time.Duration {
	end := lastEvent(local.Nodesim, nodesim.CacheJobFinished, node, op+" ")
	if end == nil {
		return 0
	}
	ns, pod, _ := strings.Cut(end.Object, "/")
	logs, _ := filepath.Glob(filepath.Join(local.Nodesim.Root(), "logs", ns+"_"+pod+"_*.log"))
	if len(logs) != 1 {
		return 0
	}
	out, err := os.ReadFile(logs[0])
	if err != nil {
		return 0
	}
	m := copierSummary.FindStringSubmatch(string(out))
	if m == nil {
		return 0
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		tb.Errorf("the %s log's summary %q: %v", op, m[0], err)
	}
	return d
}

// copierSummary finds the copier's time in its log's summary, as Go prints a duration: one or
// more number-unit pairs ("1m24.535s" is a minute and 24.535 seconds).
var copierSummary = regexp.MustCompile(`(?:saved|restored) \d+ files, \d+ bytes in ((?:[0-9.]+[a-zµ]+)+)`)

// logSaveVolume logs what a save's volume served, the least time its model allows for it and
// when it served it (nodesim's timeline): how far a save was from its volume's caps, and at
// which of them.
func logSaveVolume(tb testing.TB, which string, st nodesim.VolumeStats) {
	tb.Logf("%s save volume: %d MiB written in %d I/Os, %d MiB read in %d I/Os (%d first reads) at %.0f MiB/s and %.0f IOPS: at least %s; per %s:\n%s",
		which, st.BytesWritten>>20, st.WriteIOs, st.BytesRead>>20, st.ReadIOs, st.FirstReads, st.BytesPerSecond/(1<<20), st.IOPS,
		st.ModeledTime().Round(10*time.Millisecond), nodesim.TimelineStep, st.FormatTimeline(40))
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// ebsCacheMB is the cache size of a run: WARMPOOL_EBS_MB, default 1024.
func ebsCacheMB(tb testing.TB) int {
	if v := os.Getenv("WARMPOOL_EBS_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			tb.Fatalf("WARMPOOL_EBS_MB=%q: want a positive number", v)
		}
		return n
	}
	return 1024
}

// runEBS runs the scenario at mibps on a cache of about mb MiB; with overBudget, a third
// node then finds the newest snapshot too large for its restore budget.
func runEBS(tb testing.TB, mibps, mb int, overBudget bool) ebsResult {
	ctx, kube, sim := tb.Context(), local.Client, local.Nodesim
	res := ebsResult{mibps: mibps}
	began := time.Now()
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, e := range sim.Events() {
				if !e.Time.Before(began) {
					tb.Log(e)
				}
			}
		}
	})
	for _, o := range []client.Object{
		&storagev1.StorageClass{
			ObjectMeta:        metav1.ObjectMeta{Name: ebsStorageClass(mibps)},
			Provisioner:       nodesim.Driver,
			ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
			VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
			Parameters: map[string]string{
				nodesim.ParameterThroughput: strconv.Itoa(mibps), nodesim.ParameterIOPS: strconv.Itoa(nodesim.ScaledGP3IOPS(mibps)),
				"csi.storage.k8s.io/fstype": "xfs",
			},
		},
		&snapshotv1.VolumeSnapshotClass{
			ObjectMeta:     metav1.ObjectMeta{Name: ebsSnapshotClass},
			Driver:         nodesim.Driver,
			DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
			Parameters:     map[string]string{nodesim.ParameterUploadBytesPerSecond: strconv.Itoa(ebsUploadMiBps << 20)},
		},
	} {
		if err := kube.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			tb.Fatal(err)
		}
	}
	startWarmpoolTB(tb, ebsConfig(mibps, max(2, 3*mb/1024)))
	defer cleanupEBSPool(tb)

	// Node A: cold, then filled with the cache, then consolidated: a full save.
	r1, nodeA := runEBSRunner(tb, "ebs-runner-1")
	await(tb, "the engine on A to start cold", 3*time.Minute, func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, nodeA) == 1, nil
	})
	tree := writeEBSTree(tb, sim.NodePath(nodeA, ebsHostPath), int64(mb)<<20)
	res.cacheBytes, res.files = tree.bytes, len(tree.files)
	flushBeforeSave(tb)
	if err := kube.Delete(ctx, r1); err != nil {
		tb.Fatal(err)
	}
	snapA, save, hold := awaitSaveAndRelease(tb, nodeA)
	res.fullSave, res.hold = save, append(res.hold, hold)
	res.fullCopy = copierTime(tb, nodeA, volumes.OpSave)
	sa := volumeStats(tb, volumes.SaveName(nodeA))
	res.fullWritten, res.fullLeast = sa.BytesWritten, sa.ModeledTime()
	logSaveVolume(tb, "full", sa)
	await(tb, "A's snapshot to finish its upload", 10*time.Minute, func(ctx context.Context) (bool, error) {
		return snapshotReady(ctx, snapA)
	})

	// Node B: restored from a volume lazily loaded from A's snapshot; then 5% of its files
	// change and it goes: an incremental save onto a volume made from A's snapshot.
	r2, nodeB := runEBSRunner(tb, "ebs-runner-2")
	await(tb, "the engine on B to start warm", 10*time.Minute, func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineWarmStart, nodeB) == 1, nil
	})
	if n := restoresOn(sim, nodeB, volumes.ResultRestored); n != 1 {
		tb.Fatalf("%d restores on B, want 1", n)
	}
	res.restore = jobTime(tb, nodeB, volumes.OpRestore)
	res.restoreCopy = copierTime(tb, nodeB, volumes.OpRestore)
	rs := volumeStats(tb, volumes.RestoreName(nodeB))
	res.restoreRead, res.restoreFirstReads = rs.BytesRead, rs.FirstReads
	res.restoreModeled, res.restoreModeledTime = rs.ModeledReadBytesPerSecond(), rs.ModeledReadTime()
	tb.Logf("restore volume: %d MiB read in %d I/Os (%d first reads) at %.0f MiB/s and %.0f IOPS: at least %s",
		rs.BytesRead>>20, rs.ReadIOs, rs.FirstReads, rs.ModeledReadBytesPerSecond()/(1<<20), rs.IOPS, rs.ModeledReadTime().Round(100*time.Millisecond))
	changeEBSTree(tb, sim.NodePath(nodeB, ebsHostPath), tree, 20)
	flushBeforeSave(tb)
	if err := kube.Delete(ctx, r2); err != nil {
		tb.Fatal(err)
	}
	_, save, hold = awaitSaveAndRelease(tb, nodeB)
	res.incrSave, res.hold = save, append(res.hold, hold)
	res.incrCopy = copierTime(tb, nodeB, volumes.OpSave)
	incr := volumes.SaveName(nodeB)
	sb := volumeStats(tb, incr)
	res.incrWritten, res.incrLeast = sb.BytesWritten, sb.ModeledTime()
	logSaveVolume(tb, "incremental", sb)
	if vols := sim.VolumesOf(scenario.Namespace, incr); len(vols) != 1 || !provisionedFromSnapshot(sim, vols[0]) {
		tb.Errorf("B's save volumes %v: want one, made from A's snapshot", vols)
	}
	if overBudget {
		expectColdOverBudget(tb, mibps, mb)
	}
	return res
}

// expectColdOverBudget: with a restore budget too small for the cache (1 MiB/s for at most a
// minute of copy), a new node does not attempt the restore: it starts cold at once, with a
// ColdStart Event that names the budget, and no restore volume is made for it.
func expectColdOverBudget(tb testing.TB, mibps, mb int) {
	sim := local.Nodesim
	config := strings.Replace(ebsConfig(mibps, max(2, 3*mb/1024)), fmt.Sprintf("size: %dGi", max(2, 3*mb/1024)),
		fmt.Sprintf("size: %dGi\n      restore:\n        throughput: 1Mi\n        maxWait: 2m\n        provisioningSlack: 1m", max(2, 3*mb/1024)), 1)
	if err := scenario.SetConfig(tb.Context(), local.Client, config); err != nil {
		tb.Fatal(err)
	}
	_, nodeC := runEBSRunner(tb, "ebs-runner-3")
	await(tb, "the engine on C to start cold", 5*time.Minute, func(context.Context) (bool, error) {
		return sim.Count(nodesim.EngineColdStart, nodeC) == 1, nil
	})
	var ev *corev1.Event
	await(tb, "a ColdStart Event on C", time.Minute, func(ctx context.Context) (bool, error) {
		e, err := nodeEventNow(ctx, nodeC, "ColdStart")
		ev = e
		return e != nil, err
	})
	if !strings.Contains(ev.Message, "over-budget") || !strings.Contains(ev.Message, "1Mi/s") {
		tb.Errorf("C's ColdStart Event %q: want the over-budget reason with the budget's numbers", ev.Message)
	}
	if vols := sim.VolumesOf(scenario.Namespace, volumes.RestoreName(nodeC)); len(vols) != 0 || lastEvent(sim, nodesim.CacheJobStarted, nodeC, volumes.OpRestore+" ") != nil {
		tb.Errorf("C attempted a restore over its budget (volumes %v)", vols)
	}
}

// flushBeforeSave writes out what the steps before a save left in the page cache before the
// save is timed. Here the nodes' NVMe and the modeled EBS volumes share one disk and one page
// cache: the tree just written (1 GiB, 1.4 s to flush here) would otherwise be flushed in the
// middle of the full save, which a node's own NVMe array would not make wait. (The restore
// before the incremental save leaves next to nothing: the copier syncs as it writes.)
func flushBeforeSave(tb testing.TB) {
	began := time.Now()
	unix.Sync()
	tb.Logf("page cache flushed before the save in %s", time.Since(began).Round(time.Millisecond))
}

// awaitSaveAndRelease waits for node's save and its node's deletion, checks that the node
// went before its snapshot's upload ended, and returns the snapshot, the save Job's run time
// and how long the node outlived it.
func awaitSaveAndRelease(tb testing.TB, node string) (*snapshotv1.VolumeSnapshot, time.Duration, time.Duration) {
	sim, kube := local.Nodesim, local.Client
	await(tb, "the save on "+node, 10*time.Minute, func(context.Context) (bool, error) {
		if n := savesOn(sim, node, volumes.ResultSaved); n > 0 {
			return true, nil
		}
		return false, nil
	})
	save := jobTime(tb, node, volumes.OpSave)
	saved := lastEvent(sim, nodesim.CacheJobFinished, node, volumes.OpSave+" ").Time
	var gone time.Time
	var snap snapshotv1.VolumeSnapshot
	await(tb, node+" to be deleted", 5*time.Minute, func(ctx context.Context) (bool, error) {
		err := kube.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{})
		if !apierrors.IsNotFound(err) {
			return false, client.IgnoreNotFound(err)
		}
		gone = time.Now()
		list := &snapshotv1.VolumeSnapshotList{}
		if err := kube.List(ctx, list, client.InNamespace(scenario.Namespace), client.MatchingLabels{
			volumes.LabelPool: ebsPool, volumes.LabelSourceNode: volumes.LabelValue(node),
		}); err != nil || len(list.Items) != 1 {
			return false, fmt.Errorf("%d snapshots of %s (%v)", len(list.Items), node, err)
		}
		snap = list.Items[0]
		return true, nil
	})
	if ptr.Deref(snap.Status.ReadyToUse, false) {
		tb.Errorf("%s was deleted only after its snapshot's upload ended: the node was held until readyToUse", node)
	}
	if snap.Status == nil || snap.Status.CreationTime == nil {
		tb.Errorf("%s was deleted before its snapshot was cut", node)
	}
	return &snap, save, gone.Sub(saved)
}

func snapshotReady(ctx context.Context, s *snapshotv1.VolumeSnapshot) (bool, error) {
	if err := local.Client.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
		return false, err
	}
	if s.Status != nil && s.Status.Error != nil {
		return false, fmt.Errorf("snapshot %s failed: %s", s.Name, ptr.Deref(s.Status.Error.Message, ""))
	}
	return s.Status != nil && ptr.Deref(s.Status.ReadyToUse, false), nil
}

// jobTime is how long node's last cache pod of op ran (nodesim's start to end); it logs the
// end of the pod's log (the copier's summary).
func jobTime(tb testing.TB, node, op string) time.Duration {
	sim := local.Nodesim
	end := lastEvent(sim, nodesim.CacheJobFinished, node, op+" ")
	start := lastEvent(sim, nodesim.CacheJobStarted, node, op+" ")
	if end == nil || start == nil || start.Object != end.Object {
		tb.Fatalf("no complete %s run on %s (start %v, end %v)", op, node, start, end)
	}
	ns, pod, _ := strings.Cut(end.Object, "/")
	if logs, _ := filepath.Glob(filepath.Join(sim.Root(), "logs", ns+"_"+pod+"_*.log")); len(logs) == 1 {
		if out, err := os.ReadFile(logs[0]); err == nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			tb.Logf("%s on %s, %s, log ends:\n  %s", op, node, end.Time.Sub(start.Time).Round(time.Millisecond), strings.Join(lines[max(0, len(lines)-10):], "\n  "))
		}
	}
	return end.Time.Sub(start.Time)
}

func lastEvent(sim *nodesim.Sim, kind nodesim.EventKind, node, detailPrefix string) *nodesim.Event {
	var found *nodesim.Event
	for _, e := range sim.Events() {
		if e.Kind == kind && e.Node == node && strings.HasPrefix(e.Detail, detailPrefix) {
			found = &e
		}
	}
	return found
}

func provisionedFromSnapshot(sim *nodesim.Sim, handle string) bool {
	for _, e := range sim.Events() {
		if e.Kind == nodesim.VolumeProvisioned && e.Object == handle {
			return e.Detail != ""
		}
	}
	return false
}

// volumeStats is what the one volume of claim served.
func volumeStats(tb testing.TB, claim string) nodesim.VolumeStats {
	vols := local.Nodesim.VolumesOf(scenario.Namespace, claim)
	if len(vols) != 1 {
		tb.Fatalf("claim %s had volumes %v, want one", claim, vols)
	}
	st, ok := local.Nodesim.VolumeStats(vols[0])
	if !ok {
		tb.Fatalf("no stats for volume %s", vols[0])
	}
	return st
}

// runEBSRunner runs a runner of the EBS pool, one per node, and returns it and its node.
func runEBSRunner(tb testing.TB, name string) (*corev1.Pod, string) {
	pod := scenario.RunnerPod(ebsPool, name)
	pod.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ci-runner"}},
			TopologyKey:   corev1.LabelHostname,
		}},
	}}
	if err := local.Client.Create(tb.Context(), pod); err != nil {
		tb.Fatal(err)
	}
	await(tb, name+" Running", 10*time.Minute, func(ctx context.Context) (bool, error) {
		err := local.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return err == nil && pod.Status.Phase == corev1.PodRunning, err
	})
	return pod, pod.Spec.NodeName
}

// cleanupEBSPool removes the pool's runners, nodes and snapshots.
func cleanupEBSPool(tb testing.TB) {
	ctx, kube := context.WithoutCancel(tb.Context()), local.Client
	if err := kube.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(scenario.Namespace), client.MatchingLabels{"app": "ci-runner", nodepools.LabelPool: ebsPool}); err != nil {
		tb.Error(err)
	}
	await(tb, "the EBS pool's nodes to go", 10*time.Minute, func(ctx context.Context) (bool, error) {
		nodes := &corev1.NodeList{}
		err := kube.List(ctx, nodes, client.MatchingLabels{volumes.LabelPool: ebsPool})
		return err == nil && len(nodes.Items) == 0, err
	})
	if err := kube.DeleteAllOf(ctx, &snapshotv1.VolumeSnapshot{}, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelPool: ebsPool}); err != nil {
		tb.Error(err)
	}
	await(tb, "the EBS pool's snapshots to go", 5*time.Minute, func(ctx context.Context) (bool, error) {
		list := &snapshotv1.VolumeSnapshotList{}
		err := kube.List(ctx, list, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelPool: ebsPool})
		return err == nil && len(list.Items) == 0, err
	})
}

// await polls cond every 100 ms until it holds or timeout passes.
func await(tb testing.TB, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), timeout)
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
			tb.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startWarmpoolTB runs the controller manager in this process with config, as
// startCacheWarmpoolWith does, for tests and benchmarks alike.
func startWarmpoolTB(tb testing.TB, config string) {
	ctx := tb.Context()
	if err := scenario.SetConfig(ctx, local.Client, config); err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(tb.TempDir(), "warmpool.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	ctrlLog.to(logFile)
	mgr, err := operator.New(local.Config, operator.Options{
		Namespace: scenario.Namespace, ConfigMap: "warmpool", NodeClass: nodepools.KWOKNodeClass,
		MetricsAddr: "0", ProbeAddr: "0", SkipControllerNameValidation: true,
		CopierImage: "ghcr.io/warmpool/warmpool:e2e",
	})
	if err != nil {
		tb.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("warmpool: %v", err)
		}
		ctrlLog.to(nil)
		logFile.Close()
		if tb.Failed() {
			out, _ := os.ReadFile(logPath)
			lines := strings.Split(string(out), "\n")
			tb.Logf("warmpool log (last 80 lines):\n%s", strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})
}

// ebsTree is a generated cache: its files' paths (relative), the large layers among them,
// and their bytes.
type ebsTree struct {
	files  []string
	layers map[string]bool
	bytes  int64
}

// writeEBSTree adds a cache of realistic shape, of about target bytes, under the engine's
// state dir at root, as a Dagger engine's cache looks after some builds: a content store
// with a few large layer blobs (30% of the bytes) and many small ones, overlay snapshots of
// many small files (1-64 KiB) with their opaque-directory markers (trusted.overlay.opaque)
// and whiteouts (0:0 character devices), shared-library symlinks, files hardlinked between
// snapshots, user.* xattrs, and bolt databases.
func writeEBSTree(tb testing.TB, root string, target int64) ebsTree {
	cc := rand.NewChaCha8([32]byte{42})
	r := rand.New(cc)
	buf := make([]byte, 64<<20)
	tree := ebsTree{layers: map[string]bool{}}
	write := func(rel string, n int) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		cc.Read(buf[:n])
		if err := os.WriteFile(p, buf[:n], 0o644); err != nil {
			tb.Fatal(err)
		}
		tree.bytes += int64(n)
		tree.files = append(tree.files, rel)
		return p
	}
	large := int(min(target*3/10/6, int64(len(buf))))
	for i := range 6 {
		rel := fmt.Sprintf("worker/content/blobs/sha256/%064x", uint64(0xf000000000000000)+uint64(i)) // no small blob's name
		write(rel, large)
		tree.layers[rel] = true
	}
	for i := range 3 {
		write(fmt.Sprintf("worker/bench-db%d/metadata.db", i), 4<<20)
	}
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; tree.bytes < target; i++ {
		n := 1<<10 + r.IntN(63<<10)
		if i%3 == 0 {
			write(fmt.Sprintf("worker/content/blobs/sha256/%064x", i), n)
			continue
		}
		snap := i % 97
		p := write(fmt.Sprintf("worker/snapshots/snapshots/bench-%d/fs/usr/lib/d%d/f%d.so", snap, i%13, i), n)
		switch {
		case i%50 == 1:
			// The same file in another snapshot: one inode, two names.
			must(os.MkdirAll(filepath.Join(root, fmt.Sprintf("worker/snapshots/snapshots/bench-%d/fs/shared", snap)), 0o755))
			must(os.Link(p, filepath.Join(root, fmt.Sprintf("worker/snapshots/snapshots/bench-%d/fs/shared/f%d.so", snap, i))))
		case i%50 == 2:
			must(unix.Lsetxattr(p, "user.warmpool.bench", []byte(strconv.Itoa(i)), 0))
		case i%200 == 3:
			must(unix.Mknod(p+".wh", unix.S_IFCHR, 0))
		case i%7 == 4:
			// A layer's shared-library link: most directories of layer contents hold some.
			must(os.Symlink(filepath.Base(p), strings.TrimSuffix(p, ".so")+".so.1"))
		}
	}
	for snap := range 97 {
		dir := filepath.Join(root, fmt.Sprintf("worker/snapshots/snapshots/bench-%d/fs", snap))
		if _, err := os.Stat(dir); err == nil {
			must(unix.Lsetxattr(dir, "trusted.overlay.opaque", []byte("y"), 0))
		}
	}
	sort.Strings(tree.files)
	return tree
}

// changeEBSTree rewrites about one file in every `every` of the tree under root (the
// databases always): new bytes at the start and a new mtime, as a build that touched them
// would. The large layer blobs are content-addressed, so never rewritten.
func changeEBSTree(tb testing.TB, root string, tree ebsTree, every int) {
	r := rand.New(rand.NewPCG(4, 2))
	for _, rel := range tree.files {
		if tree.layers[rel] || (!strings.HasSuffix(rel, ".db") && r.IntN(every) != 0) {
			continue
		}
		p := filepath.Join(root, rel)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := f.WriteAt([]byte(fmt.Sprintf("changed %d", r.Int64())), 0); err != nil {
			tb.Fatal(err)
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
		mt := time.Now()
		if err := os.Chtimes(p, mt, mt); err != nil {
			tb.Fatal(err)
		}
	}
}
