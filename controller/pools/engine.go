package pools

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
)

// Event reasons of the engine DaemonSet contract check (pools[].engine.existingDaemonSet).
const (
	ReasonEngineContractViolation = "EngineContractViolation"
	ReasonEngineContractMet       = "EngineContractMet"
	ReasonEngineCheckFailed       = "EngineCheckFailed"
)

// EngineRecheckInterval is how often a config naming existing engine DaemonSets is reconciled
// again to check them: they may live in any namespace, so they are read uncached, not watched.
const EngineRecheckInterval = 5 * time.Minute

// usesExistingEngine reports whether a pool of cfg names its own engine DaemonSet.
func usesExistingEngine(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.Pools, func(p config.Pool) bool { return p.Engine.ExistingDaemonSet != nil })
}

// checkEngines checks the engine DaemonSets the config names instead of letting warmpool
// generate them, in any namespace, and reports every violation as a Warning Event on the
// ConfigMap. A pool's findings are reported when they change, not on every reconcile: the
// reconcile also runs for every busy-state change, and the same warnings would drown the rest.
func (c *Controller) checkEngines(ctx context.Context, cm *corev1.ConfigMap, cfg *config.Config) error {
	var errs []error
	checked := sets.New[string]()
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		if p.Engine.ExistingDaemonSet == nil {
			continue
		}
		checked.Insert(p.Name)
		findings, err := c.engineFindings(ctx, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.mu.Lock()
		last, seen := c.engineReports[p.Name]
		c.engineReports[p.Name] = findings
		c.mu.Unlock()
		if seen && slices.Equal(last, findings) {
			continue
		}
		for _, f := range findings {
			c.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonEngineContractViolation, "pool %s: %s", p.Name, f)
		}
		if len(findings) == 0 && len(last) > 0 {
			c.recorder.Eventf(cm, corev1.EventTypeNormal, ReasonEngineContractMet, "pool %s: the engine DaemonSet now keeps the engine contract", p.Name)
		}
	}
	c.mu.Lock()
	for pool := range c.engineReports {
		if !checked.Has(pool) {
			delete(c.engineReports, pool)
		}
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// engineFindings lists the pool's contract violations, each prefixed with the DaemonSet it is
// about. warmpool's own engine DaemonSets are never the user's, even when the selector
// matches their labels.
func (c *Controller) engineFindings(ctx context.Context, p *config.Pool) ([]string, error) {
	sel, err := metav1.LabelSelectorAsSelector(p.Engine.ExistingDaemonSet)
	if err != nil {
		// Validation accepted it, so this is a bug; say so rather than check nothing.
		return nil, fmt.Errorf("pool %s: engine.existingDaemonSet, %w", p.Name, err)
	}
	// Unstructured, so uncached: the manager caches DaemonSets in warmpool's namespace only,
	// and a cluster-wide informer (and the RBAC for it) is not worth it for a rare option.
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("DaemonSetList"))
	if err := c.kubeClient.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing engine DaemonSets of pool %s, %w", p.Name, err)
	}
	var findings []string
	matched := 0
	for i := range list.Items {
		ds := &appsv1.DaemonSet{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, ds); err != nil {
			return nil, fmt.Errorf("reading DaemonSet %s/%s, %w", list.Items[i].GetNamespace(), list.Items[i].GetName(), err)
		}
		if nodepools.IsEngineObject(ds.Labels) || ds.DeletionTimestamp != nil {
			continue
		}
		matched++
		for _, v := range nodepools.CheckEngineDaemonSet(p, ds) {
			findings = append(findings, fmt.Sprintf("DaemonSet %s/%s: %s", ds.Namespace, ds.Name, v))
		}
	}
	if matched == 0 {
		findings = append(findings, fmt.Sprintf("no DaemonSet matches engine.existingDaemonSet (%s): the pool's nodes run no engine warmpool knows of", sel))
	}
	slices.Sort(findings)
	return findings, nil
}

// pruneEngines deletes the engine DaemonSets and ConfigMaps warmpool made in its namespace
// that the config no longer renders: their pool is gone, or now names its own DaemonSet.
func (c *Controller) pruneEngines(ctx context.Context, cm *corev1.ConfigMap, rendered []client.Object) error {
	if c.opts.Namespace == "" {
		// Without a namespace the list would span the cluster, and another warmpool's engines.
		return nil
	}
	keep := sets.New[string]()
	for _, o := range rendered {
		keep.Insert(o.GetObjectKind().GroupVersionKind().Kind + "/" + o.GetName())
	}
	var errs []error
	for _, gvk := range []schema.GroupVersionKind{appsv1.SchemeGroupVersion.WithKind("DaemonSet"), corev1.SchemeGroupVersion.WithKind("ConfigMap")} {
		// From the cache, which holds DaemonSets and ConfigMaps of warmpool's namespace.
		items, err := c.list(ctx, gvk, client.InNamespace(c.opts.Namespace), client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy})
		if err != nil {
			errs = append(errs, fmt.Errorf("listing engine %ss, %w", gvk.Kind, err))
			continue
		}
		for _, obj := range items {
			if !nodepools.IsEngineObject(obj.GetLabels()) || keep.Has(gvk.Kind+"/"+obj.GetName()) || obj.GetDeletionTimestamp() != nil {
				continue
			}
			if err := c.kubeClient.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
				errs = append(errs, fmt.Errorf("pruning %s %s, %w", gvk.Kind, obj.GetName(), err))
				continue
			}
			c.recorder.Eventf(cm, corev1.EventTypeNormal, ReasonPruned, "pool %s no longer has a generated engine: deleted %s %s",
				obj.GetLabels()[nodepools.LabelPool], gvk.Kind, obj.GetName())
		}
	}
	return errors.Join(errs...)
}

// daemonSetEvents passes the changes to warmpool's own engine DaemonSets that a reconcile
// must undo: spec (generation) and label changes, and deletion. Status moves with every engine
// pod and is not warmpool's.
func (c *Controller) daemonSetEvents() predicate.Predicate {
	ours := func(o client.Object) bool {
		return nodepools.IsEngineObject(o.GetLabels()) && o.GetNamespace() == c.opts.Namespace
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return ours(e.Object) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return ours(e.Object) },
		GenericFunc: func(e event.GenericEvent) bool { return ours(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			changed := e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				!labels.Equals(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
			return changed && (ours(e.ObjectOld) || ours(e.ObjectNew))
		},
	}
}

// engineConfigMapEvents passes the changes to warmpool's engine ConfigMaps (its data has no
// generation: any update) that a reconcile must undo.
func (c *Controller) engineConfigMapEvents() predicate.Predicate {
	return predicate.NewPredicateFuncs(func(o client.Object) bool {
		return nodepools.IsEngineObject(o.GetLabels()) && o.GetNamespace() == c.opts.Namespace
	})
}
