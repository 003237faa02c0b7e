package policy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func resources(cpu, memory string) corev1.ResourceList {
	l := corev1.ResourceList{}
	if cpu != "" {
		l[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if memory != "" {
		l[corev1.ResourceMemory] = resource.MustParse(memory)
	}
	return l
}

func TestJobsPerNode(t *testing.T) {
	tests := []struct {
		name        string
		requests    corev1.ResourceList
		allocatable corev1.ResourceList
		want        int
		wantErr     string
	}{
		{"cpu bound", resources("4", "4Gi"), resources("15890m", "60Gi"), 3, ""},
		{"memory bound", resources("2", "16Gi"), resources("16", "60Gi"), 3, ""},
		{"exact fit", resources("4", "8Gi"), resources("16", "32Gi"), 4, ""},
		{"millicores divide exactly", resources("500m", ""), resources("1750m", "1Gi"), 3, ""},
		{"only cpu requested", resources("2", ""), resources("7", "1Mi"), 3, ""},
		{"only memory requested", resources("", "3Gi"), resources("1", "10Gi"), 3, ""},
		{"one fits", resources("8", "30Gi"), resources("8", "30Gi"), 1, ""},
		{"large node memory does not overflow", resources("1", "1Gi"), resources("1000", "100Ti"), 1000, ""},
		{"zero request ignored", resources("0", "1Gi"), resources("1", "4Gi"), 4, ""},
		{"cpu exceeds node", resources("17", "1Gi"), resources("16", "64Gi"), 0, "more than the node's allocatable"},
		{"memory exceeds node", resources("1", "65Gi"), resources("16", "64Gi"), 0, "more than the node's allocatable"},
		{"node lacks resource", resources("1", "1Gi"), resources("16", ""), 0, "allocatable has none"},
		{"no requests", corev1.ResourceList{}, resources("16", "64Gi"), 0, "neither cpu nor memory"},
		{"nil requests", nil, nil, 0, "neither cpu nor memory"},
		{"zero allocatable", resources("1", ""), resources("0", ""), 0, "more than the node's allocatable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := JobsPerNode(tt.requests, tt.allocatable)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("JobsPerNode() = %d, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("JobsPerNode() = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// A derived value must be usable as Config.JobsPerNode.
func TestJobsPerNodeFeedsConfig(t *testing.T) {
	n, err := JobsPerNode(resources("4", "8Gi"), resources("16", "64Gi"))
	if err != nil {
		t.Fatal(err)
	}
	p := mustCompile(t, Config{JobsPerNode: n, MaxNodes: 10})
	d, _ := p.Decide(Input{Now: t0, Known: true, Queued: 9}, evaluated(0))
	if d.Desired != 3 { // ceil(9/4)
		t.Fatalf("Desired = %d, want 3", d.Desired)
	}
}

func TestBusy(t *testing.T) {
	tests := []struct {
		queued, running int
		window          bool
		want            bool
	}{
		{0, 0, false, false},
		{1, 0, false, true},
		{0, 1, false, true},
		{0, 0, true, true},
		{-1, 0, false, false},
	}
	for _, tt := range tests {
		if got := Busy(tt.queued, tt.running, tt.window); got != tt.want {
			t.Errorf("Busy(%d, %d, %v) = %v, want %v", tt.queued, tt.running, tt.window, got, tt.want)
		}
	}
}
