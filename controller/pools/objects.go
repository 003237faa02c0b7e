package pools

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"warmpool.io/warmpool/nodepools"
)

// The objects are handled by GroupVersionKind so one code path serves every node class kind.
// They are read from the manager's cache as the typed objects of its scheme (one informer per
// kind, shared with the scaling controller's NodePool reads), and from the API server as
// unstructured ones when no cache is set.

func nodePoolGVK() schema.GroupVersionKind { return nodepools.NodePoolGV.WithKind("NodePool") }

func (c *Controller) nodeClassGVK() schema.GroupVersionKind {
	return nodepools.NodeClassGVK(c.opts.NodeClass)
}

// object is an empty object of gvk to watch: the scheme's typed one.
func object(scheme *runtime.Scheme, gvk schema.GroupVersionKind) (client.Object, error) {
	o, err := scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("watching %s, %w", gvk, err)
	}
	obj, ok := o.(client.Object)
	if !ok {
		return nil, fmt.Errorf("watching %s: %T is not an object", gvk, o)
	}
	return obj, nil
}

// list lists the objects of gvk: from the cache as typed objects when Register set one (the
// watches keep those informers), else from the API server as unstructured ones.
func (c *Controller) list(ctx context.Context, gvk schema.GroupVersionKind, opts ...client.ListOption) ([]client.Object, error) {
	listGVK := gvk.GroupVersion().WithKind(gvk.Kind + "List")
	if c.cache != nil {
		if o, err := c.scheme.New(listGVK); err == nil {
			if list, ok := o.(client.ObjectList); ok {
				if err := c.cache.List(ctx, list, opts...); err != nil {
					return nil, fmt.Errorf("listing %ss, %w", gvk.Kind, err)
				}
				return listItems(list)
			}
		}
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(listGVK)
	if err := c.kubeClient.List(ctx, list, opts...); err != nil {
		return nil, fmt.Errorf("listing %ss, %w", gvk.Kind, err)
	}
	return listItems(list)
}

func listItems(list client.ObjectList) ([]client.Object, error) {
	objs, err := meta.ExtractList(list)
	if err != nil {
		return nil, fmt.Errorf("reading list, %w", err)
	}
	out := make([]client.Object, 0, len(objs))
	for _, o := range objs {
		co, ok := o.(client.Object)
		if !ok {
			return nil, fmt.Errorf("unexpected list item %T", o)
		}
		out = append(out, co)
	}
	return out, nil
}

func controllerOptions() controller.Options {
	// One ConfigMap: a single worker keeps applies ordered.
	return controller.Options{MaxConcurrentReconciles: 1}
}
