package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/e2e/nodesim"
	"warmpool.io/warmpool/e2e/scenario"
	"warmpool.io/warmpool/volumes"
)

// The Event reasons that report a node's save outcome, and its restore outcome.
var (
	saveOutcomeReasons = []string{
		enginecache.ReasonSaved, enginecache.ReasonUnclean, enginecache.ReasonSaveFailed, enginecache.ReasonSaveTimedOut, enginecache.ReasonLost,
	}
	restoreOutcomeReasons = []string{enginecache.ReasonRestored, enginecache.ReasonColdStart, enginecache.ReasonRestoreUnverified}
)

// The checks, in the order they are reported: issue #11's list.
const (
	checkDuplicate  = "no duplicate snapshot"
	checkLost       = "no lost snapshot"
	checkFalse      = "no false report"
	checkSilent     = "no silent loss"
	checkOrphan     = "no orphan"
	checkDeadline   = "no guard past its deadline"
	checkTaint      = "no startup taint left"
	checkWarmNewest = "every new node warm from the newest snapshot, equal checksums"
)

var chaosChecks = []string{checkDuplicate, checkLost, checkFalse, checkSilent, checkOrphan, checkDeadline, checkTaint, checkWarmNewest}

// chaosFacts is everything the checks judge, gathered once the run settled.
type chaosFacts struct {
	nodes []chaosNodeFacts
	// metrics: each counter summed over every process that ran (each starts at 0).
	savedMetric, lostMetric, warmMetric, coldMetric float64
	processes                                       int
	killed                                          int // processes SIGKILLed (processes - the ones alive at the end)
	orphans, pastDeadline, taintsLeft               []string
}

// chaosNodeFacts is one node of the pool: what really happened (nodesim's record and the
// snapshots seen), and what was reported (Events and the Node's last annotations).
type chaosNodeFacts struct {
	name  string
	run   *chaosNodeRun // nil for a node no round asked for
	gone  bool
	alive bool // still there at the end, with the startup taint if startupTaint
	// Truth.
	coldStarts, warmRestores, wipes, cleanStops int
	snapshots                                   []chaosSnap
	cuts                                        map[string]int // snapshot -> times nodesim cut it
	restoredFrom                                string         // the snapshot its restore volume was made from
	// Reports.
	events       map[string]int // reason -> count (Event.count summed)
	saveOutcome  string         // AnnotationSaveOutcome as last seen
	reportedFrom string         // AnnotationRestoreSnapshot as last seen
}

