package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
	// Embedded so a controller image without /usr/share/zoneinfo (distroless, scratch) still
	// resolves warmWindows[].timeZone; otherwise every zoned window fails validation there.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The one cron parser of the config: disruption budget schedules (which Karpenter reads) and
// warm window schedules (which the scaling policy reads) both go through parseCron.

// cronParser accepts exactly the standard 5 fields plus descriptors (@daily, @weekly, ...):
// robfig/cron's ParseStandard, which is also what Karpenter parses budget schedules with.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// referenceTime anchors the "does this schedule ever fire" check. Any fixed instant works; a
// fixed one keeps validation deterministic.
var referenceTime = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// parseCron parses a standard cron schedule. A TZ= or CRON_TZ= prefix is refused up front:
// robfig/cron panics on one without a following space ("TZ=UTC"), and the zone belongs
// elsewhere (zoneHint says where).
func parseCron(spec, zoneHint string) (cron.Schedule, error) {
	if t := strings.TrimSpace(spec); strings.HasPrefix(t, "TZ=") || strings.HasPrefix(t, "CRON_TZ=") {
		return nil, fmt.Errorf("no TZ= prefix (%s)", zoneHint)
	}
	return cronParser.Parse(spec)
}

// ParseWindowSchedule parses a warm window's schedule: a standard cron expression or a
// descriptor with fixed start times that fires at least once. "@every" has no fixed start
// times (it runs relative to when it was started), so "active at t" cannot be answered for it.
func ParseWindowSchedule(spec string) (*cron.SpecSchedule, error) {
	trimmed := strings.TrimSpace(spec)
	if trimmed == "" {
		return nil, errors.New("empty")
	}
	s, err := parseCron(trimmed, "set timeZone instead")
	if err != nil {
		return nil, err
	}
	spec5, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, errors.New("@every has no fixed start times; use a cron expression")
	}
	// robfig/cron gives up after five years without a match (e.g. "0 0 30 2 *"); such a window
	// would silently never open, so reject it.
	if spec5.Next(referenceTime).IsZero() {
		return nil, errors.New("never fires (no such date)")
	}
	return spec5, nil
}

// LoadZone resolves a warm window's time zone: an IANA name, "" for UTC. "Local" is refused:
// it would make the schedule depend on the controller's host.
func LoadZone(name string) (*time.Location, error) {
	switch name {
	case "":
		return time.UTC, nil
	case "Local":
		return nil, errors.New(`must be an IANA time zone ("Local" depends on the controller's host)`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, errors.New("must be an IANA time zone")
	}
	return loc, nil
}

// Validate reports every problem of one warm window under path: what the scaling policy could
// not compile (see ParseWindowSchedule, LoadZone) is refused with the config, never accepted
// first. Bounds that depend on the pool (minimum <= maxNodes) are checked by the pool.
func (w WarmWindow) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if _, err := ParseWindowSchedule(w.Schedule); err != nil {
		errs = append(errs, field.Invalid(path.Child("schedule"), w.Schedule, "must be a cron schedule: "+err.Error()))
	}
	if w.Duration.Duration <= 0 {
		errs = append(errs, field.Invalid(path.Child("duration"), w.Duration.Duration.String(), "must be > 0"))
	}
	if w.Minimum < 0 {
		errs = append(errs, field.Invalid(path.Child("minimum"), w.Minimum, "must be >= 0"))
	}
	if _, err := LoadZone(w.TimeZone); err != nil {
		errs = append(errs, field.Invalid(path.Child("timeZone"), w.TimeZone, err.Error()))
	}
	return errs
}
