package pools

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"warmpool.io/warmpool/nodepools"
)

// The objects are handled as unstructured so one code path serves every node class kind.

func nodePoolObject() client.Object {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePool"))
	return u
}

func (c *Controller) nodeClassObject() client.Object {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nodepools.NodeClassGVK(c.opts.NodeClass))
	return u
}

func nodePoolList() client.ObjectList {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePoolList"))
	return l
}

func (c *Controller) nodeClassList() client.ObjectList {
	l := &unstructured.UnstructuredList{}
	gvk := nodepools.NodeClassGVK(c.opts.NodeClass)
	l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	return l
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
