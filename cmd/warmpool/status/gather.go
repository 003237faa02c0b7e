package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	// The annotation keys and Event reasons are the controllers' own constants, imported so
	// that status can never disagree with what the controllers write. They live in the
	// reconciler packages today (controller/cache, controller/scaling).
	cachectrl "warmpool.io/warmpool/controller/cache"
	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// Options of Gather.
type Options struct {
	// Namespace is warmpool's namespace; ConfigMap the name of its config ConfigMap.
	Namespace, ConfigMap string
	// Pool limits the report to one pool ("" for all).
	Pool string
	// Snapshots and Events bound the newest snapshots and Events shown per pool (0: defaults).
	Snapshots, Events int
	// AllEvents shows every Event of the pool's objects; by default only warmpool's own and
	// Warnings, since Karpenter records a Normal Event for each status condition of each
	// NodeClaim, which would crowd out the pool's story.
	AllEvents bool
	// Metrics is a scrape of the controller's metrics endpoint, for the queue sources'
	// readings (nil: they are reported unknown); MetricsSource says where it came from.
	Metrics       *Metrics
	MetricsSource string
	// Now is the time the report is taken at.
	Now time.Time
}

// Defaults of Options.
const (
	DefaultSnapshots = 3
	DefaultEvents    = 10
	// maxColdStarts bounds the cold starts listed per pool.
	maxColdStarts = 3
)

// NotInstalledError says the cluster has no trace of warmpool in the namespace asked about.
type NotInstalledError struct {
	Namespace, ConfigMap string
}

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("warmpool is not installed here: no ConfigMap %s/%s and no NodePool labelled %s=%s (is --namespace right? the chart installs into its release namespace)",
		e.Namespace, e.ConfigMap, nodepools.LabelManagedBy, nodepools.ManagedBy)
}

// PoolNotFoundError says the pool asked for is neither in the config nor a NodePool warmpool made.
type PoolNotFoundError struct {
	Pool  string
	Known []string
}

func (e *PoolNotFoundError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("pool %q not found: warmpool has no pools", e.Pool)
	}
	return fmt.Sprintf("pool %q not found: the pools are %s", e.Pool, strings.Join(e.Known, ", "))
}

// Event reasons of a node's save and restore (controller/cache), by what they say.
var (
	saveReasons = map[string]string{
		cachectrl.ReasonSaved:        "saved",
		cachectrl.ReasonUnclean:      "unclean",
		cachectrl.ReasonSaveFailed:   "failed",
		cachectrl.ReasonSaveTimedOut: "timeout",
		cachectrl.ReasonLost:         "lost",
	}
	restoreReasons = map[string]string{
		cachectrl.ReasonRestored:          volumes.ResultWarm,
		cachectrl.ReasonRestoreUnverified: "unverified",
		cachectrl.ReasonColdStart:         "cold",
	}
	// cacheReasons are every Event reason the cache controllers put on nodes: such an Event on
	// a node that is gone still belongs to some pool's story.
	cacheReasons = map[string]bool{
		cachectrl.ReasonGuarded: true, cachectrl.ReasonEngineStopped: true, cachectrl.ReasonAwaitingRunners: true,
		cachectrl.ReasonRunnersOutlived: true, cachectrl.ReasonSaveBaseLost: true, cachectrl.ReasonSnapshotFailed: true,
		cachectrl.ReasonRestoreCopied: true, cachectrl.ReasonQuarantined: true,
		cachectrl.ReasonGuardFailed: true, cachectrl.ReasonSaveVolumeResized: true,
	}
)

func init() {
	for r := range saveReasons {
		cacheReasons[r] = true
	}
	for r := range restoreReasons {
		cacheReasons[r] = true
	}
}

// coldStartPrefix starts the ColdStart Event's message (controller/cache restore.go and
// verify.go); the reason follows in parentheses.
const coldStartPrefix = "engine starts without a restored cache ("

