package scaling_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/nodepools"
)

// buffer reads the pool's CapacityBuffer as the API server stores it.
func (e *env) buffer(pool string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nodepools.CapacityBufferGV.WithKind("CapacityBuffer"))
	err := kube.Get(e.T.Context(), client.ObjectKey{Namespace: e.Namespace, Name: nodepools.HeadroomName(pool)}, u)
	return u, err
}

// waitBuffer waits for the pool's CapacityBuffer to ask for exactly n chunks.
func (e *env) waitBuffer(pool string, n int64) *unstructured.Unstructured {
	e.T.Helper()
	var u *unstructured.Unstructured
	eventually(e.T, fmt.Sprintf("CapacityBuffer of pool %s at %d replicas", pool, n), func() error {
		var err error
		if u, err = e.buffer(pool); err != nil {
			return err
		}
		got, found, err := unstructured.NestedInt64(u.Object, "spec", "replicas")
		if err != nil || !found || got != n {
			return fmt.Errorf("replicas %d (found %t, %v)", got, found, err)
		}
		return nil
	})
	return u
}

// waitGone waits for obj to be deleted (or marked so: envtest runs no garbage collector).
func (e *env) waitGone(what string, obj client.Object) {
	e.T.Helper()
	eventually(e.T, what+" deleted", func() error {
		err := kube.Get(e.T.Context(), client.ObjectKeyFromObject(obj), obj)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case obj.GetDeletionTimestamp() != nil:
			return nil
		}
		return fmt.Errorf("still there")
	})
}

// TestCapacityBufferActuator: a pool with headroom: capacityBuffer gets a Karpenter
// CapacityBuffer (autoscaling.x-k8s.io, validated by its real CRD) of the headroom's size,
// whose PodTemplate is the placeholder pod, instead of the placeholder Deployment; switching
// back to pods removes the buffer and its template and brings the Deployment back.
func TestCapacityBufferActuator(t *testing.T) {
	pool := poolName("buffer")
	withActuator := func(kind string) string {
		return configYAML(poolYAML(pool, ciSource, fmt.Sprintf(`scaling: {jobsPerNode: 1, headroom: %s, runnerRequests: {cpu: "2", memory: 4Gi}}`, kind)))
	}
	e := newEnv(t, withActuator("pods"))
	e.record(pool, queue.Counts{Queued: 3}, nil)
	deployment := e.waitReplicas(pool, 3)

	e.SetConfig(withActuator("capacityBuffer"))
	buf := e.waitBuffer(pool, 3)
	e.waitGone("placeholder Deployment", deployment)
	if ref, _, _ := unstructured.NestedString(buf.Object, "spec", "podTemplateRef", "name"); ref != nodepools.HeadroomName(pool) {
		t.Errorf("podTemplateRef %q, want %q", ref, nodepools.HeadroomName(pool))
	}
	if s, _, _ := unstructured.NestedString(buf.Object, "spec", "provisioningStrategy"); s != "buffer.x-k8s.io/active-capacity" {
		t.Errorf("provisioningStrategy %q", s)
	}
	tpl := &corev1.PodTemplate{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: e.Namespace, Name: nodepools.HeadroomName(pool)}, tpl); err != nil {
		t.Fatal(err)
	}
	if got := tpl.Template.Spec.NodeSelector; !equality.Semantic.DeepEqual(got, map[string]string{nodepools.LabelPool: pool}) {
		t.Errorf("template nodeSelector %v", got)
	}
	if c := tpl.Template.Spec.Containers; len(c) != 1 || c[0].Resources.Requests.Cpu().Cmp(quantity("2")) != 0 {
		t.Errorf("template containers %+v, want one requesting one runner's 2 cpu", c)
	}
	if len(tpl.Template.Spec.Tolerations) != 1 || tpl.Template.Spec.Tolerations[0].Value != pool {
		t.Errorf("template tolerations %+v", tpl.Template.Spec.Tolerations)
	}

	// The buffer follows the queue.
	e.record(pool, queue.Counts{Queued: 5}, nil)
	e.waitBuffer(pool, 5)
	waitGauge(t, headroomGauge, pool, 5)

	// Back to placeholder pods.
	e.SetConfig(withActuator("pods"))
	e.waitReplicas(pool, 5)
	e.waitGone("CapacityBuffer", buf)
	e.waitGone("PodTemplate", tpl)
}

// TestCapacityBufferResumes: the CapacityBuffer carries the scaling state, so a restarted
// manager resumes from it (not from the pool's zero nodes) and leaves the buffer as it is.
func TestCapacityBufferResumes(t *testing.T) {
	pool := poolName("buffer-restart")
	e := newEnv(t, configYAML(poolYAML(pool, ciSource, "scaling: {jobsPerNode: 1, headroom: capacityBuffer}")))
	e.record(pool, queue.Counts{Queued: 4}, nil)
	before := e.waitBuffer(pool, 4)
	if before.GetAnnotations()[scaling.AnnotationState] == "" {
		t.Errorf("CapacityBuffer carries no %s", scaling.AnnotationState)
	}

	e.Stop()
	e.Start()
	waitEvent(t, pool, scaling.ReasonResumed, "resumed at desired nodes 4 from the state recorded on CapacityBuffer", "now 4")
	after := e.waitBuffer(pool, 4)
	if after.GetGeneration() != before.GetGeneration() {
		t.Errorf("CapacityBuffer changed across the restart: generation %d -> %d", before.GetGeneration(), after.GetGeneration())
	}
}
