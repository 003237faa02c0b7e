package nodesim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/e2e/nodesim"
)

// TestStorageAndAdmissionAsOnEKS: a node's CSINode lists the driver only a while after the
// node is Ready (never where the node plugin does not run), and until then its claims stay
// Pending with external-provisioner's ProvisioningFailed event; a class with
// volumeInitializationRate provisions no empty volume; a pod that does not fit its node is
// rejected by the kubelet (Failed, OutOfcpu) while one that fits is admitted.
func TestStorageAndAdmissionAsOnEKS(t *testing.T) {
	ctx := t.Context()
	api := cluster.StartTestAPIServer(t)
	const delay = 3 * time.Second
	sim, err := nodesim.Start(ctx, nodesim.Options{Config: api.Config, Root: t.TempDir(), WarmpoolBinary: "/nonexistent/warmpool", CSIRegistrationDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Stop(); err != nil {
			t.Errorf("stopping nodesim: %v", err)
		}
	})
	t.Cleanup(func() {
		for _, e := range sim.Events() {
			t.Log(e)
		}
	})
	kube := api.Client
	for _, sc := range []*storagev1.StorageClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "sim"}, Provisioner: nodesim.Driver, VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer)},
		{ObjectMeta: metav1.ObjectMeta{Name: "restore"}, Provisioner: nodesim.Driver, VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
			Parameters: map[string]string{nodesim.ParameterVolumeInitializationRate: "200"}},
	} {
		if err := kube.Create(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	createNode(t, kube, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "eks-node"}})
	createNode(t, kube, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "no-plugin", Annotations: map[string]string{nodesim.AnnotationCSINodePlugin: "absent"}}})
	ready := time.Now()

	early := pvc("early", "eks-node", "")
	if err := kube.Create(ctx, early); err != nil {
		t.Fatal(err)
	}
	stranded := pvc("stranded", "no-plugin", "")
	if err := kube.Create(ctx, stranded); err != nil {
		t.Fatal(err)
	}
	initRate := pvc("init-rate", "eks-node", "")
	initRate.Spec.StorageClassName = ptr.To("restore")
	if err := kube.Create(ctx, initRate); err != nil {
		t.Fatal(err)
	}

	poll(t, "the early claim to be provisioned once the plugin registered", func(ctx context.Context) (bool, error) {
		pv := &corev1.PersistentVolume{}
		err := kube.Get(ctx, client.ObjectKey{Name: "pvc-" + string(early.UID)}, pv)
		return err == nil, client.IgnoreNotFound(err)
	})
	csiNode := &storagev1.CSINode{}
	if err := kube.Get(ctx, client.ObjectKey{Name: "eks-node"}, csiNode); err != nil {
		t.Fatal(err)
	}
	if len(csiNode.Spec.Drivers) != 1 || csiNode.Spec.Drivers[0].Name != nodesim.Driver || len(csiNode.OwnerReferences) != 1 {
		t.Errorf("CSINode %+v, want the driver listed and the Node as owner", csiNode)
	}
	for _, e := range sim.Events() {
		if e.Kind == nodesim.VolumeProvisioned && e.Object == "pvc-"+string(early.UID) && e.Time.Sub(ready) < delay-time.Second {
			t.Errorf("the early claim was provisioned %s after the node was Ready, before its plugin registered", e.Time.Sub(ready))
		}
	}
	expectEvent(t, kube, early.Name, "ProvisioningFailed", "no topology key found on CSINode eks-node")
	expectEvent(t, kube, stranded.Name, "ProvisioningFailed", "no topology key found on CSINode no-plugin")
	expectEvent(t, kube, initRate.Name, "ProvisioningFailed", "InvalidParameterCombination")
	for _, c := range []*corev1.PersistentVolumeClaim{stranded, initRate} {
		pv := &corev1.PersistentVolume{}
		if err := kube.Get(ctx, client.ObjectKey{Name: "pvc-" + string(c.UID)}, pv); err == nil {
			t.Errorf("claim %s was provisioned", c.Name)
		}
	}
	if n := sim.Count(nodesim.CSIDriverRegistered, "no-plugin"); n != 0 {
		t.Errorf("the driver registered %d times where its plugin does not run", n)
	}

	// The kubelet's admission: 3 of the node's 4 CPUs are taken, a pod asking 2 is rejected.
	hog := cpuPod("hog", "eks-node", "3")
	fits := cpuPod("fits", "eks-node", "500m")
	tooBig := cpuPod("too-big", "eks-node", "2")
	for _, p := range []*corev1.Pod{hog, fits, tooBig} {
		if err := kube.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		poll(t, p.Name+" admitted or rejected", func(ctx context.Context) (bool, error) {
			err := kube.Get(ctx, client.ObjectKeyFromObject(p), p)
			return err == nil && (p.Status.HostIP != "" || p.Status.Phase == corev1.PodFailed), err
		})
	}
	if hog.Status.Phase == corev1.PodFailed || fits.Status.Phase == corev1.PodFailed {
		t.Errorf("pods that fit were rejected: %s %q, %s %q", hog.Status.Phase, hog.Status.Reason, fits.Status.Phase, fits.Status.Reason)
	}
	if tooBig.Status.Phase != corev1.PodFailed || tooBig.Status.Reason != "OutOfcpu" ||
		!strings.HasPrefix(tooBig.Status.Message, "Pod was rejected: Node didn't have enough resource: cpu, requested: 2000, used: 3500, capacity: 4000") {
		t.Errorf("the pod that does not fit: %s %q %q, want Failed OutOfcpu", tooBig.Status.Phase, tooBig.Status.Reason, tooBig.Status.Message)
	}
	expectEventOn(t, kube, "Pod", tooBig.Name, "OutOfcpu", "Node didn't have enough resource: cpu")
}

func cpuPod(name, node, cpu string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "c", Image: "busybox",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}},
		}}},
	}
}

func expectEvent(t *testing.T, kube client.Client, claim, reason, contains string) {
	t.Helper()
	expectEventOn(t, kube, "PersistentVolumeClaim", claim, reason, contains)
}

func expectEventOn(t *testing.T, kube client.Client, kind, name, reason, contains string) {
	t.Helper()
	poll(t, reason+" event on "+name, func(ctx context.Context) (bool, error) {
		list := &corev1.EventList{}
		if err := kube.List(ctx, list, client.InNamespace("default")); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason && strings.Contains(e.Message, contains) {
				return true, nil
			}
		}
		return false, nil
	})
}
