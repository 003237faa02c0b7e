package helm

// The controller's footprint settings: the client-side rate limit reaches the controller as
// flags, and GOMEMLIMIT follows the container's memory limit.

import (
	"slices"
	"strings"
	"testing"
)

// envValue is the value of the controller container's env var name, and whether it is set.
func envValue(t *testing.T, vals map[string]any, name string) (string, bool) {
	t.Helper()
	_, objs := render(t, vals)
	for _, e := range container(t, find(t, objs, "Deployment", releaseName))["env"].([]any) {
		if m := e.(map[string]any); m["name"] == name {
			v, _ := m["value"].(string)
			return v, true
		}
	}
	return "", false
}

func memoryLimit(limit any) map[string]any {
	return map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": limit}}}
}

func TestKubeAPIRateLimitFlags(t *testing.T) {
	_, objs := render(t, nil)
	a := args(t, find(t, objs, "Deployment", releaseName))
	for _, want := range []string{"--kube-api-qps=200", "--kube-api-burst=300"} {
		if !slices.Contains(a, want) {
			t.Errorf("default args %v lack %s", a, want)
		}
	}
	_, objs = render(t, map[string]any{"kubeAPI": map[string]any{"qps": -1, "burst": 50}})
	a = args(t, find(t, objs, "Deployment", releaseName))
	for _, want := range []string{"--kube-api-qps=-1", "--kube-api-burst=50"} {
		if !slices.Contains(a, want) {
			t.Errorf("args %v lack %s", a, want)
		}
	}
}

// TestGoMemLimit: auto is 90% of the memory limit, rounded down to whole MiB, in every unit a
// limit is written in; none without a limit; an explicit value as is.
func TestGoMemLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string // "" means unset
	}{
		{"default limit 512Mi", nil, "460MiB"},
		{"1Gi", memoryLimit("1Gi"), "921MiB"},
		{"decimal 1G", memoryLimit("1G"), "858MiB"},
		{"bytes", memoryLimit("209715200"), "180MiB"},
		{"no memory limit", map[string]any{"resources": map[string]any{"limits": nil}}, ""},
		{"explicit", map[string]any{"goMemLimit": "300MiB"}, "300MiB"},
		{"off", map[string]any{"goMemLimit": ""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, set := envValue(t, tc.vals, "GOMEMLIMIT")
			if got != tc.want || set != (tc.want != "") {
				t.Errorf("GOMEMLIMIT %q (set %t), want %q", got, set, tc.want)
			}
		})
	}
}

func TestGoMemLimitRefusesWhatItCannotRead(t *testing.T) {
	_, err := install(t, memoryLimit("1.5Gi"))
	if err == nil || !strings.Contains(err.Error(), "goMemLimit") || !strings.Contains(err.Error(), "1.5Gi") {
		t.Fatalf("memory limit 1.5Gi with goMemLimit auto: %v, want an error naming goMemLimit and the limit", err)
	}
	for key, vals := range map[string]map[string]any{
		"/goMemLimit":    {"goMemLimit": "lots"},
		"/kubeAPI/burst": {"kubeAPI": map[string]any{"burst": 0}},
	} {
		if _, err := install(t, vals); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("values %v: %v, want a schema error naming %s", vals, err, key)
		}
	}
}
