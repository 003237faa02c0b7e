package unchanged

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestCovers(t *testing.T) {
	rendered := map[string]any{
		"metadata": map[string]any{"name": "warmpool-a", "labels": map[string]any{"warmpool.io/pool": "a"}},
		"spec": map[string]any{
			"weight":      float64(10),
			"taints":      []any{map[string]any{"key": "k", "effect": "NoSchedule"}},
			"annotations": map[string]any{},
		},
	}
	for _, tc := range []struct {
		name     string
		existing map[string]any
		want     bool
	}{
		{"the same object", rendered, true},
		{"defaults, status and other managers' fields added", map[string]any{
			"metadata": map[string]any{"name": "warmpool-a", "resourceVersion": "7", "labels": map[string]any{"warmpool.io/pool": "a", "other": "x"}},
			"spec":     map[string]any{"weight": int64(10), "taints": []any{map[string]any{"key": "k", "effect": "NoSchedule", "value": ""}}, "disruption": map[string]any{}},
			"status":   map[string]any{"ready": true},
		}, true},
		{"a value edited by hand", map[string]any{
			"metadata": map[string]any{"name": "warmpool-a", "labels": map[string]any{"warmpool.io/pool": "b"}},
			"spec":     map[string]any{"weight": float64(10), "taints": []any{map[string]any{"key": "k", "effect": "NoSchedule"}}},
		}, false},
		{"a number changed", map[string]any{
			"metadata": map[string]any{"name": "warmpool-a", "labels": map[string]any{"warmpool.io/pool": "a"}},
			"spec":     map[string]any{"weight": int64(11), "taints": []any{map[string]any{"key": "k", "effect": "NoSchedule"}}},
		}, false},
		{"a list element added by hand", map[string]any{
			"metadata": map[string]any{"name": "warmpool-a", "labels": map[string]any{"warmpool.io/pool": "a"}},
			"spec":     map[string]any{"weight": float64(10), "taints": []any{map[string]any{"key": "k", "effect": "NoSchedule"}, map[string]any{"key": "x"}}},
		}, false},
		{"a rendered field missing", map[string]any{
			"metadata": map[string]any{"name": "warmpool-a", "labels": map[string]any{"warmpool.io/pool": "a"}},
			"spec":     map[string]any{"weight": float64(10)},
		}, false},
		{"a map where a string was", map[string]any{
			"metadata": map[string]any{"name": map[string]any{}, "labels": map[string]any{"warmpool.io/pool": "a"}},
			"spec":     map[string]any{"weight": float64(10), "taints": []any{map[string]any{"key": "k", "effect": "NoSchedule"}}},
		}, false},
	} {
		if got := Covers(tc.existing, rendered); got != tc.want {
			t.Errorf("%s: covers = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The digest tells one rendering from another, and the object stamped with it counts as
// applied from that rendering only.
func TestRenderingDigest(t *testing.T) {
	obj := func(label string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"labels": map[string]any{"l": label}}}}
		u.SetAPIVersion("karpenter.sh/v1")
		u.SetKind("NodePool")
		u.SetName("warmpool-a")
		return u
	}
	d1, err := digest(obj("1"))
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := digest(obj("2"))
	if again, _ := digest(obj("1")); again != d1 || d1 == d2 {
		t.Fatalf("digests: %s, %s again, %s for another rendering", d1, again, d2)
	}
	// What applyOne compares: the rendering stamped with its digest against what exists.
	rendered := func(label, d string) *unstructured.Unstructured {
		u := obj(label)
		stamp(u, d)
		return u
	}
	existing := obj("1")
	if Covers(existing.Object, rendered("1", d1).Object) {
		t.Error("an object without the digest counts as applied from a rendering")
	}
	existing.SetAnnotations(map[string]string{"someone": "else"})
	stamp(existing, d1)
	if !Covers(existing.Object, rendered("1", d1).Object) {
		t.Error("an object stamped with rendering 1 does not cover rendering 1")
	}
	// A rendering that sets the same fields as one the object was applied from but is not it
	// (it drops a field the first set) still has to be applied, to remove that field.
	if Covers(existing.Object, rendered("1", d2).Object) {
		t.Error("an object applied from rendering 1 covers another rendering's digest")
	}
	if existing.GetAnnotations()["someone"] != "else" {
		t.Error("stamp dropped another annotation")
	}
}
