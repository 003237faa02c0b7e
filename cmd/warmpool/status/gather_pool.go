package status

import (
	"encoding/json"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/nodewatch"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

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
		if nodewatch.Ready(n) {
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
	if p.NodePool != nil && p.NodePool.Busy == "" && p.Scaling.Desired != nil {
		// Evaluated, and never busy: the scaling controller does not write an idle state on
		// a NodePool that has none.
		p.NodePool.Busy = "false"
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
		Busy:          np.Annotations[state.AnnotationBusy],
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
	p.Scaling.HeadroomReplicas = replicas
	if state == "" {
		p.Scaling.StateError = fmt.Sprintf("%s records no %s (written by a controller before states were recorded)", object, scaling.AnnotationState)
		return
	}
	var s policy.State
	if err := json.Unmarshal([]byte(state), &s); err != nil {
		p.Scaling.StateError = fmt.Sprintf("reading %s of %s, %v", scaling.AnnotationState, object, err)
		return
	}
	d, spare, hold := s.Desired, s.Spare, s.BurstHold
	p.Scaling.Desired, p.Scaling.Spare, p.Scaling.BurstHold = &d, &spare, &hold
	if !s.LastEvaluation.IsZero() {
		at := s.LastEvaluation.UTC()
		p.Scaling.RecordedAt = &at
	}
}
