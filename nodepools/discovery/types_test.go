package discovery

import (
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name             string
		category, family string
		generation       int
	}{
		{"c6id.large", "c", "c6id", 6},
		{"i4i.xlarge", "i", "i4i", 4},
		{"u-6tb1.56xlarge", "u", "u-6tb1", 1}, // "-6tb" is skipped, not the generation
		{"m7gd.metal", "m", "m7gd", 7},
		{"x2iedn.xlarge", "x", "x2iedn", 2},
		{"g4dn.8xlarge", "g", "g4dn", 4},
		{"m7i-flex.large", "m", "m7i-flex", 7},
		{"mac2-m2pro.metal", "mac", "mac2-m2pro", 2},
		{"c5d.18xlarge", "c", "c5d", 5},
		{"p4de.24xlarge", "p", "p4de", 4},
		{"u7in-32tb.224xlarge", "u", "u7in-32tb", 7},
		// Karpenter's regex needs a dot; its family needs exactly one.
		{"c6id", "", "", 0},
		{"c6id.large.extra", "c", "", 6},
		{"", "", "", 0},
		{"C6id.large", "", "C6id", 0}, // category is lower-case letters only
		{"c99999999999999999999999.large", "", "c99999999999999999999999", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f, g := ParseName(tc.name)
			if c != tc.category || f != tc.family || g != tc.generation {
				t.Errorf("ParseName(%q) = (%q, %q, %d), want (%q, %q, %d)",
					tc.name, c, f, g, tc.category, tc.family, tc.generation)
			}
		})
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"c6id.large", "u-6tb1.56xlarge", "m7gd.metal", "x2iedn.xlarge", "a.b.c", "-1tb2."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, fam, g := ParseName(name)
		if c != "" && !strings.HasPrefix(name, c) {
			t.Errorf("category %q is not a prefix of %q", c, name)
		}
		if g != 0 && c == "" {
			t.Errorf("generation %d without a category", g)
		}
		if g < 0 {
			t.Errorf("negative generation %d", g)
		}
		if fam != "" && (strings.Count(name, ".") != 1 || !strings.HasPrefix(name, fam+".")) {
			t.Errorf("family %q of %q", fam, name)
		}
	})
}

func TestFromEC2(t *testing.T) {
	storage := func(nvme ec2types.EphemeralNvmeSupport, gb int64) *ec2types.InstanceStorageInfo {
		return &ec2types.InstanceStorageInfo{NvmeSupport: nvme, TotalSizeInGB: aws.Int64(gb)}
	}
	for _, tc := range []struct {
		desc string
		in   ec2types.InstanceTypeInfo
		want InstanceType
	}{
		{
			desc: "nvme required",
			in: ec2types.InstanceTypeInfo{
				InstanceType:        "c6id.2xlarge",
				ProcessorInfo:       &ec2types.ProcessorInfo{SupportedArchitectures: []ec2types.ArchitectureType{"x86_64"}},
				VCpuInfo:            &ec2types.VCpuInfo{DefaultVCpus: aws.Int32(8)},
				MemoryInfo:          &ec2types.MemoryInfo{SizeInMiB: aws.Int64(16384)},
				InstanceStorageInfo: storage(ec2types.EphemeralNvmeSupportRequired, 474),
			},
			want: InstanceType{Name: "c6id.2xlarge", Architectures: []string{"amd64"}, VCPU: 8, MemoryMiB: 16384,
				NVMeGB: 474, Category: "c", Family: "c6id", Generation: 6},
		},
		{
			desc: "nvme supported, arm64",
			in: ec2types.InstanceTypeInfo{
				InstanceType:        "m7gd.metal",
				ProcessorInfo:       &ec2types.ProcessorInfo{SupportedArchitectures: []ec2types.ArchitectureType{"arm64"}},
				InstanceStorageInfo: storage(ec2types.EphemeralNvmeSupportSupported, 3800),
			},
			want: InstanceType{Name: "m7gd.metal", Architectures: []string{"arm64"}, NVMeGB: 3800,
				Category: "m", Family: "m7gd", Generation: 7},
		},
		{
			desc: "nvme unsupported is 0, i386 dropped",
			in: ec2types.InstanceTypeInfo{
				InstanceType:        "m3.medium",
				ProcessorInfo:       &ec2types.ProcessorInfo{SupportedArchitectures: []ec2types.ArchitectureType{"i386", "x86_64"}},
				InstanceStorageInfo: storage(ec2types.EphemeralNvmeSupportUnsupported, 4),
			},
			want: InstanceType{Name: "m3.medium", Architectures: []string{"amd64"}, Category: "m", Family: "m3", Generation: 3},
		},
		{
			desc: "mac architectures dropped, no storage",
			in: ec2types.InstanceTypeInfo{
				InstanceType:  "mac2.metal",
				ProcessorInfo: &ec2types.ProcessorInfo{SupportedArchitectures: []ec2types.ArchitectureType{"arm64_mac"}},
			},
			want: InstanceType{Name: "mac2.metal", Category: "mac", Family: "mac2", Generation: 2},
		},
		{
			desc: "missing nvmeSupport or size is 0, duplicate arch once",
			in: ec2types.InstanceTypeInfo{
				InstanceType:        "x2iedn.xlarge",
				ProcessorInfo:       &ec2types.ProcessorInfo{SupportedArchitectures: []ec2types.ArchitectureType{"x86_64", "x86_64"}},
				InstanceStorageInfo: &ec2types.InstanceStorageInfo{NvmeSupport: ec2types.EphemeralNvmeSupportRequired},
			},
			want: InstanceType{Name: "x2iedn.xlarge", Architectures: []string{"amd64"}, Category: "x", Family: "x2iedn", Generation: 2},
		},
		{
			desc: "empty info",
			in:   ec2types.InstanceTypeInfo{},
			want: InstanceType{},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got := fromEC2(tc.in)
			if !equalType(got, tc.want) {
				t.Errorf("fromEC2 = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func equalType(a, b InstanceType) bool {
	return a.Name == b.Name && slices.Equal(a.Architectures, b.Architectures) &&
		a.VCPU == b.VCPU && a.MemoryMiB == b.MemoryMiB && a.NVMeGB == b.NVMeGB &&
		a.Category == b.Category && a.Family == b.Family && a.Generation == b.Generation
}

// catalogueTypes converts the fake's catalogue the way EC2.List would,
// without HTTP, for pure tests and benchmarks.
func catalogueTypes(cat []ec2fake.InstanceType) []InstanceType {
	out := make([]InstanceType, 0, len(cat))
	for _, c := range cat {
		info := ec2types.InstanceTypeInfo{
			InstanceType:  ec2types.InstanceType(c.Name),
			ProcessorInfo: &ec2types.ProcessorInfo{},
			VCpuInfo:      &ec2types.VCpuInfo{DefaultVCpus: aws.Int32(c.VCPUs)},
			MemoryInfo:    &ec2types.MemoryInfo{SizeInMiB: aws.Int64(c.MemoryMiB)},
		}
		for _, a := range c.Architectures {
			info.ProcessorInfo.SupportedArchitectures = append(info.ProcessorInfo.SupportedArchitectures, ec2types.ArchitectureType(a))
		}
		if len(c.Disks) > 0 {
			info.InstanceStorageInfo = &ec2types.InstanceStorageInfo{
				NvmeSupport:   ec2types.EphemeralNvmeSupport(c.NVMeSupport),
				TotalSizeInGB: aws.Int64(c.TotalSizeGB()),
			}
		}
		out = append(out, fromEC2(info))
	}
	return out
}
