package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/volumes"
)

// The phases of the cache protocol a chaos kill is aimed at and logged with, as the objects
// show them for one node (chaosObserver.phaseOf). The last two are only targets: a kill at a
// random moment, and a kill of a process that has not led yet (a crash loop).
const (
	phaseBooting     = "booting (startup taint, no restore Job)"
	phaseRestoreJob  = "restore Job running"
	phaseVerifying   = "restore verifying"
	phaseRunning     = "running"
	phaseDisrupted   = "consolidation: disrupted, no guard"
	phaseGuard       = "guard present, no save Job"
	phaseSaveJob     = "save Job running"
	phaseSnapshotCut = "snapshot cut, guard present"
	phaseConcluded   = "save concluded, node not gone"
	phaseAnytime     = "any moment"
	phaseStarting    = "before leading (crash loop)"
	// phaseConsolidation matches any step of a save under way, whichever shows first.
	phaseConsolidation = "consolidation (any step before the save concluded)"
)

// phaseMatches says whether a node's phase is what a kill aims at.
func phaseMatches(target, phase string) bool {
	if target == phaseConsolidation {
		return phase == phaseDisrupted || phase == phaseGuard || phase == phaseSaveJob || phase == phaseSnapshotCut
	}
	return phase == target
}

// chaosObserver watches a pool's Nodes and the cache protocol's objects (an informer cache, so
// short phases are seen), and remembers what the checks need after the objects are gone:
// every snapshot of the pool and its states, each node's last annotations and the snapshot
// its restore volume was made from, and every guard seen holding a node past its deadline.
type chaosObserver struct {
	pool   string
	cache  crcache.Cache
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// changed is closed (and replaced) on every event, so a waiter looks at each state the
	// informers delivered rather than at a poll's sample of them.
	changed chan struct{}
	nodes   map[string]*chaosNode
	snaps   map[string]*chaosSnap
	// pastDeadline: guard name -> what was seen, the first time a guard still held its node
	// after the deadline recorded on it.
	pastDeadline map[string]string
}

// chaosNode is what was seen of one node of the pool.
type chaosNode struct {
	name      string
	firstSeen time.Time
	gone      bool
	// startupTaint and annotations as last seen (the Node's final state once it is gone).
	startupTaint bool
	annotations  map[string]string
	// restoredFrom is the snapshot its restore volume was made from: what was copied.
	restoredFrom string
}

// chaosSnap is what was seen of one VolumeSnapshot of the pool.
type chaosSnap struct {
	name, source        string // source: the LabelSourceNode value
	arch, engineVersion string
	cut                 time.Time // status.creationTime
	ready, failed       bool
	quarantined         bool
	deleted             bool // its deletion was seen (deletionTimestamp, or gone)
}

func (s *chaosSnap) good() bool { return s.ready && !s.failed && !s.quarantined && !s.deleted }