// gatherer holds one Gather's reads.
type gatherer struct {
	ctx  context.Context
	r    client.Reader
	opts Options
	rep  *Report
}

// Gather reads everything the report needs. A read the caller is not allowed (Forbidden), or of
// a kind the cluster does not serve, is recorded in Report.Unknown and the rest is read on; any
// other error (no cluster, bad credentials) ends it. It returns a *NotInstalledError when
// nothing of warmpool is there, and a *PoolNotFoundError for an unknown opts.Pool.
func Gather(ctx context.Context, r client.Reader, opts Options) (*Report, error) {
	if opts.Snapshots <= 0 {
		opts.Snapshots = DefaultSnapshots
	}
	if opts.Events <= 0 {
		opts.Events = DefaultEvents
	}
	g := &gatherer{ctx: ctx, r: r, opts: opts, rep: &Report{
		GatheredAt: opts.Now.UTC().Truncate(time.Second),
		Namespace:  opts.Namespace,
		Config:     Config{ConfigMap: opts.Namespace + "/" + opts.ConfigMap},
		Metrics:    opts.MetricsSource,
	}}
	return g.gather()
}

// read classifies a read's error: nil (ok), one that makes what it read unknown (reported,
// gathering goes on), or one that ends the report.
func (g *gatherer) read(what, namespace string, err error) (ok bool, fatal error) {
	if err == nil {
		return true, nil
	}
	var reason string
	switch {
	case apierrors.IsForbidden(err):
		reason = "forbidden: " + err.Error()
	case meta.IsNoMatchError(err):
		reason = "not served by this cluster (is its CRD installed?)"
	case apierrors.IsNotFound(err):
		// A List of a resource the server does not serve.
		reason = "not served by this cluster: " + err.Error()
	default:
		return false, fmt.Errorf("reading %s, %w", plural(what), err)
	}
	g.unknown(what, namespace, reason)
	return false, nil
}

func (g *gatherer) unknown(what, namespace, reason string) {
	for _, u := range g.rep.Unknown {
		if u.What == what && u.Namespace == namespace {
			return
		}
	}
	g.rep.Unknown = append(g.rep.Unknown, Unknown{What: what, Namespace: namespace, Reason: reason})
}

func plural(kind string) string { return strings.ToLower(kind) + "s" }

// reads is what the cluster gave, kind by kind; a nil slice with its ok flag false is unknown.
type reads struct {
	cfg        *config.Config
	nodePools  map[string]*karpv1.NodePool
	npOK       bool
	nodes      []corev1.Node
	nodesOK    bool
	claims     []karpv1.NodeClaim
	claimsOK   bool
	snaps      []snapshotv1.VolumeSnapshot
	snapsOK    bool
	events     []corev1.Event
	eventsOK   bool
	nodeEvents []corev1.Event
}