// judgeChaos holds the facts to each check and returns the violations by check. It is pure:
// the gathering is verify's.
func judgeChaos(f chaosFacts) map[string][]string {
	v := map[string][]string{}
	add := func(check, format string, args ...any) { v[check] = append(v[check], fmt.Sprintf(format, args...)) }
	var saved, lost, warm, cold int
	for _, n := range f.nodes {
		var cut, ready []string
		for _, s := range n.snapshots {
			if !s.cut.IsZero() {
				cut = append(cut, s.name)
			}
			if s.ready && !s.failed {
				ready = append(ready, s.name)
			}
			if s.deleted {
				add(checkLost, "snapshot %s of node %s was deleted during the run", s.name, n.name)
			}
			if c := n.cuts[s.name]; c > 1 {
				add(checkDuplicate, "snapshot %s of node %s was cut %d times", s.name, n.name, c)
			}
		}
		if len(n.snapshots) > 1 {
			add(checkDuplicate, "node %s: %d snapshots of one cache: %v", n.name, len(n.snapshots), snapNames(n.snapshots))
		}
		if n.warmRestores > 0 && n.wipes == 0 {
			warm++
		}
		if n.coldStarts > 0 {
			cold++
		}

		// Restore: reported exactly once, as what happened.
		restoreReports := sumReasons(n.events, restoreOutcomeReasons)
		switch {
		case restoreReports != 1:
			add(checkFalse, "node %s: restore outcome reported %d times (%s), want once", n.name, restoreReports, reasons(n.events, restoreOutcomeReasons))
		case n.warmRestores > 0 && n.wipes == 0 && n.events[enginecache.ReasonRestored] != 1:
			add(checkFalse, "node %s: its engine kept the restored cache, but the report is %s", n.name, reasons(n.events, restoreOutcomeReasons))
		case n.warmRestores == 0 && n.coldStarts > 0 && n.events[enginecache.ReasonColdStart] != 1:
			add(checkFalse, "node %s: its engine started cold, but the report is %s", n.name, reasons(n.events, restoreOutcomeReasons))
		}
		if n.warmRestores > 0 && n.events[enginecache.ReasonRestoreCopied] != 1 {
			add(checkFalse, "node %s: %d %s Events for one restore, want 1", n.name, n.events[enginecache.ReasonRestoreCopied], enginecache.ReasonRestoreCopied)
		}
		if n.reportedFrom != "" && n.restoredFrom != "" && n.reportedFrom != n.restoredFrom {
			add(checkFalse, "node %s: reported restored from %s, but its volume was made from %s", n.name, n.reportedFrom, n.restoredFrom)
		}
		if g := n.events[enginecache.ReasonGuarded]; g > 1 {
			add(checkFalse, "node %s: %d %s Events for one hold, want 1", n.name, g, enginecache.ReasonGuarded)
		}

		if n.alive {
			continue // not disrupted: nothing to save (yet)
		}
		if len(cut) > 0 {
			saved++
		} else {
			lost++
		}
		// Save: a clean engine always has a snapshot, made once and reported once, as what
		// happened.
		if n.cleanStops > 0 && len(ready) == 0 {
			add(checkLost, "node %s: its engine stopped cleanly, but no snapshot of its cache became ready (snapshots: %v; save outcome on the Node: %q; Events: %s)",
				n.name, snapNames(n.snapshots), n.saveOutcome, reasons(n.events, saveOutcomeReasons))
		}
		saveReports := sumReasons(n.events, saveOutcomeReasons)
		switch {
		case saveReports == 0:
			add(checkSilent, "node %s went with no save outcome reported (no Event; outcome on the Node: %q; snapshots: %v)", n.name, n.saveOutcome, snapNames(n.snapshots))
		case saveReports > 1:
			add(checkFalse, "node %s: save outcome reported %d times (%s), want once", n.name, saveReports, reasons(n.events, saveOutcomeReasons))
		}
		if n.events[enginecache.ReasonSaved] > 0 && len(cut) == 0 {
			add(checkFalse, "node %s: reported %s, but no snapshot of it was cut", n.name, enginecache.ReasonSaved)
		}
		if len(ready) > 0 && saveReports > 0 && n.events[enginecache.ReasonSaved] == 0 {
			add(checkFalse, "node %s: its snapshot %v is ready, but the save was reported as %s", n.name, ready, reasons(n.events, saveOutcomeReasons))
		}

		// A new node restores the newest snapshot there was when it came, byte for byte.
		r := n.run
		if r == nil || len(r.newest) == 0 {
			continue
		}
		switch {
		case n.warmRestores == 0:
			add(checkWarmNewest, "node %s (round %d) did not start warm (%d cold starts, %d wipes; restore volume from %q); newest snapshots then: %v",
				n.name, r.round, n.coldStarts, n.wipes, n.restoredFrom, r.newest)
		case !slices.Contains(r.newest, n.restoredFrom):
			add(checkWarmNewest, "node %s (round %d) restored %q, not the newest: %v", n.name, r.round, n.restoredFrom, r.newest)
		case !r.digestChecked:
			add(checkWarmNewest, "node %s (round %d): its cache was not compared with its source's", n.name, r.round)
		case len(r.digestDiff) > 0:
			add(checkWarmNewest, "node %s (round %d): its cache is not the cache of %s it restored: %v", n.name, r.round, r.digestSource, r.digestDiff)
		case r.trusted == 0:
			add(checkWarmNewest, "node %s (round %d): no trusted.* xattr in its cache: the comparison proves nothing", n.name, r.round)
		}
	}
	for _, n := range f.nodes {
		if n.run != nil && n.run.taintAtRun {
			add(checkTaint, "node %s: its startup taint was still on while its runner ran", n.name)
		}
	}
	for _, s := range f.taintsLeft {
		add(checkTaint, "%s", s)
	}
	for _, m := range []struct {
		what      string
		got, want float64
	}{
		{`warmpool_cache_saves_total{result="saved"}`, f.savedMetric, float64(saved)},
		{"warmpool_cache_lost_total (every reason but snapshot-failed)", f.lostMetric, float64(lost)},
		{`warmpool_cache_restores_total{result="warm"}`, f.warmMetric, float64(warm)},
		{"warmpool_cold_starts_total (every reason)", f.coldMetric, float64(cold)},
	} {
		switch {
		case m.got > m.want:
			add(checkFalse, "%s summed over the %d processes is %v, want %v (what happened): counted twice", m.what, f.processes, m.got, m.want)
		case m.want-m.got > float64(f.killed):
			// A count a process made after its last scrape dies with it, as it would between two
			// scrapes of a real Prometheus: each killed process may take one with it (the Events,
			// checked above, are the durable record). More missing than that was never counted.
			add(checkFalse, "%s summed over the %d processes is %v, want %v (what happened): more missing than the %d killed processes could have taken with them",
				m.what, f.processes, m.got, m.want, f.killed)
		}
	}
	v[checkOrphan] = append(v[checkOrphan], f.orphans...)
	v[checkDeadline] = append(v[checkDeadline], f.pastDeadline...)
	return v
}

