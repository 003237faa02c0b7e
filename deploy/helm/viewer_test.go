package helm

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// peopleComponents label the roles for people (templates/rbac-viewer.yaml), which are not the
// controller's own identity.
var peopleComponents = map[string]bool{"viewer": true, "snapshot-operator": true}

// withoutPeopleRoles drops the people roles and their bindings, for the checks of the
// controller's own objects; TestPeopleRoles checks them.
func withoutPeopleRoles(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if !peopleComponents[o.GetLabels()["app.kubernetes.io/component"]] {
			out = append(out, o)
		}
	}
	return out
}

// The viewer and snapshot-operator ClusterRoles render by default, unbound; their subjects bind
// them; create=false leaves them out. (That the viewer role is exactly what `warmpool status`
// reads is tested against an API server in cmd/warmpool/status.)
func TestPeopleRoles(t *testing.T) {
	has := func(objs []*unstructured.Unstructured, kind, name string) bool {
		for _, o := range objs {
			if o.GetKind() == kind && o.GetName() == name {
				return true
			}
		}
		return false
	}
	_, objs := render(t, nil)
	for _, name := range []string{"warmpool-viewer", "warmpool-snapshot-operator"} {
		if !has(objs, "ClusterRole", name) || has(objs, "ClusterRoleBinding", name) {
			t.Errorf("defaults: ClusterRole %s rendered %t, bound %t; want rendered, unbound", name, has(objs, "ClusterRole", name), has(objs, "ClusterRoleBinding", name))
		}
	}
	subjects := []any{map[string]any{"kind": "Group", "name": "ci-oncall", "apiGroup": "rbac.authorization.k8s.io"}}
	_, objs = render(t, map[string]any{"rbac": map[string]any{
		"viewer":           map[string]any{"subjects": subjects},
		"snapshotOperator": map[string]any{"create": false, "subjects": subjects},
	}})
	if !has(objs, "ClusterRoleBinding", "warmpool-viewer") || has(objs, "ClusterRole", "warmpool-snapshot-operator") || has(objs, "ClusterRoleBinding", "warmpool-snapshot-operator") {
		t.Errorf("viewer bound and operator off: %v", kinds(objs))
	}
	if _, err := install(t, map[string]any{"rbac": map[string]any{"viewer": map[string]any{"subjects": []any{map[string]any{"kind": "Robot", "name": "x"}}}}}); err == nil {
		t.Error("a subject of an unknown kind passed the schema")
	}
}
