package policy

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
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
	// WarmWindows raise the floor on a schedule (e.g. office hours).
	WarmWindows []WarmWindow
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
}

// WarmWindow raises the warm minimum to Minimum for Duration after every start of Schedule.
type WarmWindow struct {
	// Schedule is a standard 5-field cron expression (minute hour day-of-month month day-of-week)
	// or a descriptor such as "@daily". "@every" and "TZ=" prefixes are rejected: the former has
	// no fixed start times, and the zone belongs in TimeZone.
	Schedule string
	// Duration is elapsed time from each start (> 0). Start is inclusive, end exclusive. It is
	// not wall-clock: a window spanning a DST change still lasts exactly Duration.
	Duration time.Duration
	// Minimum is the floor while the window is active (>= 0).
	Minimum int
	// TimeZone is an IANA zone name the Schedule is read in ("" means UTC). "Local" is rejected:
	// it would make the schedule depend on the controller host.
	TimeZone string
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
	return errs
}

// Validate reports every problem of one window under path. The config loader calls it too,
// so a window the policy would refuse is refused with the config, never accepted first.
func (w WarmWindow) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if _, err := parseSchedule(w.Schedule); err != nil {
		errs = append(errs, field.Invalid(path.Child("schedule"), w.Schedule, "must be a cron schedule: "+err.Error()))
	}
	if w.Duration <= 0 {
		errs = append(errs, field.Invalid(path.Child("duration"), w.Duration.String(), "must be > 0"))
	}
	if w.Minimum < 0 {
		errs = append(errs, field.Invalid(path.Child("minimum"), w.Minimum, "must be >= 0"))
	}
	if _, err := loadZone(w.TimeZone); err != nil {
		errs = append(errs, field.Invalid(path.Child("timeZone"), w.TimeZone, err.Error()))
	}
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
	return out
}
