package nodepools

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ToUnstructured is the one conversion both `render` and server-side apply use. It goes through
// JSON (so Karpenter's custom marshalers, like NillableDuration's, are honoured) and drops what a
// caller must never send: status and null members.
func ToUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding %T %s, %w", obj, obj.GetName(), err)
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(raw, &u.Object); err != nil {
		return nil, fmt.Errorf("decoding %T %s, %w", obj, obj.GetName(), err)
	}
	delete(u.Object, "status")
	dropNulls(u.Object)
	return u, nil
}

// dropNulls removes null members (creationTimestamp of a new object, Karpenter list fields without
// omitempty): CRD schemas reject null where a list or object is expected, and under server-side
// apply an explicit null would claim ownership of a field we do not set.
func dropNulls(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(v)
		case []any:
			for _, item := range v {
				if im, ok := item.(map[string]any); ok {
					dropNulls(im)
				}
			}
		}
	}
}

// YAML prints objects as one multi-document YAML stream, in order.
func YAML(objs []client.Object) ([]byte, error) {
	var out []byte
	for i, obj := range objs {
		u, err := ToUnstructured(obj)
		if err != nil {
			return nil, err
		}
		doc, err := yaml.Marshal(u.Object)
		if err != nil {
			return nil, fmt.Errorf("printing %s %s, %w", u.GetKind(), u.GetName(), err)
		}
		if i > 0 {
			out = append(out, "---\n"...)
		}
		out = append(out, doc...)
	}
	return out, nil
}