func (g *gatherer) gather() (*Report, error) {
	rd := &reads{nodePools: map[string]*karpv1.NodePool{}}
	ns := g.opts.Namespace

	cm := &corev1.ConfigMap{}
	err := g.r.Get(g.ctx, types.NamespacedName{Namespace: ns, Name: g.opts.ConfigMap}, cm)
	cmOK := true
	switch {
	case err == nil:
		g.rep.Config.Found = true
		rd.cfg, err = config.Parse([]byte(cm.Data[config.ConfigMapKey]))
		if err != nil {
			g.rep.Config.Error = strings.Join(configLines(err), "; ")
		}
	case apierrors.IsNotFound(err):
	default:
		if cmOK, err = g.read("ConfigMap", ns, err); err != nil {
			return nil, err
		}
	}

	npList := &karpv1.NodePoolList{}
	err = g.r.List(g.ctx, npList, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy})
	if rd.npOK, err = g.read("NodePool", "", err); err != nil {
		return nil, err
	}
	for i := range npList.Items {
		np := &npList.Items[i]
		if pool := np.Labels[nodepools.LabelPool]; pool != "" {
			rd.nodePools[pool] = np
		}
	}

	if g.opts.Metrics != nil && !g.opts.Metrics.Leading() && hasSources(rd.cfg) {
		// Only the leader polls queue sources: a standby's (or a just-started leader's)
		// endpoint has no readings, which is not the same as a queue of zero.
		g.unknown("metrics", "", fmt.Sprintf("%s has no queue source readings: it is not the leader's endpoint, or its sources have not started", g.opts.MetricsSource))
		g.opts.Metrics = nil
	}

	// The pools: the config's, in its order, then NodePools warmpool left behind.
	var names []string
	inConfig := map[string]*config.Pool{}
	if rd.cfg != nil {
		for i := range rd.cfg.Pools {
			p := &rd.cfg.Pools[i]
			names = append(names, p.Name)
			inConfig[p.Name] = p
		}
	}
	var extra []string
	for name := range rd.nodePools {
		if inConfig[name] == nil {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	names = append(names, extra...)
	if !g.rep.Config.Found && len(rd.nodePools) == 0 && cmOK && rd.npOK {
		return nil, &NotInstalledError{Namespace: ns, ConfigMap: g.opts.ConfigMap}
	}
	if g.opts.Pool != "" {
		if !slices.Contains(names, g.opts.Pool) {
			if len(g.rep.Unknown) > 0 {
				// What could not be read may hold it: report what is known, not "not found".
				names = []string{g.opts.Pool}
			} else {
				return nil, &PoolNotFoundError{Pool: g.opts.Pool, Known: names}
			}
		} else {
			names = []string{g.opts.Pool}
		}
	}

	poolSelector := labels.NewSelector()
	if req, err := labels.NewRequirement(nodepools.LabelPool, selection.Exists, nil); err == nil {
		poolSelector = poolSelector.Add(*req)
	}
	nodeList := &corev1.NodeList{}
	err = g.r.List(g.ctx, nodeList, client.MatchingLabelsSelector{Selector: poolSelector})
	if rd.nodesOK, err = g.read("Node", "", err); err != nil {
		return nil, err
	}
	rd.nodes = nodeList.Items
	claimList := &karpv1.NodeClaimList{}
	err = g.r.List(g.ctx, claimList, client.MatchingLabelsSelector{Selector: poolSelector})
	if rd.claimsOK, err = g.read("NodeClaim", "", err); err != nil {
		return nil, err
	}
	rd.claims = claimList.Items
	snapList := &snapshotv1.VolumeSnapshotList{}
	err = g.r.List(g.ctx, snapList, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: poolSelector})
	if rd.snapsOK, err = g.read("VolumeSnapshot", ns, err); err != nil {
		return nil, err
	}
	rd.snaps = snapList.Items
	if err := g.readEvents(rd); err != nil {
		return nil, err
	}

	attributed := g.attributeNodes(rd)
	for _, name := range names {
		p, err := g.pool(rd, name, inConfig[name], attributed)
		if err != nil {
			return nil, err
		}
		g.rep.Pools = append(g.rep.Pools, p)
	}
	if g.opts.Pool == "" {
		for _, e := range rd.nodeEvents {
			if cacheReasons[e.Reason] && attributed[e.InvolvedObject.Name] == "" {
				g.rep.UnattributedEvents = append(g.rep.UnattributedEvents, event(e))
			}
		}
		sortEvents(g.rep.UnattributedEvents)
		g.rep.UnattributedEvents = first(g.rep.UnattributedEvents, g.opts.Events)
	}
	return g.rep, nil
}

