package config

// What a pool's nodes are: pools[].instance, limits, taint, labels and disruption.

import (
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateInstance(s *InstanceSelector, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	strs := func(in InNotIn[string], re *regexp.Regexp, name string) {
		for _, l := range []struct {
			name   string
			values []string
		}{{"in", in.In}, {"notIn", in.NotIn}} {
			for i, v := range l.values {
				if !re.MatchString(v) {
					errs = append(errs, field.Invalid(fp.Child(name, l.name).Index(i), v, "must match "+re.String()))
				}
			}
		}
		for i, v := range in.NotIn {
			if slices.Contains(in.In, v) {
				errs = append(errs, field.Invalid(fp.Child(name, "notIn").Index(i), v, "is also in the in list: no instance type could match"))
			}
		}
	}
	strs(s.Categories, categoryRE, "categories")
	strs(s.Families, familyRE, "families")
	for _, l := range []struct {
		name   string
		values []int
	}{{"in", s.Generations.In}, {"notIn", s.Generations.NotIn}} {
		for i, v := range l.values {
			if v < 1 {
				errs = append(errs, field.Invalid(fp.Child("generations", l.name).Index(i), v, "must be >= 1"))
			}
		}
	}
	for i, v := range s.Generations.NotIn {
		if slices.Contains(s.Generations.In, v) {
			errs = append(errs, field.Invalid(fp.Child("generations", "notIn").Index(i), v, "is also in the in list: no instance type could match"))
		}
	}
	if s.MinGeneration < 0 {
		errs = append(errs, field.Invalid(fp.Child("minGeneration"), s.MinGeneration, "must be >= 0"))
	}
	if s.MinGeneration > 0 && len(s.Generations.In) > 0 && slices.Max(s.Generations.In) < s.MinGeneration {
		errs = append(errs, field.Invalid(fp.Child("minGeneration"), s.MinGeneration, "is above every generation in generations.in: no instance type could match"))
	}
	return errs
}

func validateLimits(l *Limits, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if l.CPU != nil && l.CPU.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("cpu"), l.CPU.String(), "must be > 0"))
	}
	if l.Memory != nil && l.Memory.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("memory"), l.Memory.String(), "must be > 0"))
	}
	if l.Nodes != nil && *l.Nodes < 1 {
		errs = append(errs, field.Invalid(fp.Child("nodes"), *l.Nodes, "must be >= 1"))
	}
	return errs
}

func validateTaint(t *corev1.Taint, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsQualifiedName(t.Key) {
		errs = append(errs, field.Invalid(fp.Child("key"), t.Key, msg))
	}
	for _, msg := range validation.IsValidLabelValue(t.Value) {
		errs = append(errs, field.Invalid(fp.Child("value"), t.Value, msg))
	}
	if !taintEffects.Has(t.Effect) {
		errs = append(errs, field.NotSupported(fp.Child("effect"), t.Effect, sets.List(taintEffects)))
	}
	return errs
}

// validateLabelMap is metav1validation.ValidateLabels in key order (it ranges over the map, so
// its errors come in random order), each error naming its key.
func validateLabelMap(labels map[string]string, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range sets.List(sets.KeySet(labels)) {
		errs = append(errs, metav1validation.ValidateLabelName(k, fp.Key(k))...)
		for _, msg := range validation.IsValidLabelValue(labels[k]) {
			errs = append(errs, field.Invalid(fp.Key(k), labels[k], msg))
		}
	}
	return errs
}

func validateLabels(labels map[string]string, fp *field.Path) field.ErrorList {
	errs := validateLabelMap(labels, fp)
	for _, k := range sets.List(sets.KeySet(labels)) {
		domain, _, ok := strings.Cut(k, "/")
		if !ok {
			continue
		}
		for _, reserved := range reservedLabelDomains {
			if domain == reserved || strings.HasSuffix(domain, "."+reserved) {
				errs = append(errs, field.Invalid(fp.Key(k), k, "label domain "+reserved+" is reserved"))
			}
		}
	}
	return errs
}

func validateDisruption(d *Disruption, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !consolidation.Has(d.ConsolidationPolicy) {
		errs = append(errs, field.NotSupported(fp.Child("consolidationPolicy"), d.ConsolidationPolicy, sets.List(consolidation)))
	}
	if ca := d.ConsolidateAfter; ca != nil && ca.Duration != nil && *ca.Duration < 0 {
		errs = append(errs, field.Invalid(fp.Child("consolidateAfter"), ca.Duration.String(), `must be >= 0 or "Never"`))
	}
	for i, b := range d.Budgets {
		bp := fp.Child("budgets").Index(i)
		if !budgetNodesRE.MatchString(b.Nodes) {
			errs = append(errs, field.Invalid(bp.Child("nodes"), b.Nodes, `must be a count ("2") or a percentage ("10%")`))
		}
		errs = append(errs, validateEnum(b.Reasons, budgetReasons, bp.Child("reasons"))...)
		if (b.Schedule == nil) != (b.Duration == nil) {
			errs = append(errs, field.Required(bp.Child("duration"), "schedule and duration go together"))
		}
		if b.Schedule != nil {
			if _, err := parseCron(*b.Schedule, "Karpenter reads budget schedules in UTC"); err != nil {
				errs = append(errs, field.Invalid(bp.Child("schedule"), *b.Schedule, "must be a cron schedule: "+err.Error()))
			}
		}
	}
	return errs
}
