package discovery

import (
	"slices"
	"testing"

	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

var (
	c6id2xl = InstanceType{Name: "c6id.2xlarge", Architectures: []string{"amd64"}, VCPU: 8, MemoryMiB: 16384,
		NVMeGB: 474, Category: "c", Family: "c6id", Generation: 6}
	m7gdL = InstanceType{Name: "m7gd.large", Architectures: []string{"arm64"}, VCPU: 2, MemoryMiB: 8192,
		NVMeGB: 118, Category: "m", Family: "m7gd", Generation: 7}
	// unlabeled has a name Karpenter cannot parse: no category/family/generation labels.
	unlabeled = InstanceType{Name: "weird", Architectures: []string{"amd64"}, NVMeGB: 100}
	noNVMe    = InstanceType{Name: "c6i.large", Architectures: []string{"amd64"}, Category: "c", Family: "c6i", Generation: 6}
)

func TestRequirementsAdmits(t *testing.T) {
	for _, tc := range []struct {
		desc string
		r    Requirements
		it   InstanceType
		want bool
	}{
		{"zero value admits NVMe", Requirements{}, c6id2xl, true},
		{"zero value rejects no NVMe (Gt 0)", Requirements{}, noNVMe, false},
		{"negative MinNVMeGB admits no NVMe", Requirements{MinNVMeGB: -1}, noNVMe, true},

		{"arch in", Requirements{Architectures: []string{"arm64", "amd64"}}, c6id2xl, true},
		{"arch not in", Requirements{Architectures: []string{"arm64"}}, c6id2xl, false},
		{"arch required, type has none", Requirements{Architectures: []string{"amd64"}}, InstanceType{Name: "mac2.metal", NVMeGB: 1}, false},

		{"category in", Requirements{Categories: []string{"c", "m"}}, c6id2xl, true},
		{"category not in", Requirements{Categories: []string{"m"}}, c6id2xl, false},
		{"category in, label absent", Requirements{Categories: []string{"c"}}, unlabeled, false},
		{"not category hit", Requirements{NotCategories: []string{"c"}}, c6id2xl, false},
		{"not category miss", Requirements{NotCategories: []string{"t"}}, c6id2xl, true},
		{"not category, label absent", Requirements{NotCategories: []string{"c"}}, unlabeled, true},

		{"family in", Requirements{Families: []string{"c6id"}}, c6id2xl, true},
		{"family is exact, not prefix", Requirements{Families: []string{"c6"}}, c6id2xl, false},
		{"family in, label absent", Requirements{Families: []string{"weird"}}, unlabeled, false},
		{"not family hit", Requirements{NotFamilies: []string{"c6id", "m7gd"}}, m7gdL, false},
		{"not family miss", Requirements{NotFamilies: []string{"c6id"}}, m7gdL, true},
		{"not family, label absent", Requirements{NotFamilies: []string{"c6id"}}, unlabeled, true},

		{"generation in", Requirements{Generations: []int{6, 7}}, c6id2xl, true},
		{"generation not in", Requirements{Generations: []int{7}}, c6id2xl, false},
		{"generation in, label absent", Requirements{Generations: []int{0}}, unlabeled, false},
		{"not generation hit", Requirements{NotGenerations: []int{6}}, c6id2xl, false},
		{"not generation miss", Requirements{NotGenerations: []int{5}}, c6id2xl, true},
		{"not generation, label absent", Requirements{NotGenerations: []int{6}}, unlabeled, true},

		{"min generation equal", Requirements{MinGeneration: 6}, c6id2xl, true},
		{"min generation above", Requirements{MinGeneration: 7}, c6id2xl, false},
		{"min generation below", Requirements{MinGeneration: 5}, m7gdL, true},
		{"min generation, label absent", Requirements{MinGeneration: 1}, unlabeled, false},

		{"nvme greater", Requirements{MinNVMeGB: 473}, c6id2xl, true},
		{"nvme equal is not greater", Requirements{MinNVMeGB: 474}, c6id2xl, false},
		{"nvme smaller", Requirements{MinNVMeGB: 200}, m7gdL, false},

		{"all fields together", Requirements{
			Architectures: []string{"arm64"}, Categories: []string{"m", "c"}, NotCategories: []string{"t"},
			Families: []string{"m7gd"}, NotFamilies: []string{"m7g"}, Generations: []int{7}, NotGenerations: []int{5},
			MinGeneration: 7, MinNVMeGB: 100,
		}, m7gdL, true},
		{"all fields but one", Requirements{
			Architectures: []string{"arm64"}, Categories: []string{"m", "c"}, Families: []string{"m7gd"},
			MinGeneration: 7, MinNVMeGB: 118,
		}, m7gdL, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := tc.r.Admits(tc.it); got != tc.want {
				t.Errorf("%+v.Admits(%s) = %v, want %v", tc.r, tc.it.Name, got, tc.want)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	all := catalogueTypes(ec2fake.DefaultCatalogue())
	names := func(ts []InstanceType) []string {
		out := []string{}
		for _, it := range ts {
			out = append(out, it.Name)
		}
		return out
	}
	for _, tc := range []struct {
		desc string
		r    Requirements
		want []string
	}{
		{"arm64 with at least 200 GB", Requirements{Architectures: []string{"arm64"}, MinNVMeGB: 200},
			[]string{"c7gd.2xlarge", "c7gd.4xlarge", "c7gd.xlarge", "m7gd.2xlarge", "m7gd.metal", "m7gd.xlarge"}},
		{"category i", Requirements{Categories: []string{"i"}},
			[]string{"i4i.2xlarge", "i4i.8xlarge", "i4i.large", "i4i.xlarge"}},
		{"gen 5 only", Requirements{Generations: []int{5}},
			[]string{"c5d.2xlarge", "c5d.9xlarge", "c5d.large", "c5d.xlarge", "m5d.4xlarge", "m5d.large", "m5d.xlarge"}},
		{"amd64, gen >= 6, not c/i/x, not r6id, > 400 GB", Requirements{
			Architectures: []string{"amd64"}, MinGeneration: 6, NotCategories: []string{"c", "i", "x"},
			NotFamilies: []string{"r6id"}, MinNVMeGB: 400,
		}, []string{"m6id.2xlarge", "m6id.4xlarge"}},
		{"nothing", Requirements{Families: []string{"c6i"}}, []string{}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := slices.Clone(all)
			got := names(Filter(tc.r, in))
			if !slices.Equal(got, tc.want) {
				t.Errorf("Filter = %v, want %v", got, tc.want)
			}
			if !slices.EqualFunc(in, all, equalType) {
				t.Error("Filter modified its input")
			}
		})
	}

	// The zero Requirements admit exactly the NVMe types, sorted.
	got := Filter(Requirements{}, all)
	if !slices.IsSortedFunc(got, func(a, b InstanceType) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	}) {
		t.Errorf("Filter output not sorted: %v", names(got))
	}
	for _, it := range got {
		if it.NVMeGB <= 0 {
			t.Errorf("Filter(Requirements{}) admitted %s without NVMe", it.Name)
		}
	}
	if want := wantNVMeNames(ec2fake.DefaultCatalogue()); !slices.Equal(names(got), want) {
		t.Errorf("Filter(Requirements{}) = %v, want %v", names(got), want)
	}
}

// wantNVMeNames is the independent statement of what discovery must find in a
// catalogue: NVMe instance store and an architecture Karpenter knows.
func wantNVMeNames(cat []ec2fake.InstanceType) []string {
	var out []string
	for _, c := range cat {
		nvme := len(c.Disks) > 0 && (c.NVMeSupport == "required" || c.NVMeSupport == "supported")
		known := slices.Contains(c.Architectures, "x86_64") || slices.Contains(c.Architectures, "arm64")
		if nvme && known {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out
}

func BenchmarkFilter(b *testing.B) {
	all := catalogueTypes(ec2fake.DefaultCatalogue())
	r := Requirements{
		Architectures: []string{"amd64"}, MinGeneration: 6, NotCategories: []string{"i"},
		NotFamilies: []string{"r6id"}, MinNVMeGB: 100,
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = Filter(r, all)
	}
}