// readEvents lists the Events of warmpool's namespace and those of the cluster-scoped kinds a
// pool is made of, which Kubernetes records in the default namespace.
func (g *gatherer) readEvents(rd *reads) error {
	rd.eventsOK = true
	list := &corev1.EventList{}
	err := g.r.List(g.ctx, list, client.InNamespace(g.opts.Namespace))
	ok, err := g.read("Event", g.opts.Namespace, err)
	if err != nil {
		return err
	}
	rd.eventsOK = rd.eventsOK && ok
	rd.events = append(rd.events, list.Items...)
	for _, kind := range []string{"NodePool", "NodeClaim", "Node"} {
		list := &corev1.EventList{}
		err := g.r.List(g.ctx, list, client.InNamespace(metav1.NamespaceDefault), client.MatchingFields{"involvedObject.kind": kind})
		ok, err := g.read("Event", metav1.NamespaceDefault, err)
		if err != nil {
			return err
		}
		rd.eventsOK = rd.eventsOK && ok
		rd.events = append(rd.events, list.Items...)
		if kind == "Node" {
			rd.nodeEvents = list.Items
		}
	}
	return nil
}

// attributeNodes maps node names to their pool: a node's label, a NodeClaim's, a snapshot's
// source node. A node that is gone is named by nothing else; when the config has exactly one
// cache-enabled pool, every cache Event of a gone node is that pool's, since only its nodes get
// them.
func (g *gatherer) attributeNodes(rd *reads) map[string]string {
	out := map[string]string{}
	for _, s := range rd.snaps {
		if n := s.Labels[volumes.LabelSourceNode]; n != "" {
			out[n] = s.Labels[volumes.LabelPool]
		}
	}
	for _, c := range rd.claims {
		if c.Status.NodeName != "" {
			out[c.Status.NodeName] = c.Labels[nodepools.LabelPool]
		}
	}
	for _, n := range rd.nodes {
		out[n.Name] = n.Labels[nodepools.LabelPool]
	}
	if rd.cfg != nil {
		var cached []string
		for _, p := range rd.cfg.Pools {
			if p.Cache.Enabled {
				cached = append(cached, p.Name)
			}
		}
		if len(cached) == 1 {
			for _, e := range rd.nodeEvents {
				if cacheReasons[e.Reason] && out[e.InvolvedObject.Name] == "" {
					out[e.InvolvedObject.Name] = cached[0]
				}
			}
		}
	}
	return out
}

func (g *gatherer) pool(rd *reads, name string, cp *config.Pool, attributed map[string]string) (Pool, error) {
	p := Pool{Name: name, InConfig: cp != nil}
	unknown := func(section string) {
		if !slices.Contains(p.Unknown, section) {
			p.Unknown = append(p.Unknown, section)
		}
	}
	if !rd.npOK {
		unknown("nodePool")
	}
	if np := rd.nodePools[name]; np != nil {
		out, err := g.nodePool(np)
		if err != nil {
			return p, err
		}
		p.NodePool = out
	}

	// Nodes.
	if !rd.nodesOK {
		unknown("nodes")
	}
	var poolNodes []*corev1.Node
	for i := range rd.nodes {
		n := &rd.nodes[i]
		if n.Labels[nodepools.LabelPool] != name {
			continue
		}
		poolNodes = append(poolNodes, n)
		p.Nodes.Current++
		p.Nodes.Names = append(p.Nodes.Names, n.Name)
		if n.DeletionTimestamp != nil {
			p.Nodes.Deleting++
		}
		if nodeReady(n) {
			p.Nodes.Ready++
		}
	}
	slices.Sort(p.Nodes.Names)
	if !rd.claimsOK {
		unknown("nodeClaims")
	}
	for _, c := range rd.claims {
		if c.Labels[nodepools.LabelPool] == name && c.Status.NodeName == "" && c.DeletionTimestamp == nil {
			p.Nodes.Launching++
		}
	}

	// Scaling state and spare nodes, from the headroom object.
	if err := g.scaling(&p, cp); err != nil {
		return p, err
	}

	// Queue sources.
	if cp != nil {
		for _, s := range cp.Queue.Sources {
			src := Source{Name: s.Name, Kind: sourceKind(&s)}
			if g.opts.Metrics != nil {
				g.opts.Metrics.source(name, &src)
			}
			p.Sources = append(p.Sources, src)
		}
		if len(p.Sources) > 0 && g.opts.Metrics == nil {
			unknown("sources")
		}
	}

	// Snapshots.
	p.Cache.Enabled = cp != nil && cp.Cache.Enabled
	if !rd.snapsOK {
		unknown("snapshots")
	}
	var snaps []Snapshot
	for i := range rd.snaps {
		if rd.snaps[i].Labels[volumes.LabelPool] == name {
			snaps = append(snaps, snapshot(&rd.snaps[i]))
		}
	}
	SortSnapshots(snaps)
	p.Cache.Total = len(snaps)
	p.Cache.Snapshots = first(snaps, g.opts.Snapshots)

	// Outcomes and Events.
	if !rd.eventsOK {
		unknown("events")
	}
	g.outcomes(&p, rd, poolNodes, snaps, attributed)
	p.Events = first(g.poolEvents(rd, name, attributed), g.opts.Events)
	return p, nil
}

