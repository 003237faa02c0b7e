package nodepools

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools/discovery"
)

// DiscoveryRequirements states a pool's instance requirements as the discovery filter reads
// them; it mirrors Requirements, so what EC2 admits is what Karpenter can launch.
func DiscoveryRequirements(p *config.Pool) discovery.Requirements {
	return discovery.Requirements{
		Architectures:  p.Architectures,
		Categories:     p.Instance.Categories.In,
		NotCategories:  p.Instance.Categories.NotIn,
		Families:       p.Instance.Families.In,
		NotFamilies:    p.Instance.Families.NotIn,
		Generations:    p.Instance.Generations.In,
		NotGenerations: p.Instance.Generations.NotIn,
		MinGeneration:  p.Instance.MinGeneration,
		MinNVMeGB:      p.NVMe.MinSizeGB,
	}
}

// Admitted lists, per pool name, the instance types the pool admits.
func Admitted(cfg *config.Config, types []discovery.InstanceType) map[string][]discovery.InstanceType {
	out := make(map[string][]discovery.InstanceType, len(cfg.Pools))
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		out[p.Name] = discovery.Filter(DiscoveryRequirements(p), types)
	}
	return out
}

// CheckAdmitted reports each pool that admits no instance type in the region: Karpenter would
// accept such a NodePool and then never launch a node for it.
func CheckAdmitted(cfg *config.Config, types []discovery.InstanceType) field.ErrorList {
	var errs field.ErrorList
	admitted := Admitted(cfg, types)
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		if len(admitted[p.Name]) == 0 {
			errs = append(errs, field.Invalid(field.NewPath("pools").Index(i), p.Name,
				fmt.Sprintf("no instance type in the region meets this pool's requirements (%d types with NVMe seen; check nvme.minSizeGB, architectures and instance)", len(types))))
		}
	}
	return errs
}
