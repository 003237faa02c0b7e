package enginecache

import (
	"context"
	"errors"
	"fmt"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"warmpool.io/warmpool/controller/counted"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// gcRequest is the GC controller's one request: retention and orphans are judged over all pools
// at once, from one listing.
const gcRequest = "cache-gc"

// GCController applies each cache-enabled pool's snapshot retention and deletes the guard pods,
// Jobs and PVCs that nodes which no longer exist left behind.
type GCController struct {
	base
	kick chan event.GenericEvent
	// newEC2 builds the fast snapshot restore client, kept while region and endpoint stay.
	newEC2 EC2Client
	ec2    FastRestorer
	ec2Key string
}

func newGCController(b base, newEC2 EC2Client) *GCController {
	if newEC2 == nil {
		newEC2 = realEC2
	}
	return &GCController{base: b, kick: make(chan event.GenericEvent, 1), newEC2: newEC2}
}

func (c *GCController) enqueue() {
	select {
	case c.kick <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: gcRequest}}}:
	default: // one is pending already
	}
}

// Reconcile prunes snapshots, then orphans; a failure of either is an Event on the ConfigMap.
func (c *GCController) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	if c.current() == nil {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	// Uploads first: a snapshot found failed is no longer good for the retention that follows.
	err := errors.Join(c.watchUploads(ctx), c.retain(ctx), c.fastRestore(ctx), c.sweep(ctx))
	if err != nil {
		cm := &corev1.ConfigMap{}
		if gerr := c.kube.Get(ctx, c.opts.ConfigMap, cm); gerr != nil {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.opts.ConfigMap.Namespace, Name: c.opts.ConfigMap.Name}}
		}
		c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonGCFailed, msgGCFailed, err)
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: c.opts.GCInterval}, nil
}

// retain deletes the snapshots each cache-enabled pool's retention drops, and sets the snapshot
// gauge from what remains. Snapshots of pools without the cache enabled are left alone: a pool
// that comes back finds its cache.
func (c *GCController) retain(ctx context.Context) error {
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := c.kube.List(ctx, snaps, client.InNamespace(c.namespace()), client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
		return fmt.Errorf("listing snapshots, %w", err)
	}
	// A snapshot a restore or save volume is made from stays: deleting it under a volume that
	// is still being provisioned leaves that PVC Pending for good. The list is read from the API
	// server, not the cache: a save volume created a moment ago must be seen.
	inUse := map[string]bool{}
	for _, op := range []string{volumes.OpRestore, volumes.OpSave} {
		pvcs := &corev1.PersistentVolumeClaimList{}
		if err := c.live.List(ctx, pvcs, client.InNamespace(c.namespace()), client.MatchingLabelsSelector{Selector: opSelector(op)}); err != nil {
			return fmt.Errorf("listing %s volumes, %w", op, err)
		}
		for i := range pvcs.Items {
			// A PVC being deleted is provisioned no more: its source is free.
			if name := volumes.SnapshotSourceOf(&pvcs.Items[i]); name != "" && pvcs.Items[i].DeletionTimestamp == nil {
				inUse[name] = true
			}
		}
	}
	// A snapshot whose failure is not reported yet carries its report: it stays until then.
	for _, s := range snaps.Items {
		if _, pending := s.Annotations[annotationSnapshotReport]; pending {
			inUse[s.Name] = true
		}
	}
	byPool := map[string][]snapshotv1.VolumeSnapshot{}
	for _, s := range snaps.Items {
		byPool[s.Labels[volumes.LabelPool]] = append(byPool[s.Labels[volumes.LabelPool]], s)
	}
	now := c.clk.Now()
	var prunes []volumes.Prune
	var errs []error
	for pool, list := range byPool {
		p := c.cachePool(pool)
		if p == nil {
			continue
		}
		r := volumes.Retention{Keep: p.Cache.Retention.Keep, MaxAge: p.Cache.Retention.MaxAge.Duration, NotReadyMaxAge: c.opts.NotReadyMaxAge}
		for _, pr := range volumes.PlanRetention(list, r, inUse, now) {
			for i := range list {
				if list[i].Name != pr.Name {
					continue
				}
				if err := c.remove(ctx, &list[i]); err != nil {
					errs = append(errs, err)
					break
				}
				prunes = append(prunes, pr)
				c.recorder.Eventf(&list[i], corev1.EventTypeNormal, ReasonPruned, msgPruned,
					pr.Key.Pool, pr.Key.Arch, pr.Key.EngineVersion, pr.Reason, r.Keep, r.MaxAge)
				log.FromContext(ctx).Info("pruned cache snapshot", "snapshot", pr.Name, "reason", pr.Reason)
			}
		}
	}
	snapshotsGauge.Reset()
	for key, n := range volumes.ReadyCounts(snaps.Items, prunes) {
		snapshotsGauge.WithLabelValues(key.Pool, key.Arch, key.EngineVersion).Set(float64(n))
	}
	return errors.Join(errs...)
}