func sumReasons(events map[string]int, reasons []string) int {
	n := 0
	for _, r := range reasons {
		n += events[r]
	}
	return n
}

// reasons is "CacheSaved x1, CacheLost x1" for the reasons present, "none" if none is.
func reasons(events map[string]int, of []string) string {
	var parts []string
	for _, r := range of {
		if c := events[r]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s x%d", r, c))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func snapNames(s []chaosSnap) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].name
	}
	return out
}

// verify lets the run settle (a live leader, the protocol's objects gone, Events delivered),
// gathers the facts, judges them, and reports each violation under its check, then a summary.
func (r *chaosRun) verify(kills []chaosKill, killerErrs []string) {
	t := r.t
	t.Helper()
	for _, e := range killerErrs {
		t.Errorf("chaos: %s", e)
	}
	ctx := t.Context()
	if awaitLeader(ctx, r.replicas, 2*time.Minute) == nil {
		t.Error("no replica leads after the last kill")
	}
	nodes := r.obs.nodeNames()
	// Settling: what the protocol made goes, and the reports arrive. Not a failure by itself:
	// the checks say what is missing.
	settle := func(what string, cond func() bool) {
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
		}
		if !cond() {
			t.Logf("settling: %s did not happen within 2 minutes", what)
		}
	}
	settle("the protocol's objects to go", func() bool { return len(r.orphans(ctx)) == 0 })
	settle("every node's outcomes to be reported", func() bool {
		events, err := nodeEventCounts(ctx, nodes)
		if err != nil {
			return false
		}
		for _, n := range nodes {
			rec, _ := r.obs.node(n)
			if sumReasons(events[n], restoreOutcomeReasons) == 0 || rec.gone && sumReasons(events[n], saveOutcomeReasons) == 0 {
				return false
			}
		}
		return true
	})
	// Events are sent asynchronously: a duplicate may trail the first report.
	time.Sleep(3 * time.Second)

	f := r.gather(ctx, nodes)
	verdicts := judgeChaos(f)
	for _, c := range chaosChecks {
		for _, v := range verdicts[c] {
			t.Errorf("%s: %s", c, v)
		}
	}
	r.summarize(kills, f, verdicts)
}

// gather reads what happened and what was reported.
func (r *chaosRun) gather(ctx context.Context, nodes []string) chaosFacts {
	t := r.t
	f := chaosFacts{orphans: r.orphans(ctx), pastDeadline: r.obs.guardsPastDeadline()}
	events, err := nodeEventCounts(ctx, nodes)
	if err != nil {
		t.Fatal(err)
	}
	simEvents := local.Nodesim.Events()
	for _, name := range nodes {
		rec, _ := r.obs.node(name)
		n := chaosNodeFacts{
			name: name, run: r.nodes[name], gone: rec.gone, alive: !rec.gone,
			snapshots: r.obs.snapshotsFrom(name), cuts: map[string]int{}, restoredFrom: rec.restoredFrom,
			events: events[name], saveOutcome: rec.annotations[enginecache.AnnotationSaveOutcome],
			reportedFrom: rec.annotations[enginecache.AnnotationRestoreSnapshot],
		}
		if n.events == nil {
			n.events = map[string]int{}
		}
		for _, e := range simEvents {
			switch {
			case e.Node != name:
			case e.Kind == nodesim.EngineColdStart:
				n.coldStarts++
			case e.Kind == nodesim.EngineWarmStart && e.Detail == "restored":
				n.warmRestores++
			case e.Kind == nodesim.EngineWiped:
				n.wipes++
			case e.Kind == nodesim.EngineStopped:
				n.cleanStops++
			}
		}
		for _, s := range n.snapshots {
			for _, e := range simEvents {
				if e.Kind == nodesim.SnapshotCut && e.Object == scenario.Namespace+"/"+s.name {
					n.cuts[s.name]++
				}
			}
		}
		if n.alive && rec.startupTaint {
			f.taintsLeft = append(f.taintsLeft, fmt.Sprintf("node %s still carries the startup taint after the run", name))
		}
		f.nodes = append(f.nodes, n)
	}
	pool := map[string]string{"pool": chaosPool}
	f.savedMetric = metricTotal(r.replicas, "warmpool_cache_saves_total", map[string]string{"pool": chaosPool, "result": volumes.ResultSaved})
	f.lostMetric = metricTotal(r.replicas, "warmpool_cache_lost_total", pool) -
		metricTotal(r.replicas, "warmpool_cache_lost_total", map[string]string{"pool": chaosPool, "reason": "snapshot-failed"})
	f.warmMetric = metricTotal(r.replicas, "warmpool_cache_restores_total", map[string]string{"pool": chaosPool, "result": volumes.ResultWarm})
	f.coldMetric = metricTotal(r.replicas, "warmpool_cold_starts_total", pool)
	for _, rep := range r.replicas {
		rep.mu.Lock()
		f.processes += len(rep.lives)
		rep.mu.Unlock()
	}
	// Each replica's last process runs to the end; every other one was killed.
	f.killed = f.processes - len(r.replicas)
	return f
}