func startChaosObserver(t *testing.T, pool string) *chaosObserver {
	t.Helper()
	c, err := crcache.New(local.Config, crcache.Options{
		Scheme:            cluster.Scheme(),
		DefaultNamespaces: map[string]crcache.Config{scenario.Namespace: {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &chaosObserver{
		pool: pool, cache: c, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}),
		nodes: map[string]*chaosNode{}, snaps: map[string]*chaosSnap{}, pastDeadline: map[string]string{},
	}
	handlers := map[client.Object]toolscache.ResourceEventHandler{
		&corev1.Node{}:                  o.handler(o.sawNode),
		&snapshotv1.VolumeSnapshot{}:    o.handler(o.sawSnapshot),
		&corev1.PersistentVolumeClaim{}: o.handler(o.sawPVC),
		&corev1.Pod{}:                   o.handler(o.sawPod),
		&batchv1.Job{}:                  o.handler(func(client.Object, bool) {}),
		&karpv1.NodeClaim{}:             o.handler(func(client.Object, bool) {}),
	}
	for obj, h := range handlers {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			cancel()
			t.Fatalf("watching %T: %v", obj, err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	go func() {
		defer close(o.done)
		if err := c.Start(ctx); err != nil {
			t.Errorf("chaos observer: %v", err)
		}
	}()
	go o.watchDeadlines(ctx)
	t.Cleanup(o.stop)
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if !c.WaitForCacheSync(syncCtx) {
		t.Fatal("the chaos observer's cache did not sync within a minute")
	}
	return o
}

func (o *chaosObserver) stop() {
	o.cancel()
	<-o.done
}

// handler calls saw with the object of every add and update, and with deleted=true for a
// delete (with the last state the informer had), then wakes the waiters.
func (o *chaosObserver) handler(saw func(obj client.Object, deleted bool)) toolscache.ResourceEventHandler {
	seen := func(obj any, deleted bool) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if c, ok := obj.(client.Object); ok {
			saw(c, deleted)
		}
		o.mu.Lock()
		close(o.changed)
		o.changed = make(chan struct{})
		o.mu.Unlock()
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { seen(obj, false) },
		UpdateFunc: func(_, obj any) { seen(obj, false) },
		DeleteFunc: func(obj any) { seen(obj, true) },
	}
}

func (o *chaosObserver) sawNode(obj client.Object, deleted bool) {
	n, ok := obj.(*corev1.Node)
	if !ok || n.Labels[volumes.LabelPool] != o.pool {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	rec := o.nodes[n.Name]
	if rec == nil {
		rec = &chaosNode{name: n.Name, firstSeen: time.Now()}
		o.nodes[n.Name] = rec
	}
	rec.gone = rec.gone || deleted
	rec.startupTaint = hasStartupTaint(n.Spec.Taints)
	rec.annotations = copyMap(n.Annotations)
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (o *chaosObserver) sawSnapshot(obj client.Object, deleted bool) {
	s, ok := obj.(*snapshotv1.VolumeSnapshot)
	if !ok || s.Labels[volumes.LabelPool] != o.pool {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	rec := o.snaps[s.Name]
	if rec == nil {
		rec = &chaosSnap{name: s.Name}
		o.snaps[s.Name] = rec
	}
	rec.source = s.Labels[volumes.LabelSourceNode]
	rec.arch, rec.engineVersion = s.Labels[volumes.LabelArch], s.Labels[volumes.LabelEngineVersion]
	if volumes.Cut(s) {
		rec.cut = s.Status.CreationTime.Time
	}
	rec.ready = rec.ready || (s.Status != nil && ptr.Deref(s.Status.ReadyToUse, false))
	rec.failed = rec.failed || volumes.Failed(s) || (s.Status != nil && s.Status.Error != nil && !ptr.Deref(s.Status.ReadyToUse, false))
	rec.quarantined = rec.quarantined || volumes.Quarantined(s)
	rec.deleted = rec.deleted || deleted || s.DeletionTimestamp != nil
}

func (o *chaosObserver) sawPVC(obj client.Object, _ bool) {
	p, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || p.Labels[volumes.LabelPool] != o.pool || p.Labels[volumes.LabelOp] != volumes.OpRestore || p.Spec.DataSource == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	node := o.nodeByLabel(p.Labels[volumes.LabelNode])
	if node == "" {
		return
	}
	o.nodes[node].restoredFrom = p.Spec.DataSource.Name
}

// nodeByLabel is the node whose LabelValue is v ("" if none was seen). Callers hold mu.
func (o *chaosObserver) nodeByLabel(v string) string {
	for name := range o.nodes {
		if volumes.LabelValue(name) == v {
			return name
		}
	}
	return ""
}

func (o *chaosObserver) sawPod(obj client.Object, deleted bool) {
	if p, ok := obj.(*corev1.Pod); ok && !deleted {
		o.checkGuard(p, time.Now())
	}
}

// checkGuard records a guard of the pool that still holds its node after its deadline.
func (o *chaosObserver) checkGuard(p *corev1.Pod, now time.Time) {
	if p.Labels[volumes.LabelOp] != volumes.OpGuard || p.Labels[volumes.LabelPool] != o.pool || p.DeletionTimestamp != nil {
		return
	}
	at, err := time.Parse(time.RFC3339, p.Annotations[enginecache.AnnotationDeadline])
	if err != nil || !now.After(at) {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.pastDeadline[p.Name]; !ok {
		o.pastDeadline[p.Name] = fmt.Sprintf("guard %s still held node %s at %s, %s past its deadline %s",
			p.Name, p.Spec.NodeName, now.Format(time.RFC3339), now.Sub(at).Round(time.Second), at.Format(time.RFC3339))
	}
}

// watchDeadlines looks at every guard once a second: a guard nobody touches gets no events.
func (o *chaosObserver) watchDeadlines(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pods := &corev1.PodList{}
		if err := o.cache.List(ctx, pods, client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelOp: volumes.OpGuard}); err != nil {
			continue
		}
		now := time.Now()
		for i := range pods.Items {
			o.checkGuard(&pods.Items[i], now)
		}
	}
}

// phases maps each node of the pool that exists now to its phase.
func (o *chaosObserver) phases(ctx context.Context) (map[string]string, error) {
	nodes := &corev1.NodeList{}
	if err := o.cache.List(ctx, nodes, client.MatchingLabels{volumes.LabelPool: o.pool}); err != nil {
		return nil, err
	}
	ns := client.InNamespace(scenario.Namespace)
	pods, jobs, snaps, claims := &corev1.PodList{}, &batchv1.JobList{}, &snapshotv1.VolumeSnapshotList{}, &karpv1.NodeClaimList{}
	if err := o.cache.List(ctx, pods, ns, client.MatchingLabels{volumes.LabelOp: volumes.OpGuard}); err != nil {
		return nil, err
	}
	if err := o.cache.List(ctx, jobs, ns); err != nil {
		return nil, err
	}
	if err := o.cache.List(ctx, snaps, ns, client.MatchingLabels{volumes.LabelPool: o.pool}); err != nil {
		return nil, err
	}
	if err := o.cache.List(ctx, claims); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		out[n.Name] = phaseOf(n, pods.Items, jobs.Items, snaps.Items, claims.Items)
	}
	return out, nil
}

// phaseOf is the most advanced step of the protocol the objects show for node n.
func phaseOf(n *corev1.Node, guards []corev1.Pod, jobs []batchv1.Job, snaps []snapshotv1.VolumeSnapshot, claims []karpv1.NodeClaim) string {
	running := func(name string) bool {
		for i := range jobs {
			if j := &jobs[i]; j.Name == name && j.DeletionTimestamp == nil && !jobFinished(j) {
				return true
			}
		}
		return false
	}
	if hasStartupTaint(n.Spec.Taints) {
		if running(volumes.RestoreName(n.Name)) {
			return phaseRestoreJob
		}
		return phaseBooting
	}
	disrupted := n.DeletionTimestamp != nil
	for _, taint := range n.Spec.Taints {
		disrupted = disrupted || taint.Key == karpv1.DisruptedTaintKey
	}
	for i := range claims {
		disrupted = disrupted || claims[i].Status.NodeName == n.Name && claims[i].DeletionTimestamp != nil
	}
	if !disrupted {
		if n.Annotations[enginecache.AnnotationRestore] == "verifying" {
			return phaseVerifying
		}
		return phaseRunning
	}
	if n.Annotations[enginecache.AnnotationSaveOutcome] != "" {
		return phaseConcluded
	}
	guarded := slices.ContainsFunc(guards, func(p corev1.Pod) bool {
		return p.Name == volumes.GuardName(n.Name) && p.DeletionTimestamp == nil
	})
	for i := range snaps {
		if s := &snaps[i]; guarded && s.Labels[volumes.LabelSourceNode] == volumes.LabelValue(n.Name) && volumes.Cut(s) {
			return phaseSnapshotCut
		}
	}
	switch {
	case running(volumes.SaveName(n.Name)):
		return phaseSaveJob
	case guarded:
		return phaseGuard
	}
	return phaseDisrupted
}

func jobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// describe is phases as one line: "node-a: save Job running; node-b: running".
func describePhases(p map[string]string) string {
	if len(p) == 0 {
		return "no node of the pool"
	}
	names := make([]string, 0, len(p))
	for n := range p {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ": " + p[n]
	}
	return strings.Join(parts, "; ")
}

// waitPhase waits until some node shows the target phase, up to timeout; it reports whether
// one did. It looks again at every event the informers deliver.
func (o *chaosObserver) waitPhase(ctx context.Context, target string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		o.mu.Lock()
		changed := o.changed
		o.mu.Unlock()
		if p, err := o.phases(ctx); err == nil {
			for _, v := range p {
				if phaseMatches(target, v) {
					return true
				}
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// newestGood names the newest good snapshots of the pool's key: ready, not failed, not
// quarantined, not deleted. Cut times have whole seconds, so more than one may tie.
func (o *chaosObserver) newestGood(arch, engineVersion string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var newest time.Time
	var names []string
	for _, s := range o.snaps {
		if !s.good() || s.arch != arch || s.engineVersion != engineVersion {
			continue
		}
		switch {
		case s.cut.After(newest):
			newest, names = s.cut, []string{s.name}
		case s.cut.Equal(newest):
			names = append(names, s.name)
		}
	}
	sort.Strings(names)
	return names
}

// snapshotsFrom is the snapshots whose source label is node's.
func (o *chaosObserver) snapshotsFrom(node string) []chaosSnap {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []chaosSnap
	for _, s := range o.snaps {
		if s.source == volumes.LabelValue(node) {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// snapshot is the record of one snapshot (false if never seen).
func (o *chaosObserver) snapshot(name string) (chaosSnap, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.snaps[name]
	if !ok {
		return chaosSnap{}, false
	}
	return *s, true
}

// node is the record of one node (false if never seen).
func (o *chaosObserver) node(name string) (chaosNode, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, ok := o.nodes[name]
	if !ok {
		return chaosNode{}, false
	}
	c := *n
	c.annotations = copyMap(n.annotations)
	return c, true
}

// nodeNames is every node of the pool seen, in the order they appeared.
func (o *chaosObserver) nodeNames() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	names := make([]string, 0, len(o.nodes))
	for n := range o.nodes {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := o.nodes[names[i]], o.nodes[names[j]]
		if !a.firstSeen.Equal(b.firstSeen) {
			return a.firstSeen.Before(b.firstSeen)
		}
		return names[i] < names[j]
	})
	return names
}

// sourceNode is the node a snapshot was saved from, by its source label.
func (o *chaosObserver) sourceNode(snapshot string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.snaps[snapshot]
	if !ok {
		return ""
	}
	return o.nodeByLabel(s.source)
}

// guardsPastDeadline lists what was seen of guards that outlived their deadline.
func (o *chaosObserver) guardsPastDeadline() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.pastDeadline))
	for _, v := range o.pastDeadline {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}
