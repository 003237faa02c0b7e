// Package discovery finds EC2 instance types with local NVMe instance storage
// and decides which of them a warmpool NodePool admits.
//
// The labels it computes (category, family, generation, local NVMe size,
// architecture) follow karpenter-provider-aws v1.14.1
// pkg/providers/instancetype/types.go, so that what this package admits is what
// Karpenter will match for the same NodePool requirements.
package discovery

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// InstanceType is the subset of an EC2 instance type that pool generation needs.
type InstanceType struct {
	Name string // "c6id.2xlarge"
	// Architectures in Kubernetes naming ("amd64", "arm64"); EC2 architectures
	// Karpenter does not know (i386, x86_64_mac, arm64_mac) are dropped.
	Architectures []string
	VCPU          int32
	MemoryMiB     int64
	// NVMeGB is InstanceStorageInfo.TotalSizeInGB when the instance store is
	// NVMe ("required" or "supported"), else 0. It is the value of Karpenter's
	// karpenter.k8s.aws/instance-local-nvme label.
	NVMeGB int64
	// Category ("c"), Family ("c6id") and Generation (6) are the values of
	// Karpenter's instance-category/-family/-generation labels. Empty or 0
	// means Karpenter sets no such label for this name.
	Category, Family string
	Generation       int
}

// instanceTypeScheme is copied from karpenter-provider-aws types.go: leading
// letters are the category, an optional "-<n>tb" (u-6tb1) is skipped, the next
// digits are the generation, and a dot must follow somewhere.
var instanceTypeScheme = regexp.MustCompile(`(^[a-z]+)(\-[0-9]+tb)?([0-9]+).*\.`)

// ParseName splits an EC2 instance type name the way Karpenter labels it:
// "c6id.large" is category "c", family "c6id", generation 6; "u-6tb1.56xlarge"
// is "u", "u-6tb1", 1. Parts Karpenter would not label come back empty or 0.
func ParseName(name string) (category, family string, generation int) {
	if m := instanceTypeScheme.FindStringSubmatch(name); len(m) == 4 {
		// A generation too large for int cannot be a real one; treat it like
		// a missing label rather than failing the whole discovery.
		if g, err := strconv.Atoi(m[3]); err == nil {
			category, generation = m[1], g
		}
	}
	// Karpenter sets the family only for names with exactly one dot.
	if parts := strings.Split(name, "."); len(parts) == 2 {
		family = parts[0]
	}
	return category, family, generation
}

// awsToKubeArchitectures mirrors karpenter-provider-aws v1.AWSToKubeArchitectures.
var awsToKubeArchitectures = map[ec2types.ArchitectureType]string{
	ec2types.ArchitectureTypeX8664: "amd64",
	ec2types.ArchitectureTypeArm64: "arm64",
}

// fromEC2 converts one DescribeInstanceTypes item.
func fromEC2(info ec2types.InstanceTypeInfo) InstanceType {
	it := InstanceType{Name: string(info.InstanceType)}
	it.Category, it.Family, it.Generation = ParseName(it.Name)
	if info.ProcessorInfo != nil {
		for _, a := range info.ProcessorInfo.SupportedArchitectures {
			k, ok := awsToKubeArchitectures[a]
			if !ok || slices.Contains(it.Architectures, k) {
				continue
			}
			it.Architectures = append(it.Architectures, k)
		}
	}
	if info.VCpuInfo != nil && info.VCpuInfo.DefaultVCpus != nil {
		it.VCPU = *info.VCpuInfo.DefaultVCpus
	}
	if info.MemoryInfo != nil && info.MemoryInfo.SizeInMiB != nil {
		it.MemoryMiB = *info.MemoryInfo.SizeInMiB
	}
	if s := info.InstanceStorageInfo; s != nil && s.TotalSizeInGB != nil {
		switch s.NvmeSupport {
		case ec2types.EphemeralNvmeSupportRequired, ec2types.EphemeralNvmeSupportSupported:
			it.NVMeGB = *s.TotalSizeInGB
		}
	}
	return it
}
