package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"warmpool.io/warmpool/nodepools"
)

// generatedRBAC is where `make manifests` writes controller-gen's output.
const generatedRBAC = "deploy/helm/warmpool/files/rbac/role.yaml"

// The committed RBAC must be what controller-gen makes of the markers now: re-run it into a
// temp dir and compare. A marker edited without `make manifests` fails here.
func TestRBACIsUpToDate(t *testing.T) {
	root := repoRoot(t)
	gen := filepath.Join(root, "bin", "controller-gen")
	if _, err := os.Stat(gen); err != nil {
		t.Fatalf("%s is missing: run `make tools` (%v)", gen, err)
	}
	out := t.TempDir()
	cmd := exec.Command(gen, "rbac:roleName=warmpool", "paths=./controller/operator", "output:rbac:dir="+out)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(filepath.Join(out, "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, generatedRBAC))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s is stale: run `make manifests`.\n--- committed\n%s\n--- generated\n%s", generatedRBAC, got, want)
	}
}

// No rule in the chart's roles may use a wildcard verb, resource or API group.
func TestRolesHaveNoWildcards(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": nil, "full": fullValues(t)} {
		_, objs := render(t, vals)
		roles := 0
		for _, o := range objs {
			if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
				continue
			}
			if !peopleComponents[o.GetLabels()["app.kubernetes.io/component"]] {
				roles++ // the roles for people (viewer_test.go) are not the controller's
			}
			role := &rbacv1.ClusterRole{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
				t.Fatal(err)
			}
			if len(role.Rules) == 0 {
				t.Errorf("%s: %s %s has no rules", name, o.GetKind(), o.GetName())
			}
			for i, r := range role.Rules {
				for field, values := range map[string][]string{
					"verbs": r.Verbs, "resources": r.Resources, "apiGroups": r.APIGroups,
					"resourceNames": r.ResourceNames, "nonResourceURLs": r.NonResourceURLs,
				} {
					for _, v := range values {
						if strings.Contains(v, "*") {
							t.Errorf("%s: %s %s rule %d: wildcard %q in %s", name, o.GetKind(), o.GetName(), i, v, field)
						}
					}
				}
				if len(r.Verbs) == 0 || len(r.Resources) == 0 {
					t.Errorf("%s: %s %s rule %d names no verb or resource: %+v", name, o.GetKind(), o.GetName(), i, r)
				}
			}
		}
		if roles != 3 {
			t.Errorf("%s: %d roles rendered, want a ClusterRole and a Role, and the hold's ClusterRole", name, roles)
		}
	}
}

// The chart and the scaling controller both apply the headroom PriorityClass: they must write
// the same object, or each would undo the other (and value/preemptionPolicy are immutable).
func TestPriorityClassMatchesController(t *testing.T) {
	_, objs := render(t, nil)
	got := &schedulingv1.PriorityClass{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "PriorityClass", nodepools.HeadroomPriorityClass).Object, got); err != nil {
		t.Fatal(err)
	}
	want := nodepools.HeadroomPriorityClassObject()
	if got.Value != want.Value || got.Description != want.Description || got.GlobalDefault != want.GlobalDefault ||
		got.PreemptionPolicy == nil || *got.PreemptionPolicy != corev1.PreemptNever || *want.PreemptionPolicy != corev1.PreemptNever {
		t.Errorf("chart PriorityClass %+v differs from the controller's %+v", got, want)
	}
	for k, v := range want.Labels {
		if got.Labels[k] != v {
			t.Errorf("chart PriorityClass label %s=%q, the controller applies %q", k, got.Labels[k], v)
		}
	}
	if _, objs := render(t, map[string]any{"priorityClass": map[string]any{"create": false}}); len(objs) == 0 {
		t.Fatal("nothing rendered")
	} else {
		for _, o := range objs {
			if o.GetKind() == "PriorityClass" {
				t.Errorf("priorityClass.create=false still renders %s", o.GetName())
			}
		}
	}
}
