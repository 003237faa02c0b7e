package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

// AWS label keys the KWOK provider is taught about through offering requirements, so NodePool
// requirements on them are matched for real and the chosen values end up as Node labels.
const (
	LabelInstanceLocalNVMe  = "karpenter.k8s.aws/instance-local-nvme"
	LabelInstanceCategory   = "karpenter.k8s.aws/instance-category"
	LabelInstanceFamily     = "karpenter.k8s.aws/instance-family"
	LabelInstanceGeneration = "karpenter.k8s.aws/instance-generation"
	LabelInstanceCPU        = "karpenter.k8s.aws/instance-cpu"
	LabelInstanceMemory     = "karpenter.k8s.aws/instance-memory" // MiB, as on AWS
)

// Zones every instance type is offered in, spot and on-demand each.
var Zones = []string{"us-west-2a", "us-west-2b"}

// InstanceType describes one fake, AWS-like instance type for Karpenter's KWOK provider.
type InstanceType struct {
	Name         string
	Arch         string // amd64 | arm64
	CPU          int
	MemoryGiB    int
	NVMeGB       int // total instance-store NVMe; 0 = none
	Category     string
	Family       string
	Generation   int
	PricePerHour float64 // on-demand; spot is offered at 40% of it
}

// DefaultInstanceTypes returns AWS-like NVMe types (sizes and on-demand prices of us-west-2)
// plus two without NVMe (c6i.xlarge, m7g.xlarge), which are also the cheapest, so a pool that
// forgets its NVMe requirement visibly gets the wrong kind of node.
func DefaultInstanceTypes() []InstanceType {
	return []InstanceType{
		{"c6id.xlarge", "amd64", 4, 8, 237, "c", "c6id", 6, 0.2016},
		{"c6id.2xlarge", "amd64", 8, 16, 474, "c", "c6id", 6, 0.4032},
		{"c6id.4xlarge", "amd64", 16, 32, 950, "c", "c6id", 6, 0.8064},
		{"c6id.8xlarge", "amd64", 32, 64, 1900, "c", "c6id", 6, 1.6128},
		{"m6id.xlarge", "amd64", 4, 16, 237, "m", "m6id", 6, 0.2373},
		{"m6id.2xlarge", "amd64", 8, 32, 474, "m", "m6id", 6, 0.4746},
		{"m6id.4xlarge", "amd64", 16, 64, 950, "m", "m6id", 6, 0.9492},
		{"c7gd.xlarge", "arm64", 4, 8, 237, "c", "c7gd", 7, 0.1814},
		{"c7gd.2xlarge", "arm64", 8, 16, 474, "c", "c7gd", 7, 0.3629},
		{"m7gd.xlarge", "arm64", 4, 16, 237, "m", "m7gd", 7, 0.2136},
		{"m7gd.2xlarge", "arm64", 8, 32, 474, "m", "m7gd", 7, 0.4271},
		{"i4i.xlarge", "amd64", 4, 32, 937, "i", "i4i", 4, 0.3432},
		{"i4i.2xlarge", "amd64", 8, 64, 1875, "i", "i4i", 4, 0.6864},
		{"c6i.xlarge", "amd64", 4, 8, 0, "c", "c6i", 6, 0.17},
		{"m7g.xlarge", "arm64", 4, 16, 0, "m", "m7g", 7, 0.1632},
	}
}

// kwokInstanceType mirrors sigs.k8s.io/karpenter/kwok/cloudprovider.InstanceTypeOptions, the
// JSON the KWOK provider reads from INSTANCE_TYPES_FILE_PATH.
type kwokInstanceType struct {
	Name             string            `json:"name"`
	Offerings        []kwokOffering    `json:"offerings"`
	Architecture     string            `json:"architecture"`
	OperatingSystems []string          `json:"operatingSystems"`
	Resources        map[string]string `json:"resources"`
}

