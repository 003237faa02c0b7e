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

func TestSurplus(t *testing.T) {
	tests := []struct {
		name             string
		surplus          bool
		current, desired int
		want             int
	}{
		{"block mode never opens", false, 9, 2, 0},
		{"surplus beyond desired", true, 9, 2, 7},
		{"at desired", true, 3, 3, 0},
		{"below desired", true, 1, 4, 0},
		{"no nodes", true, 0, 0, 0},
	}
	for _, tt := range tests {
		if got := Surplus(tt.surplus, tt.current, tt.desired); got != tt.want {
			t.Errorf("%s: Surplus(%v, %d, %d) = %d, want %d", tt.name, tt.surplus, tt.current, tt.desired, got, tt.want)
		}
	}
}

func TestDeriveJobsPerNode(t *testing.T) {
	runner := resources("2", "4Gi")
	tests := []struct {
		name     string
		requests corev1.ResourceList
		shapes   []corev1.ResourceList
		want     int
		wantOK   bool
	}{
		{"one node", runner, []corev1.ResourceList{resources("8", "32Gi")}, 4, true},
		{"min over nodes", runner, []corev1.ResourceList{resources("16", "64Gi"), resources("8", "64Gi"), resources("32", "128Gi")}, 4, true},
		{"min over cpu and memory per node", runner, []corev1.ResourceList{resources("16", "10Gi")}, 2, true},
		{"a node the runner does not fit counts as 1", runner, []corev1.ResourceList{resources("16", "64Gi"), resources("1", "64Gi")}, 1, true},
		{"node without the resource counts as 1", runner, []corev1.ResourceList{resources("16", "")}, 1, true},
		{"no shapes", runner, nil, 0, false},
		{"requests neither cpu nor memory", corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}, []corev1.ResourceList{resources("8", "32Gi")}, 0, false},
		{"no requests", nil, []corev1.ResourceList{resources("8", "32Gi")}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := DeriveJobsPerNode(tt.requests, tt.shapes)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("DeriveJobsPerNode() = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestAvailable(t *testing.T) {
	alloc := resources("7910m", "14Gi")
	got := Available(alloc, resources("1", "2Gi"), resources("100m", ""), corev1.ResourceList{"example.com/x": resource.MustParse("1")})
	if c := got[corev1.ResourceCPU]; c.Cmp(resource.MustParse("6810m")) != 0 {
		t.Errorf("cpu = %s, want 6810m", c.String())
	}
	if m := got[corev1.ResourceMemory]; m.Cmp(resource.MustParse("12Gi")) != 0 {
		t.Errorf("memory = %s, want 12Gi", m.String())
	}
	if _, ok := got["example.com/x"]; ok {
		t.Error("a resource the node does not have appeared")
	}
	if c := alloc[corev1.ResourceCPU]; c.Cmp(resource.MustParse("7910m")) != 0 {
		t.Errorf("the caller's allocatable was modified: %s", c.String())
	}
	over := Available(resources("1", "1Gi"), resources("2", "2Gi"))
	if c := over[corev1.ResourceCPU]; c.Sign() != 0 {
		t.Errorf("cpu below zero: %s", c.String())
	}
}

func TestEstimateAllocatable(t *testing.T) {
	tests := []struct {
		name        string
		vcpu        int32
		memoryMiB   int64
		maxPods     int32
		cpu, memory string
	}{
		// 8 vCPU: 60m + 10m + 2x5m + 4x2.5m = 90m reserved, as Karpenter reports for a 2xlarge.
		// 16384Mi - 1228 (7.5%) - (255 + 11x110) - 100 = 13591Mi.
		{"2xlarge", 8, 16384, 0, "7910m", "13591Mi"},
		{"1 vCPU", 1, 4096, 0, "940m", "2224Mi"},
		// 5 vCPU: 82.5m rounds up to 83m; 8192Mi - 614 - (255 + 11x58) - 100 = 6585Mi.
		{"half millicores round up", 5, 8192, 58, "4917m", "6585Mi"},
		{"tiny never negative", 1, 512, 0, "940m", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EstimateAllocatable(tt.vcpu, tt.memoryMiB, tt.maxPods)
			if c := got[corev1.ResourceCPU]; c.Cmp(resource.MustParse(tt.cpu)) != 0 {
				t.Errorf("cpu = %s, want %s", c.String(), tt.cpu)
			}
			if m := got[corev1.ResourceMemory]; m.Cmp(resource.MustParse(tt.memory)) != 0 {
				t.Errorf("memory = %s, want %s", m.String(), tt.memory)
			}
		})
	}
}
