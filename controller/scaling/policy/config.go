package policy

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/controller/config"
)

// DefaultScaleDownStabilization is the window used when Config.ScaleDownStabilization is zero. It is
// the HPA's default scale-down stabilization (300 s): long enough to ride out the gap between two
// CI jobs of one pipeline, short enough that idle nodes do not linger.
const DefaultScaleDownStabilization = 5 * time.Minute

// Config is one pool's scaling policy. The zero value is not valid: JobsPerNode must be set.
type Config struct {
	// JobsPerNode is how many CI jobs one node runs at once (>= 1). When it is not configured,
	// derive it with JobsPerNode(runnerRequests, nodeAllocatable).
	JobsPerNode int
	// WarmMinimum is the constant floor of desired nodes (>= 0).
	WarmMinimum int
	// WarmWindows raise the floor to each one's Minimum for Duration after every start of its
	// Schedule (e.g. office hours); see config.WarmWindow.Validate for what is accepted.
	WarmWindows []config.WarmWindow
	// MaxNodes is the hard ceiling (>= 0). It wins over WarmMinimum and window minimums; a minimum
	// above it is accepted but reported by Warnings, because a pool limit lowered on purpose must
	// not be overridden by a stale warm setting.
	MaxNodes int
	// ScaleDownStabilization is the look-back window for scale-down (>= 0; 0 means
	// DefaultScaleDownStabilization). To make scale-down effectively immediate, set it shorter
	// than the evaluation interval (e.g. time.Second).
	ScaleDownStabilization time.Duration
	// ScaleDownStep caps how many nodes one evaluation may remove (>= 0; 0 means no cap).
	ScaleDownStep int
	// Spare keeps idle nodes above demand (see Spare); the zero value keeps none.
	Spare Spare
	// BurstHold keeps a share of a recent burst's nodes (see BurstHold); the zero value keeps none.
	BurstHold BurstHold
}

// stabilization returns the effective scale-down stabilization window.
func (c Config) stabilization() time.Duration {
	if c.ScaleDownStabilization == 0 {
		return DefaultScaleDownStabilization
	}
	return c.ScaleDownStabilization
}

// Validate reports every problem in c at once, with field paths under path (nil is fine), so a
// config loader can nest them, e.g. field.NewPath("pools").Index(i).Child("scaling").
func (c Config) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.JobsPerNode < 1 {
		errs = append(errs, field.Invalid(path.Child("jobsPerNode"), c.JobsPerNode, "must be at least 1"))
	}
	if c.WarmMinimum < 0 {
		errs = append(errs, field.Invalid(path.Child("warmMinimum"), c.WarmMinimum, "must not be negative"))
	}
	if c.MaxNodes < 0 {
		errs = append(errs, field.Invalid(path.Child("maxNodes"), c.MaxNodes, "must not be negative"))
	}
	if c.ScaleDownStabilization < 0 {
		errs = append(errs, field.Invalid(path.Child("scaleDownStabilization"), c.ScaleDownStabilization.String(), "must not be negative"))
	}
	if c.ScaleDownStep < 0 {
		errs = append(errs, field.Invalid(path.Child("scaleDownStep"), c.ScaleDownStep, "must not be negative"))
	}
	for i, w := range c.WarmWindows {
		errs = append(errs, w.Validate(path.Child("warmWindows").Index(i))...)
	}
	errs = append(errs, c.validateSpare(path)...)
	errs = append(errs, c.BurstHold.Validate(path.Child("burstHold"))...)
	return errs
}

// Warnings lists settings that are valid but will not do what they say: minimums above MaxNodes
// (MaxNodes wins). Surface them as a config Event; they are not errors because lowering MaxNodes
// is a legitimate emergency brake.
func (c Config) Warnings() []string {
	var out []string
	if c.WarmMinimum > c.MaxNodes {
		out = append(out, fmt.Sprintf("warmMinimum %d is above maxNodes %d; maxNodes wins", c.WarmMinimum, c.MaxNodes))
	}
	for i, w := range c.WarmWindows {
		if w.Minimum > c.MaxNodes {
			out = append(out, fmt.Sprintf("warmWindows[%d].minimum %d is above maxNodes %d; maxNodes wins", i, w.Minimum, c.MaxNodes))
		}
	}
	out = append(out, c.spareWarnings()...)
	return out
}
