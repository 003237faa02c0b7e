package discovery

import (
	"slices"
	"strings"
)

// Requirements is what one pool admits; empty lists mean "any".
//
// Each field corresponds to one Karpenter NodePool requirement and is matched
// the way Karpenter matches labels: an In-style list (Categories, Families,
// Generations, Architectures) or MinGeneration rejects a type that has no such
// label (Category "", Family "", Generation 0); a NotIn-style list admits it.
type Requirements struct {
	Architectures               []string // kubernetes.io/arch In
	Categories, NotCategories   []string // karpenter.k8s.aws/instance-category In / NotIn
	Families, NotFamilies       []string // karpenter.k8s.aws/instance-family In / NotIn
	Generations, NotGenerations []int    // karpenter.k8s.aws/instance-generation In / NotIn
	MinGeneration               int      // 0 = any; admits Generation >= MinGeneration
	// MinNVMeGB admits NVMeGB > MinNVMeGB, like the Karpenter requirement
	// karpenter.k8s.aws/instance-local-nvme Gt. The zero value therefore still
	// demands some local NVMe; a negative value admits types without it.
	MinNVMeGB int64
}

// Admits reports whether a node of type it satisfies every requirement.
func (r Requirements) Admits(it InstanceType) bool {
	if len(r.Architectures) > 0 && !slices.ContainsFunc(it.Architectures, func(a string) bool {
		return slices.Contains(r.Architectures, a)
	}) {
		return false
	}
	if !inNotIn(r.Categories, r.NotCategories, it.Category, it.Category != "") ||
		!inNotIn(r.Families, r.NotFamilies, it.Family, it.Family != "") ||
		!inNotIn(r.Generations, r.NotGenerations, it.Generation, it.Generation != 0) {
		return false
	}
	if r.MinGeneration > 0 && (it.Generation == 0 || it.Generation < r.MinGeneration) {
		return false
	}
	return it.NVMeGB > r.MinNVMeGB
}

// inNotIn applies an In list and a NotIn list to one label value; present is
// false when Karpenter would not set the label at all.
func inNotIn[T comparable](in, notIn []T, v T, present bool) bool {
	if len(in) > 0 && (!present || !slices.Contains(in, v)) {
		return false
	}
	return !present || !slices.Contains(notIn, v)
}

// Filter returns the types r admits, sorted by name. The input is not modified.
func Filter(r Requirements, types []InstanceType) []InstanceType {
	out := make([]InstanceType, 0, len(types))
	for _, it := range types {
		if r.Admits(it) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b InstanceType) int { return strings.Compare(a.Name, b.Name) })
	return out
}
