package nodepools

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	autoscalingv1beta1 "sigs.k8s.io/karpenter/pkg/apis/autoscaling/v1beta1"

	"warmpool.io/warmpool/controller/config"
)

// CapacityBufferGV is the group/version of Karpenter's CapacityBuffer (alpha in Karpenter,
// behind its CapacityBuffer feature gate; the CRD ships in sigs.k8s.io/karpenter pkg/apis).
var CapacityBufferGV = schema.GroupVersion{Group: autoscalingv1beta1.Group, Version: "v1beta1"}

// HeadroomPodTemplate is the shape of one buffer chunk: exactly the placeholder pod of
// HeadroomDeployment (pinned to the pool, tolerating its taint, one node's worth of runner
// requests), so both actuators ask Karpenter for the same nodes.
func HeadroomPodTemplate(p *config.Pool, namespace string) *corev1.PodTemplate {
	d := HeadroomDeployment(p, namespace, 0)
	return &corev1.PodTemplate{
		TypeMeta:   metav1.TypeMeta{APIVersion: corev1.SchemeGroupVersion.String(), Kind: "PodTemplate"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: HeadroomName(p.Name), Labels: d.Labels},
		Template:   d.Spec.Template,
	}
}

// HeadroomCapacityBuffer asks Karpenter for replicas chunks of HeadroomPodTemplate: Karpenter
// provisions nodes for them as if they were pending pods, without running any pod.
func HeadroomCapacityBuffer(p *config.Pool, namespace string, replicas int32) *autoscalingv1beta1.CapacityBuffer {
	return &autoscalingv1beta1.CapacityBuffer{
		TypeMeta: metav1.TypeMeta{APIVersion: CapacityBufferGV.String(), Kind: "CapacityBuffer"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: HeadroomName(p.Name), Labels: map[string]string{
			LabelManagedBy: ManagedBy, LabelPool: p.Name,
		}},
		Spec: autoscalingv1beta1.CapacityBufferSpec{
			ProvisioningStrategy: ptr.To(autoscalingv1beta1.ActiveProvisioningStrategy),
			PodTemplateRef:       &autoscalingv1beta1.LocalObjectRef{Name: HeadroomName(p.Name)},
			Replicas:             ptr.To(replicas),
		},
	}
}
