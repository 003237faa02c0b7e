package nodesim

import (
	"context"
	"fmt"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// register adds one controller per part played.
func (s *Sim) register(mgr ctrl.Manager) error {
	// An engine counts the client pods on its node at each scrape and while it stops.
	err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, podNodeIndex, func(o client.Object) []string {
		return []string{o.(*corev1.Pod).Spec.NodeName}
	})
	if err != nil {
		return fmt.Errorf("indexing pods by node: %w", err)
	}
	for _, part := range []struct {
		name    string
		obj     client.Object
		filter  func(client.Object) bool
		workers int
		r       reconcile.Reconciler
	}{
		{"nodesim-provisioner", &corev1.PersistentVolumeClaim{}, nil, 2, provisioner{s}},
		{"nodesim-reclaimer", &corev1.PersistentVolume{}, nil, 1, volumeReclaimer{s}},
		{"nodesim-snapshotter", &snapshotv1.VolumeSnapshot{}, nil, 2, snapshotter{s}},
		{"nodesim-csinode", &corev1.Node{}, nil, 2, csiNodeRegistrar{s}},
		{"nodesim-admission", &corev1.Pod{}, nil, 2, admission{s}},
		// Several workers: a save and a restore on different nodes run at once on real nodes too.
		{"nodesim-kubelet", &corev1.Pod{}, isCachePod, 4, kubelet{s}},
		{"nodesim-engine", &corev1.Pod{}, isEnginePod, 2, engineSim{s}},
	} {
		b := ctrl.NewControllerManagedBy(mgr).Named(part.name).
			WithOptions(controller.Options{MaxConcurrentReconciles: part.workers})
		if part.filter != nil {
			b = b.For(part.obj, builder.WithPredicates(predicate.NewPredicateFuncs(part.filter)))
		} else {
			b = b.For(part.obj)
		}
		if err := b.Complete(part.r); err != nil {
			return err
		}
	}
	return nil
}