// watchUploads reports the snapshots that failed after their cut. The save released their node
// at the cut, so nothing else looks at them: a snapshot whose snapshotter reports an error, or
// that is not ready SnapshotReadyTimeout after its cut, is marked failed (the mark is the state:
// it is judged once, by whichever controller process sees it first, and never restored), then
// reported with a CacheSnapshotFailed Event on the snapshot and on its source node if that still
// exists, and counted in warmpool_cache_lost_total{reason="snapshot-failed"}.
func (c *GCController) watchUploads(ctx context.Context) error {
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := c.kube.List(ctx, snaps, client.InNamespace(c.namespace()), client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
		return fmt.Errorf("listing snapshots, %w", err)
	}
	now := c.clk.Now()
	var errs []error
	for i := range snaps.Items {
		s := &snaps.Items[i]
		pool := s.Labels[volumes.LabelPool]
		if _, pending := s.Annotations[annotationSnapshotReport]; pending {
			// Marked failed by a controller that died before it reported it.
			if err := c.flushReport(ctx, s, annotationSnapshotReport); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if c.cachePool(pool) == nil {
			continue
		}
		reason := volumes.UploadFailure(s, now, c.opts.SnapshotReadyTimeout)
		if reason == "" {
			continue
		}
		r, err := c.snapshotFailedReport(ctx, s, reason)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The mark and its report in one patch: the mark is the decision (never restored, and
		// judged once), the report is delivered from it even by another process.
		patch := client.MergeFrom(s.DeepCopy())
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[volumes.AnnotationSnapshotFailed] = reason
		setReport(s.Annotations, annotationSnapshotReport, r)
		if err := c.kube.Patch(ctx, s, patch); err != nil {
			errs = append(errs, fmt.Errorf("marking snapshot %s failed, %w", s.Name, client.IgnoreNotFound(err)))
			continue
		}
		if err := c.flushReport(ctx, s, annotationSnapshotReport); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// snapshotFailedReport is what a snapshot failed after its cut tells: a loss of the cache of
// the node it was saved from, on the snapshot and, while it exists, on that node.
func (c *GCController) snapshotFailedReport(ctx context.Context, s *snapshotv1.VolumeSnapshot, reason string) (*report, error) {
	source := s.Labels[volumes.LabelSourceNode]
	r := &report{ID: "snapshot-failed/" + string(s.UID), Log: "cache snapshot failed after its cut",
		LogValues: []string{"snapshot", s.Name, "node", source, "reason", reason}}
	r.event(objectEvent(s, snapshotv1.SchemeGroupVersion.String(), "VolumeSnapshot", corev1.EventTypeWarning, ReasonSnapshotFailed,
		fmt.Sprintf(msgSnapshotFailedOnSnapshot, reason)))
	r.count("warmpool_cache_lost_total", s.Labels[volumes.LabelPool], lostSnapshotFailed)
	if source == "" {
		return r, nil
	}
	n, err := c.getNode(ctx, source, false)
	if err != nil {
		return nil, err
	}
	if n != nil {
		r.event(nodeEvent(n.Name, n.UID, corev1.EventTypeWarning, ReasonSnapshotFailed,
			fmt.Sprintf(msgSnapshotFailed, s.Namespace, s.Name, reason)))
	}
	return r, nil
}

// sweep deletes guard pods, cache Jobs (and their pods) and PVCs whose node is gone.
func (c *GCController) sweep(ctx context.Context) error {
	nodeList := &corev1.NodeList{}
	if err := c.kube.List(ctx, nodeList); err != nil {
		return fmt.Errorf("listing nodes, %w", err)
	}
	exists := make(map[string]bool, len(nodeList.Items))
	for _, n := range nodeList.Items {
		exists[n.Name] = true
	}
	pending, err := c.pendingSources(ctx)
	if err != nil {
		return err
	}
	objs := map[string]client.Object{}
	var leftovers []volumes.Leftover
	add := func(o client.Object, node string, busy bool) {
		key := fmt.Sprintf("%T/%s", o, o.GetName())
		objs[key] = o
		leftovers = append(leftovers, volumes.Leftover{Kind: fmt.Sprintf("%T", o), Name: key, Node: node, Created: o.GetCreationTimestamp().Time, Busy: busy})
	}
	for _, op := range []string{volumes.OpGuard, volumes.OpSave, volumes.OpRestore} {
		sel := client.MatchingLabelsSelector{Selector: opSelector(op)}
		pods := &corev1.PodList{}
		if err := c.kube.List(ctx, pods, client.InNamespace(c.namespace()), sel); err != nil {
			return fmt.Errorf("listing %s pods, %w", op, err)
		}
		for i := range pods.Items {
			add(&pods.Items[i], pods.Items[i].Spec.NodeName, false)
		}
		if op == volumes.OpGuard {
			continue
		}
		jobs := &batchv1.JobList{}
		if err := c.kube.List(ctx, jobs, client.InNamespace(c.namespace()), sel); err != nil {
			return fmt.Errorf("listing %s jobs, %w", op, err)
		}
		for i := range jobs.Items {
			add(&jobs.Items[i], nodeOf(&jobs.Items[i]), false)
		}
		pvcs := &corev1.PersistentVolumeClaimList{}
		if err := c.kube.List(ctx, pvcs, client.InNamespace(c.namespace()), sel); err != nil {
			return fmt.Errorf("listing %s volumes, %w", op, err)
		}
		for i := range pvcs.Items {
			add(&pvcs.Items[i], nodeOf(&pvcs.Items[i]), pending[pvcs.Items[i].Name])
		}
	}
	var errs []error
	for _, o := range volumes.Orphans(leftovers, func(n string) bool { return exists[n] }, c.clk.Now(), c.opts.OrphanGrace) {
		obj := objs[o.Name]
		if err := c.remove(ctx, obj); err != nil {
			errs = append(errs, err)
			continue
		}
		log.FromContext(ctx).Info("deleted cache object of a node that is gone", "kind", o.Kind, "name", obj.GetName(), "node", o.Node)
	}
	return errors.Join(errs...)
}

// pendingSources are the save PVCs that snapshots not yet ready are still being cut from.
func (c *GCController) pendingSources(ctx context.Context) (map[string]bool, error) {
	snaps := &snapshotv1.VolumeSnapshotList{}
	if err := c.kube.List(ctx, snaps, client.InNamespace(c.namespace()), client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
		return nil, fmt.Errorf("listing snapshots, %w", err)
	}
	out := map[string]bool{}
	for i := range snaps.Items {
		s := &snaps.Items[i]
		if !volumes.Ready(s) && s.DeletionTimestamp == nil && s.Spec.Source.PersistentVolumeClaimName != nil {
			out[*s.Spec.Source.PersistentVolumeClaimName] = true
		}
	}
	return out, nil
}

// Register wires the GC controller: it runs every GCInterval, when a config is applied, and when
// a snapshot or a Node changes.
func (c *GCController) Register(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: gcRequest}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("cache-gc").
		WatchesRawSource(source.Channel(c.kick, one)).
		Watches(&snapshotv1.VolumeSnapshot{}, one, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == c.namespace() && o.GetLabels()[nodepools.LabelManagedBy] == nodepools.ManagedBy
		}))).
		Watches(&corev1.Node{}, one, builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			DeleteFunc:  func(event.DeleteEvent) bool { return true },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Complete(counted.Reconciler("cache-gc", c))
}