func (g *gatherer) nodePool(np *karpv1.NodePool) (*NodePool, error) {
	out := &NodePool{
		Name:          np.Name,
		Busy:          np.Annotations[scaling.AnnotationBusy],
		Consolidation: string(np.Spec.Disruption.ConsolidationPolicy),
	}
	if np.Spec.Disruption.ConsolidateAfter.Duration != nil {
		out.Consolidation += " after " + np.Spec.Disruption.ConsolidateAfter.String()
	}
	if q, ok := np.Spec.Limits["nodes"]; ok {
		out.LimitNodes = q.String()
	}
	for _, b := range np.Spec.Disruption.Budgets {
		budget := Budget{Nodes: b.Nodes}
		for _, r := range b.Reasons {
			budget.Reasons = append(budget.Reasons, string(r))
		}
		if b.Schedule != nil {
			budget.Schedule = *b.Schedule
		}
		if b.Duration != nil {
			budget.Duration = b.Duration.Duration.String()
		}
		out.Budgets = append(out.Budgets, budget)
	}
	ref := np.Spec.Template.Spec.NodeClassRef
	if ref == nil {
		return out, nil
	}
	out.NodeClass = ref.Kind + "/" + ref.Name
	gvk := map[string]schema.GroupVersionKind{
		"EC2NodeClass":  nodepools.EC2NodeClassGV.WithKind("EC2NodeClass"),
		"KWOKNodeClass": nodepools.KWOKNodeClassGV.WithKind("KWOKNodeClass"),
	}[ref.Kind]
	if gvk.Kind == "" || gvk.Group != ref.Group {
		return out, nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := g.r.Get(g.ctx, types.NamespacedName{Name: ref.Name}, u)
	if apierrors.IsNotFound(err) {
		return out, nil
	}
	if ok, err := g.read(ref.Kind, "", err); err != nil || !ok {
		return out, err
	}
	out.NodeClassFound = true
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			out.NodeClassReady, _ = m["status"].(string)
		}
	}
	return out, nil
}

// scaling reads the pool's headroom object as the scaling controller does when it resumes
// (controller/scaling resume.go): the configured actuator's object first, then the other.
func (g *gatherer) scaling(p *Pool, cp *config.Pool) error {
	readers := []func(string) (bool, error){g.headroomDeployment(p), g.headroomBuffer(p, cp)}
	if cp != nil && cp.Scaling.Headroom == config.HeadroomCapacityBuffer {
		readers[0], readers[1] = readers[1], readers[0]
	}
	for _, read := range readers {
		found, err := read(p.Name)
		if err != nil || found {
			return err
		}
	}
	return nil
}