// kwokOffering mirrors kwok's KWOKOffering: the embedded cloudprovider.Offering has no JSON
// tags, hence the capitalised keys.
type kwokOffering struct {
	Price        float64                          `json:"Price"`
	Available    bool                             `json:"Available"`
	Requirements []corev1.NodeSelectorRequirement `json:"Requirements"`
}

// MarshalInstanceTypes renders types in the KWOK provider's instance-types file format.
func MarshalInstanceTypes(types []InstanceType) ([]byte, error) {
	out := make([]kwokInstanceType, 0, len(types))
	for _, it := range types {
		if it.Name == "" || it.CPU <= 0 || it.MemoryGiB <= 0 || (it.Arch != "amd64" && it.Arch != "arm64") {
			return nil, fmt.Errorf("instance type %q: need a name, CPU, memory and arch amd64|arm64", it.Name)
		}
		ephemeral := "20Gi" // the EBS root volume
		if it.NVMeGB > 0 {
			// On EKS AMIs with instanceStorePolicy RAID0 the kubelet's dirs live on the NVMe array.
			ephemeral = strconv.Itoa(it.NVMeGB) + "G"
		}
		kit := kwokInstanceType{
			Name:             it.Name,
			Architecture:     it.Arch,
			OperatingSystems: []string{string(corev1.Linux)},
			Resources: map[string]string{
				string(corev1.ResourceCPU):              strconv.Itoa(it.CPU),
				string(corev1.ResourceMemory):           strconv.Itoa(it.MemoryGiB) + "Gi",
				string(corev1.ResourceEphemeralStorage): ephemeral,
				string(corev1.ResourcePods):             "110",
			},
		}
		for _, zone := range Zones {
			for _, ct := range []struct {
				name  string
				price float64
			}{{karpv1.CapacityTypeSpot, it.PricePerHour * 0.4}, {karpv1.CapacityTypeOnDemand, it.PricePerHour}} {
				kit.Offerings = append(kit.Offerings, kwokOffering{
					Price:        ct.price,
					Available:    true,
					Requirements: offeringRequirements(it, zone, ct.name),
				})
			}
		}
		out = append(out, kit)
	}
	return json.MarshalIndent(out, "", "  ")
}

// offeringRequirements carries the AWS labels. The KWOK provider only knows instance-type
// requirements for its own karpenter.kwok.sh labels, so ours go on every offering: single-valued
// In requirements become Node labels, and all keys become well-known to its scheduler.
func offeringRequirements(it InstanceType, zone, capacityType string) []corev1.NodeSelectorRequirement {
	in := func(key, value string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: []string{value}}
	}
	reqs := []corev1.NodeSelectorRequirement{
		in(karpv1.CapacityTypeLabelKey, capacityType),
		in(corev1.LabelTopologyZone, zone),
		in(corev1.LabelArchStable, it.Arch),
		in(LabelInstanceCategory, it.Category),
		in(LabelInstanceFamily, it.Family),
		in(LabelInstanceGeneration, strconv.Itoa(it.Generation)),
		in(LabelInstanceCPU, strconv.Itoa(it.CPU)),
		in(LabelInstanceMemory, strconv.Itoa(it.MemoryGiB*1024)),
	}
	if it.NVMeGB > 0 {
		reqs = append(reqs, in(LabelInstanceLocalNVMe, strconv.Itoa(it.NVMeGB)))
	} else {
		// Without this, an offering that lacks the key counts as compatible with
		// "instance-local-nvme Gt 100" (Karpenter allows undefined well-known labels), and the
		// cheaper non-NVMe types would win. AWS's provider models "no NVMe" the same way.
		reqs = append(reqs, corev1.NodeSelectorRequirement{Key: LabelInstanceLocalNVMe, Operator: corev1.NodeSelectorOpDoesNotExist})
	}
	return reqs
}

func writeInstanceTypes(path string, types []InstanceType) error {
	data, err := MarshalInstanceTypes(types)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing instance types: %w", err)
	}
	return nil
}
