package status

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	// The annotation keys and Event reasons are the controllers' own constants, imported so
	// that status can never disagree with what the controllers write. They live in the
	// reconciler packages today (controller/enginecache, controller/scaling).
	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
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

// Event reasons of a node's save and restore (controller/enginecache), by what they say.
var (
	saveReasons = map[string]string{
		enginecache.ReasonSaved:        "saved",
		enginecache.ReasonUnclean:      "unclean",
		enginecache.ReasonSaveFailed:   "failed",
		enginecache.ReasonSaveTimedOut: "timeout",
		enginecache.ReasonLost:         "lost",
	}
	restoreReasons = map[string]string{
		enginecache.ReasonRestored:          volumes.ResultWarm,
		enginecache.ReasonRestoreUnverified: "unverified",
		enginecache.ReasonColdStart:         "cold",
	}
	// cacheReasons are every Event reason the cache controllers put on nodes: such an Event on
	// a node that is gone still belongs to some pool's story.
	cacheReasons = map[string]bool{
		enginecache.ReasonGuarded: true, enginecache.ReasonEngineStopped: true, enginecache.ReasonAwaitingRunners: true,
		enginecache.ReasonRunnersOutlived: true, enginecache.ReasonSaveBaseLost: true, enginecache.ReasonSnapshotFailed: true,
		enginecache.ReasonRestoreCopied: true, enginecache.ReasonQuarantined: true,
		enginecache.ReasonGuardFailed: true, enginecache.ReasonSaveVolumeResized: true,
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

// coldStartPrefix starts the ColdStart Event's message (controller/enginecache restore.go and
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