func (g *gatherer) headroomDeployment(p *Pool) func(string) (bool, error) {
	return func(pool string) (bool, error) {
		d := &appsv1.Deployment{}
		key := types.NamespacedName{Namespace: g.opts.Namespace, Name: nodepools.HeadroomName(pool)}
		err := g.r.Get(g.ctx, key, d)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if ok, err := g.read("Deployment", g.opts.Namespace, err); err != nil || !ok {
			if err == nil {
				p.Unknown = append(p.Unknown, "scaling")
			}
			return false, err
		}
		if d.DeletionTimestamp != nil {
			return false, nil
		}
		var replicas *int
		if d.Spec.Replicas != nil {
			r := int(*d.Spec.Replicas)
			replicas = &r
		}
		g.recorded(p, "Deployment "+key.String(), d.Annotations[scaling.AnnotationState], replicas)
		return true, nil
	}
}

func (g *gatherer) headroomBuffer(p *Pool, cp *config.Pool) func(string) (bool, error) {
	return func(pool string) (bool, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(nodepools.CapacityBufferGV.WithKind("CapacityBuffer"))
		key := types.NamespacedName{Namespace: g.opts.Namespace, Name: nodepools.HeadroomName(pool)}
		err := g.r.Get(g.ctx, key, u)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if meta.IsNoMatchError(err) && (cp == nil || cp.Scaling.Headroom != config.HeadroomCapacityBuffer) {
			// A cluster without the CapacityBuffer CRD, for a pool that does not use it.
			return false, nil
		}
		if ok, err := g.read("CapacityBuffer", g.opts.Namespace, err); err != nil || !ok {
			if err == nil && !slices.Contains(p.Unknown, "scaling") {
				p.Unknown = append(p.Unknown, "scaling")
			}
			return false, err
		}
		if u.GetDeletionTimestamp() != nil {
			return false, nil
		}
		var replicas *int
		if r, found, err := unstructured.NestedInt64(u.Object, "spec", "replicas"); err == nil && found {
			v := int(r)
			replicas = &v
		}
		g.recorded(p, "CapacityBuffer "+key.String(), u.GetAnnotations()[scaling.AnnotationState], replicas)
		return true, nil
	}
}

// recorded fills the pool's scaling state from its headroom object.
func (g *gatherer) recorded(p *Pool, object, state string, replicas *int) {
	p.Scaling.Headroom = object
	p.Scaling.Spare = replicas
	if state == "" {
		p.Scaling.StateError = fmt.Sprintf("%s records no %s (written by a controller before states were recorded)", object, scaling.AnnotationState)
		return
	}
	var s policy.State
	if err := json.Unmarshal([]byte(state), &s); err != nil {
		p.Scaling.StateError = fmt.Sprintf("reading %s of %s, %v", scaling.AnnotationState, object, err)
		return
	}
	d := s.Desired
	p.Scaling.Desired = &d
	if !s.LastEvaluation.IsZero() {
		at := s.LastEvaluation.UTC()
		p.Scaling.RecordedAt = &at
	}
}