// orphans lists the cache protocol's objects of the pool that are still there (and not being
// deleted): guard pods, save, restore and verify Jobs and PVCs.
func (r *chaosRun) orphans(ctx context.Context) []string {
	var out []string
	ns, pool := client.InNamespace(scenario.Namespace), client.MatchingLabels{volumes.LabelPool: chaosPool}
	for _, l := range []client.ObjectList{&corev1.PodList{}, &batchv1.JobList{}, &corev1.PersistentVolumeClaimList{}} {
		if err := local.Client.List(ctx, l, ns, pool); err != nil {
			return []string{fmt.Sprintf("listing %T: %v", l, err)}
		}
		items, err := apimeta.ExtractList(l)
		if err != nil {
			return []string{fmt.Sprintf("reading %T: %v", l, err)}
		}
		for _, item := range items {
			if o, ok := item.(client.Object); ok && o.GetLabels()[volumes.LabelOp] != "" && o.GetDeletionTimestamp() == nil {
				out = append(out, fmt.Sprintf("%T %s (%s %s)", o, o.GetName(), volumes.LabelOp, o.GetLabels()[volumes.LabelOp]))
			}
		}
	}
	sort.Strings(out)
	return out
}

// nodeEventCounts counts the Events on each of nodes by reason; an Event the recorder
// deduplicated counts as often as it says it happened.
func nodeEventCounts(ctx context.Context, nodes []string) (map[string]map[string]int, error) {
	list := &corev1.EventList{}
	if err := local.Client.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing Events, %w", err)
	}
	out := map[string]map[string]int{}
	for _, e := range list.Items {
		if e.InvolvedObject.Kind != "Node" || !slices.Contains(nodes, e.InvolvedObject.Name) {
			continue
		}
		if out[e.InvolvedObject.Name] == nil {
			out[e.InvolvedObject.Name] = map[string]int{}
		}
		out[e.InvolvedObject.Name][e.Reason] += int(max(e.Count, 1))
	}
	return out, nil
}

// summarize logs the run's numbers, for the closing note.
func (r *chaosRun) summarize(kills []chaosKill, f chaosFacts, verdicts map[string][]string) {
	byPhase := map[string]int{}
	for _, k := range kills {
		byPhase[k.target]++
	}
	var targets []string
	for p, n := range byPhase {
		targets = append(targets, fmt.Sprintf("%s x%d", p, n))
	}
	sort.Strings(targets)
	var disrupted, snaps, warm, eligible int
	for _, n := range f.nodes {
		if !n.alive {
			disrupted++
		}
		for _, s := range n.snapshots {
			if s.ready {
				snaps++
			}
		}
		if n.run != nil && len(n.run.newest) > 0 {
			eligible++
			if n.warmRestores > 0 && slices.Contains(n.run.newest, n.restoredFrom) && len(n.run.digestDiff) == 0 {
				warm++
			}
		}
	}
	var outcome []string
	for _, c := range chaosChecks {
		if len(verdicts[c]) == 0 {
			outcome = append(outcome, c+": ok")
		} else {
			outcome = append(outcome, fmt.Sprintf("%s: %d FAILED", c, len(verdicts[c])))
		}
	}
	r.t.Logf("chaos summary: %d kills (aimed at: %s) over %d processes, %d rounds, %d nodes (%d disrupted); %d ready snapshots; %d of %d new nodes warm from the newest snapshot with equal checksums; metrics summed: saved %v, lost %v, warm %v, cold %v\n  %s",
		len(kills), strings.Join(targets, ", "), f.processes, r.rounds, len(f.nodes), disrupted, snaps, warm, eligible,
		f.savedMetric, f.lostMetric, f.warmMetric, f.coldMetric, strings.Join(outcome, "\n  "))
}
