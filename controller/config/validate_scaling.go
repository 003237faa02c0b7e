package config

// The scaling section: pools[].scaling.

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateScaling(p *Pool, fp *field.Path) field.ErrorList {
	s := &p.Scaling
	var errs field.ErrorList
	if s.JobsPerNode < 0 {
		errs = append(errs, field.Invalid(fp.Child("jobsPerNode"), s.JobsPerNode, "must be >= 0 (0 derives it from runnerRequests)"))
	}
	for _, name := range sets.List(sets.KeySet(s.RunnerRequests)) {
		if q := s.RunnerRequests[name]; q.Sign() <= 0 {
			errs = append(errs, field.Invalid(fp.Child("runnerRequests").Key(string(name)), q.String(), "must be > 0"))
		}
	}
	if s.WarmMinimum < 0 {
		errs = append(errs, field.Invalid(fp.Child("warmMinimum"), s.WarmMinimum, "must be >= 0"))
	}
	if s.MaxNodes != nil {
		if *s.MaxNodes < 1 {
			errs = append(errs, field.Invalid(fp.Child("maxNodes"), *s.MaxNodes, "must be >= 1"))
		}
		if p.Limits.Nodes != nil && int64(*s.MaxNodes) > *p.Limits.Nodes {
			errs = append(errs, field.Invalid(fp.Child("maxNodes"), *s.MaxNodes, fmt.Sprintf("must be <= limits.nodes (%d)", *p.Limits.Nodes)))
		}
		if s.WarmMinimum > *s.MaxNodes {
			errs = append(errs, field.Invalid(fp.Child("warmMinimum"), s.WarmMinimum, fmt.Sprintf("must be <= maxNodes (%d)", *s.MaxNodes)))
		}
	}
	for i, w := range s.WarmWindows {
		wp := fp.Child("warmWindows").Index(i)
		// What the policy would refuse to compile (@every, "Local", a schedule that never fires)
		// is refused here, with the config, while the last good one stays.
		errs = append(errs, w.Validate(wp)...)
		if s.MaxNodes != nil && w.Minimum > *s.MaxNodes {
			errs = append(errs, field.Invalid(wp.Child("minimum"), w.Minimum, fmt.Sprintf("must be <= maxNodes (%d)", *s.MaxNodes)))
		}
	}
	if d := s.ScaleDownStabilization.Duration; d < 0 {
		errs = append(errs, field.Invalid(fp.Child("scaleDownStabilization"), d.String(), "must be >= 0"))
	}
	if s.ScaleDownStep < 0 {
		errs = append(errs, field.Invalid(fp.Child("scaleDownStep"), s.ScaleDownStep, "must be >= 0 (0 = unlimited)"))
	}
	if !headroomKinds.Has(s.Headroom) {
		errs = append(errs, field.NotSupported(fp.Child("headroom"), s.Headroom, sets.List(headroomKinds)))
	}
	if !busyBudgets.Has(s.BusyBudget) {
		errs = append(errs, field.NotSupported(fp.Child("busyBudget"), s.BusyBudget, sets.List(busyBudgets)))
	}
	errs = append(errs, validateSpare(p, fp)...)                                          // validate_spare.go
	errs = append(errs, ValidateBurstHoldSettings(s.BurstHold, fp.Child("burstHold"))...) // validate_burst.go
	return errs
}