// outcomes finds the pool's last save, last restore and cold starts: on the nodes that are
// still there (annotations), and in the Events of every node of the pool.
func (g *gatherer) outcomes(p *Pool, rd *reads, poolNodes []*corev1.Node, snaps []Snapshot, attributed map[string]string) {
	savedTo := func(node string) string {
		for _, s := range snaps { // newest first
			if s.SourceNode == volumes.LabelValue(node) {
				return s.Name
			}
		}
		return ""
	}
	var saves []Outcome
	restores := map[string]*Outcome{}
	for _, n := range poolNodes {
		if o := n.Annotations[cachectrl.AnnotationSaveOutcome]; o != "" {
			saves = append(saves, Outcome{Node: n.Name, Result: o, Snapshot: savedTo(n.Name)})
		}
		if v := n.Annotations[cachectrl.AnnotationRestore]; v != "" {
			at, _ := time.Parse(time.RFC3339, n.Annotations[cachectrl.AnnotationRestoreReleased])
			restores[n.Name] = &Outcome{Node: n.Name, Result: v, Snapshot: n.Annotations[cachectrl.AnnotationRestoreSnapshot], At: at}
		}
	}
	for _, e := range rd.nodeEvents {
		node := e.InvolvedObject.Name
		if attributed[node] != p.Name {
			continue
		}
		at := eventTime(&e)
		if result, ok := saveReasons[e.Reason]; ok {
			o := Outcome{Node: node, Result: result, At: at, Reason: e.Reason, Message: e.Message}
			if result == "saved" {
				o.Snapshot = savedTo(node)
			}
			// The Event replaces the annotation-only outcome of the same node.
			saves = slices.DeleteFunc(saves, func(s Outcome) bool { return s.Node == node && s.Reason == "" })
			saves = append(saves, o)
		}
		result, ok := restoreReasons[e.Reason]
		if !ok {
			continue
		}
		if e.Reason == cachectrl.ReasonColdStart {
			why := coldReason(e.Message)
			p.Cache.ColdStarts = append(p.Cache.ColdStarts, Outcome{Node: node, Result: why, At: at, Reason: e.Reason, Message: e.Message})
			if why == cachectrl.ColdWiped {
				result = volumes.ResultWiped
			}
		}
		o := restores[node]
		if o == nil {
			o = &Outcome{Node: node, Result: result}
			restores[node] = o
		}
		// The node's annotation is the verdict of record; the Event says it in words.
		if o.Reason == "" || at.After(o.At) {
			o.Reason, o.Message = e.Reason, e.Message
		}
		if at.After(o.At) {
			o.At = at
		}
	}
	sort.SliceStable(saves, func(i, j int) bool { return saves[i].At.After(saves[j].At) })
	if len(saves) > 0 {
		p.Cache.LastSave = &saves[0]
	}
	var rs []Outcome
	for _, o := range restores {
		rs = append(rs, *o)
	}
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].At.Equal(rs[j].At) {
			return rs[i].At.After(rs[j].At)
		}
		return rs[i].Node < rs[j].Node
	})
	if len(rs) > 0 {
		p.Cache.LastRestore = &rs[0]
	}
	sort.SliceStable(p.Cache.ColdStarts, func(i, j int) bool { return p.Cache.ColdStarts[i].At.After(p.Cache.ColdStarts[j].At) })
	p.Cache.ColdStarts = first(p.Cache.ColdStarts, maxColdStarts)
}

// coldReason reads the cold-start reason from a ColdStart Event's message ("cold" when the
// message is not in the controller's form).
func coldReason(msg string) string {
	rest, ok := strings.CutPrefix(msg, coldStartPrefix)
	if !ok {
		return "cold"
	}
	why, _, ok := strings.Cut(rest, ")")
	if !ok || why == "" {
		return "cold"
	}
	return why
}

// poolEvents are the Events about the pool's objects, newest first.
func (g *gatherer) poolEvents(rd *reads, pool string, attributed map[string]string) []Event {
	snaps := map[string]bool{}
	for _, s := range rd.snaps {
		if s.Labels[volumes.LabelPool] == pool {
			snaps[s.Name] = true
		}
	}
	claims := map[string]bool{}
	for _, c := range rd.claims {
		if c.Labels[nodepools.LabelPool] == pool {
			claims[c.Name] = true
		}
	}
	var out []Event
	for i := range rd.events {
		e := &rd.events[i]
		o := e.InvolvedObject
		var mine bool
		switch o.Kind {
		case "NodePool":
			mine = o.Name == nodepools.Name(pool)
		case "Node":
			mine = attributed[o.Name] == pool
		case "NodeClaim":
			mine = claims[o.Name]
		case "VolumeSnapshot":
			mine = o.Namespace == g.opts.Namespace && snaps[o.Name]
		case "Deployment", "CapacityBuffer":
			mine = o.Namespace == g.opts.Namespace && o.Name == nodepools.HeadroomName(pool)
		}
		if mine && (g.opts.AllEvents || fromWarmpool(e) || e.Type == corev1.EventTypeWarning) {
			out = append(out, event(*e))
		}
	}
	sortEvents(out)
	return out
}

