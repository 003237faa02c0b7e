package enginecache

import (
	"context"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// What wakes the save and restore controllers, and which node a change is about: the watches'
// predicates and maps (Register in save.go, restore.go) and the kick after a config change.

// kick asks a controller to look at every pool node; one pending kick is enough.
func kick(ch chan event.GenericEvent) {
	select {
	case ch <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{}}:
	default:
	}
}

// servedNodes maps a kick (a config put in force) to every node the cache controllers may
// have to act on: the nodes of pools with the cache on, nodes still carrying the restore's
// startup taint, and nodes any object of the protocol names (a save or restore in flight in a
// pool that just turned the cache off must be released). Nodes of other pools are not looked
// at: with the cache off there is nothing to do for them.
func (b *base) servedNodes(ctx context.Context, _ client.Object) []reconcile.Request {
	nodes := &corev1.NodeList{}
	if err := b.kube.List(ctx, nodes, client.HasLabels{volumes.LabelPool}); err != nil {
		log.FromContext(ctx).Error(err, "listing pool nodes")
		return nil
	}
	names := map[string]bool{}
	for i := range nodes.Items {
		if b.servesNode(&nodes.Items[i]) {
			names[nodes.Items[i].Name] = true
		}
	}
	inFlight := []client.ObjectList{&corev1.PodList{}, &batchv1.JobList{}, &corev1.PersistentVolumeClaimList{}}
	if !b.opts.NoSnapshotAPI {
		inFlight = append(inFlight, &snapshotv1.VolumeSnapshotList{})
	}
	for _, list := range inFlight {
		if err := b.kube.List(ctx, list, client.InNamespace(b.namespace()), client.HasLabels{volumes.LabelOp}); err != nil {
			log.FromContext(ctx).Error(err, "listing cache protocol objects")
			return nil
		}
		if err := meta.EachListItem(list, func(o runtime.Object) error {
			if obj, ok := o.(client.Object); ok && nodeOf(obj) != "" {
				names[nodeOf(obj)] = true
			}
			return nil
		}); err != nil {
			log.FromContext(ctx).Error(err, "reading cache protocol objects")
			return nil
		}
	}
	out := make([]reconcile.Request, 0, len(names))
	for n := range names {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: n}})
	}
	return out
}

// servesNode passes the Node events the save and restore controllers act on: nodes of pools
// with the cache on; nodes still carrying the restore's startup taint (their pool may have
// turned the cache off since: the restore controller releases them); and nodes going away,
// whatever their pool, as one of a pool that turned the cache off may still run a hold waiting
// for its save outcome (releaseWithdrawn). The rest, the nodes of pools without the cache in
// their ordinary life, wake nothing. Before a config is in force only nodes going away pass:
// putting the first one in force kicks every served node (servedNodes).
func (b *base) servesNode(o client.Object) bool {
	pool := o.GetLabels()[volumes.LabelPool]
	if pool == "" {
		return false
	}
	if b.cachePool(pool) != nil || o.GetDeletionTimestamp() != nil {
		return true
	}
	n, ok := o.(*corev1.Node)
	return ok && (hasTaint(n, nodepools.StartupTaintKey, nodepools.StartupTaint.Effect) ||
		hasTaint(n, karpv1.DisruptedTaintKey, karpv1.DisruptedNoScheduleTaint.Effect))
}

// servedCSINode maps a CSINode to its node (named alike) when servesNode passes that node.
func (b *base) servedCSINode(ctx context.Context, o client.Object) []reconcile.Request {
	n, err := b.getNode(ctx, o.GetName(), false)
	if err != nil || n == nil || !b.servesNode(n) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: n.Name}}}
}

// servesPool passes objects labelled with a pool that has the cache on: the engine pods of
// other pools change nothing the cache controllers do.
func (b *base) servesPool(o client.Object) bool {
	return b.cachePool(o.GetLabels()[volumes.LabelPool]) != nil
}

// servesNodeClaim passes the NodeClaims of NodePools of pools with the cache on, found as
// nodeClaimOf finds them: by Karpenter's NodePool label.
func (b *base) servesNodeClaim(o client.Object) bool {
	cfg := b.current()
	if cfg == nil {
		return false
	}
	np := o.GetLabels()[karpv1.NodePoolLabelKey]
	for i := range cfg.Pools {
		if p := &cfg.Pools[i]; p.Cache.Enabled && nodepools.Name(p.Name) == np {
			return true
		}
	}
	return false
}

// cachePool returns the pool of that name if it has the cache enabled.
func (b *base) cachePool(name string) *config.Pool {
	cfg := b.current()
	if cfg == nil || name == "" {
		return nil
	}
	for i := range cfg.Pools {
		if p := &cfg.Pools[i]; p.Name == name && p.Cache.Enabled {
			return p
		}
	}
	return nil
}

// nodeOf maps objects to the node they serve: pods by spec.nodeName, Jobs by their pod
// template's, PVCs by the selected-node annotation, anything else by the node label.
func nodeOf(o client.Object) string {
	switch o := o.(type) {
	case *corev1.Pod:
		return o.Spec.NodeName
	case *batchv1.Job:
		return o.Spec.Template.Spec.NodeName
	case *corev1.PersistentVolumeClaim:
		return o.Annotations[volumes.SelectedNodeAnnotation]
	case *corev1.Node:
		return o.Name
	case *karpv1.NodeClaim:
		return o.Status.NodeName
	}
	if n := o.GetLabels()[volumes.LabelSourceNode]; n != "" {
		return n
	}
	return o.GetLabels()[volumes.LabelNode]
}

func requestForNode(_ context.Context, o client.Object) []reconcile.Request {
	if n := nodeOf(o); n != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: n}}}
	}
	return nil
}
