package nodesim

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// DefaultCSIRegistrationDelay is how long after a node is Ready the driver's node plugin
	// registers by default, scaled to test sizes (on EKS: seconds to a minute).
	DefaultCSIRegistrationDelay = 2 * time.Second

	// AnnotationCSINodePlugin "absent" on a Node plays a CSI node plugin that never runs there
	// (the EBS CSI chart with node.tolerateAllTaints false, on a tainted runner node): its
	// CSINode never lists the driver, so no volume is provisioned for the node or mounted on it.
	AnnotationCSINodePlugin = "nodesim.warmpool.io/csi-node-plugin"

	// TopologyKey is the topology key the driver registers with (as the EBS CSI driver
	// registers topology.ebs.csi.aws.com/zone).
	TopologyKey = "topology.sim.warmpool.io/zone"
)

// csiNodeRegistrar plays the kubelet's CSINode object and the driver's node plugin
// registering on it: the kubelet creates the node's CSINode (owned by the Node, so the
// garbage collector removes it with the node) with no drivers, and the plugin adds Driver
// CSIRegistrationDelay after the node became Ready.
type csiNodeRegistrar struct{ *Sim }

func (r csiNodeRegistrar) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	node := &corev1.Node{}
	if err := r.client.Get(ctx, req.NamespacedName, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if node.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	var ready *corev1.NodeCondition
	for i := range node.Status.Conditions {
		if c := &node.Status.Conditions[i]; c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = c
		}
	}
	if ready == nil {
		return reconcile.Result{}, nil
	}
	csiNode := &storagev1.CSINode{}
	err := r.client.Get(ctx, client.ObjectKey{Name: node.Name}, csiNode)
	switch {
	case apierrors.IsNotFound(err):
		csiNode = &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{
			Name: node.Name,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}},
		}}
		if err := r.client.Create(ctx, csiNode); err != nil && !apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, fmt.Errorf("creating CSINode %s: %w", node.Name, err)
		}
		if err := r.client.Get(ctx, client.ObjectKey{Name: node.Name}, csiNode); err != nil {
			return reconcile.Result{}, err
		}
	case err != nil:
		return reconcile.Result{}, err
	}
	if hasDriver(csiNode) || node.Annotations[AnnotationCSINodePlugin] == "absent" {
		return reconcile.Result{}, nil
	}
	readyAt := ready.LastTransitionTime.Time
	if readyAt.IsZero() {
		readyAt = node.CreationTimestamp.Time
	}
	if wait := time.Until(readyAt.Add(r.csiDelay)); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	csiNode.Spec.Drivers = append(csiNode.Spec.Drivers, storagev1.CSINodeDriver{
		Name:         Driver,
		NodeID:       node.Name,
		TopologyKeys: []string{TopologyKey},
		Allocatable:  &storagev1.VolumeNodeResources{Count: ptr.To[int32](25)},
	})
	if err := r.client.Update(ctx, csiNode); err != nil {
		return reconcile.Result{}, fmt.Errorf("registering %s on CSINode %s: %w", Driver, node.Name, err)
	}
	r.record(Event{Kind: CSIDriverRegistered, Node: node.Name, Object: node.Name, Detail: fmt.Sprintf("%s after Ready", time.Since(readyAt).Round(time.Millisecond))})
	return reconcile.Result{}, nil
}

func hasDriver(n *storagev1.CSINode) bool {
	return slices.ContainsFunc(n.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == Driver })
}

// csiNodeMissing says why the node cannot have Driver's volumes yet, in external-provisioner's
// words ("" once its CSINode lists the driver).
func (s *Sim) csiNodeMissing(ctx context.Context, node string) (string, error) {
	csiNode := &storagev1.CSINode{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: node}, csiNode); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("error getting CSINode for selected node %q: csinode.storage.k8s.io %q not found", node, node), nil
		}
		return "", err
	}
	if !hasDriver(csiNode) {
		return fmt.Sprintf("no topology key found on CSINode %s", node), nil
	}
	return "", nil
}