// eventComponent is the component warmpool records its Events as (the manager's recorder).
const eventComponent = "warmpool"

func fromWarmpool(e *corev1.Event) bool {
	return e.Source.Component == eventComponent || e.ReportingController == eventComponent
}

func event(e corev1.Event) Event {
	count := e.Count
	if e.Series != nil {
		count = e.Series.Count
	}
	return Event{
		Type: e.Type, Reason: e.Reason, Object: e.InvolvedObject.Kind + "/" + e.InvolvedObject.Name,
		Message: e.Message, Count: count, Last: eventTime(&e).UTC(),
	}
}

// eventTime is when an Event last happened: the core API's lastTimestamp, else the events.k8s.io
// series or eventTime, else when it was created.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func sortEvents(es []Event) {
	sort.SliceStable(es, func(i, j int) bool {
		if !es[i].Last.Equal(es[j].Last) {
			return es[i].Last.After(es[j].Last)
		}
		if es[i].Object != es[j].Object {
			return es[i].Object < es[j].Object
		}
		return es[i].Reason < es[j].Reason
	})
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func hasSources(cfg *config.Config) bool {
	if cfg == nil {
		return false
	}
	for _, p := range cfg.Pools {
		if len(p.Queue.Sources) > 0 {
			return true
		}
	}
	return false
}

// sourceKind names the kind of a queue source as the config spells it.
func sourceKind(s *config.Source) string {
	switch {
	case s.GitHubWebhook != nil:
		return "githubWebhook"
	case s.GitHub != nil:
		return "github"
	case s.ARC != nil:
		return "arc"
	case s.GitLab != nil:
		return "gitlab"
	case s.Buildkite != nil:
		return "buildkite"
	case s.Prometheus != nil:
		return "prometheus"
	}
	return ""
}

func configLines(err error) []string {
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		return cfgErr.Lines()
	}
	return []string{err.Error()}
}

// snapshot describes one VolumeSnapshot.
func snapshot(s *snapshotv1.VolumeSnapshot) Snapshot {
	key := volumes.KeyOf(s)
	out := Snapshot{
		Name: s.Name, Pool: key.Pool, Arch: key.Arch, EngineVersion: key.EngineVersion,
		Created:          volumes.Created(s).UTC(),
		Ready:            volumes.Ready(s),
		Good:             volumes.Good(s),
		Quarantined:      volumes.Quarantined(s),
		QuarantineReason: s.Annotations[volumes.AnnotationQuarantineReason],
		Failed:           s.Annotations[volumes.AnnotationSnapshotFailed],
		Deleting:         s.DeletionTimestamp != nil,
		Base:             s.Annotations[volumes.AnnotationBaseSnapshot],
		SourceNode:       s.Labels[volumes.LabelSourceNode],
	}
	if _, failed := s.Annotations[volumes.AnnotationSnapshotFailed]; failed && out.Failed == "" {
		out.Failed = "failed"
	}
	if b, err := strconv.ParseInt(s.Annotations[volumes.AnnotationBytes], 10, 64); err == nil {
		out.Bytes = &b
	}
	if st := s.Status; st != nil {
		if st.RestoreSize != nil {
			out.RestoreSize = st.RestoreSize.String()
		}
		if st.Error != nil && st.Error.Message != nil {
			out.Error = *st.Error.Message
		}
	}
	return out
}

// SortSnapshots orders newest first, by name on a tie, as the controller chooses.
func SortSnapshots(s []Snapshot) {
	sort.SliceStable(s, func(i, j int) bool {
		if !s[i].Created.Equal(s[j].Created) {
			return s[i].Created.After(s[j].Created)
		}
		return s[i].Name > s[j].Name
	})
}
