package scaling

// The actuation step: keep the desired nodes booted ahead of runner pods with the pool's
// actuator, placeholder pods (a Deployment) or a Karpenter CapacityBuffer, and remove the
// other actuator's objects.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/unchanged"
	"warmpool.io/warmpool/nodepools"
)

// headroom is how many placeholder nodes the evaluation asks for: the desired nodes not
// already running real work.
func (ev *evaluation) headroom() int32 {
	return int32(max(0, ev.decision.Desired-ev.fleet.busy))
}

// actuateHeadroom actuates the evaluation's headroom, and records an Event when it cannot.
func (c *Controller) actuateHeadroom(ctx context.Context, np *karpv1.NodePool, ps *poolState, ev *evaluation) error {
	headroom := ev.headroom()
	// Placeholders are sized to one node's worth of runner work, with the jobs per node in force.
	sized := *ev.pool
	sized.Scaling.JobsPerNode = ev.jobsPerNode
	err := c.actuate(ctx, &sized, ps, headroom, ev.recorded)
	if err != nil {
		c.recorder.Eventf(np, corev1.EventTypeWarning, ReasonHeadroomFailed, "headroom of %d not actuated: %v", headroom, err)
	}
	return err
}

// actuate keeps replicas nodes' worth of headroom with the pool's actuator and removes the
// other actuator's objects, so switching scaling.headroom hands over without leaving both.
func (c *Controller) actuate(ctx context.Context, p *config.Pool, ps *poolState, replicas int32, state string) error {
	// Both actuators' pod template names the PriorityClass.
	if !c.priorityClassApplied.Load() {
		if _, err := c.apply(ctx, nodepools.HeadroomPriorityClassObject()); err != nil {
			return err
		}
		c.priorityClassApplied.Store(true)
	}
	if p.Scaling.Headroom == config.HeadroomCapacityBuffer {
		if err := c.applyBuffer(ctx, p, ps, replicas, state); err != nil {
			return err
		}
		d := &appsv1.Deployment{}
		err := c.kubeClient.Get(ctx, types.NamespacedName{Namespace: c.namespace, Name: nodepools.HeadroomName(p.Name)}, d)
		if err == nil && d.DeletionTimestamp == nil {
			if err := c.kubeClient.Delete(ctx, d); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting placeholder Deployment of pool %s (it now uses a CapacityBuffer), %w", p.Name, err)
			}
		}
		ps.headroomRendering = ""
		return nil
	}
	if err := c.applyHeadroom(ctx, p, ps, replicas, state); err != nil {
		return err
	}
	if ps.bufferGone {
		return nil
	}
	if err := c.deleteBuffer(ctx, p.Name); err != nil {
		return err
	}
	ps.bufferHash, ps.bufferGone = "", true
	return nil
}

// applyBuffer server-side-applies the pool's PodTemplate (one chunk's shape) and its
// CapacityBuffer of replicas chunks. Neither is read back: a watch on a kind whose CRD may not
// be installed is not worth it, so an unchanged pair is skipped by hash alone.
func (c *Controller) applyBuffer(ctx context.Context, p *config.Pool, ps *poolState, replicas int32, state string) error {
	tpl := nodepools.HeadroomPodTemplate(p, c.namespace)
	buf := nodepools.HeadroomCapacityBuffer(p, c.namespace, replicas)
	buf.Annotations = map[string]string{AnnotationState: state}
	raw, err := json.Marshal([]any{tpl.Template, buf.Spec, state})
	if err != nil {
		return fmt.Errorf("hashing capacity buffer, %w", err)
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:8])
	if ps.bufferHash == hash {
		return nil
	}
	// The template first: Karpenter resolves the buffer's podTemplateRef when it sees it.
	for _, obj := range []client.Object{tpl, buf} {
		if _, err := c.apply(ctx, obj); err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("pool %s asks for a CapacityBuffer, but the cluster serves no %s (install Karpenter's CapacityBuffer CRD and enable its feature gate), %w", p.Name, nodepools.CapacityBufferGV, err)
			}
			return err
		}
	}
	ps.bufferHash, ps.bufferGone = hash, false
	return nil
}

// deleteBuffer removes the pool's CapacityBuffer and PodTemplate, if any. A cluster without
// the CapacityBuffer CRD has none.
func (c *Controller) deleteBuffer(ctx context.Context, pool string) error {
	buf := &unstructured.Unstructured{}
	buf.SetGroupVersionKind(nodepools.CapacityBufferGV.WithKind("CapacityBuffer"))
	buf.SetNamespace(c.namespace)
	buf.SetName(nodepools.HeadroomName(pool))
	tpl := &corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: nodepools.HeadroomName(pool)}}
	for _, obj := range []client.Object{buf, tpl} {
		if err := c.kubeClient.Delete(ctx, obj); client.IgnoreNotFound(err) != nil && !meta.IsNoMatchError(err) {
			return fmt.Errorf("deleting capacity buffer of pool %s, %w", pool, err)
		}
	}
	return nil
}

// applyHeadroom server-side-applies the pool's placeholder Deployment at the given size. Every
// pool is evaluated every few seconds, so an apply that would change nothing is skipped: when
// the cached Deployment is the generation this controller last wrote from the same rendering,
// or, in a process that has not written it yet (a restart, a new leader), when it carries
// every rendered field and was applied from this rendering (package unchanged). (actuate
// applies the shared PriorityClass once per process: it is not read back, a watch on
// PriorityClasses for one object is not worth its informer.)
func (c *Controller) applyHeadroom(ctx context.Context, p *config.Pool, ps *poolState, replicas int32, state string) error {
	d := nodepools.HeadroomDeployment(p, c.namespace, replicas)
	// On the Deployment, not its pod template: a new state must not replace the placeholders.
	d.Annotations = map[string]string{AnnotationState: state}
	u, err := nodepools.ToUnstructured(d)
	if err != nil {
		return err
	}
	rendering, err := unchanged.Stamp(u)
	if err != nil {
		return err
	}
	cur := &appsv1.Deployment{}
	if err := c.kubeClient.Get(ctx, client.ObjectKeyFromObject(d), cur); err == nil {
		if ps.headroomRendering == rendering && cur.Generation == ps.headroomGeneration {
			return nil
		}
		if cur.Annotations[unchanged.AnnotationRendering] == rendering && cur.DeletionTimestamp == nil {
			existing, err := nodepools.ToUnstructured(cur)
			if err != nil {
				return err
			}
			if unchanged.Covers(existing.Object, u.Object) {
				ps.headroomRendering, ps.headroomGeneration = rendering, cur.Generation
				return nil
			}
		}
	}
	applied, err := c.apply(ctx, u)
	if err != nil {
		return err
	}
	ps.headroomRendering, ps.headroomGeneration = rendering, applied.GetGeneration()
	return nil
}

// apply server-side-applies obj and returns what the server stored.
func (c *Controller) apply(ctx context.Context, obj client.Object) (*unstructured.Unstructured, error) {
	u, err := nodepools.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	if err := c.written.Apply(ctx, c.kubeClient, u); err != nil {
		return nil, err
	}
	return u, nil
}
