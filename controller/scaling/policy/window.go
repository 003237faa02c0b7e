package policy

import (
	"errors"
	"strings"
	"time"
	// Embedded so a controller image without /usr/share/zoneinfo (distroless, scratch) still
	// resolves the windows' IANA zones; otherwise every zoned window would fail validation there.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"
)

// scheduleParser accepts exactly the standard 5 fields plus descriptors (@daily, @weekly, ...).
var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// referenceTime anchors the "does this schedule ever fire" check in validation. Any fixed instant
// works; a fixed one keeps validation deterministic.
var referenceTime = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

func parseSchedule(spec string) (*cron.SpecSchedule, error) {
	trimmed := strings.TrimSpace(spec)
	if trimmed == "" {
		return nil, errors.New("empty")
	}
	if strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ=") {
		return nil, errors.New("no TZ= prefix (set timeZone instead)")
	}
	s, err := scheduleParser.Parse(trimmed)
	if err != nil {
		return nil, err
	}
	spec5, ok := s.(*cron.SpecSchedule)
	if !ok {
		// @every yields a ConstantDelaySchedule, which runs relative to when it was started and so
		// has no fixed start times to test "active at t" against.
		return nil, errors.New("@every has no fixed start times; use a cron expression")
	}
	// robfig/cron gives up after five years without a match (e.g. "0 0 30 2 *"); such a window
	// would silently never open, so reject it.
	if spec5.Next(referenceTime).IsZero() {
		return nil, errors.New("never fires (no such date)")
	}
	return spec5, nil
}

func loadZone(name string) (*time.Location, error) {
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

// warmWindow is a WarmWindow parsed once.
type warmWindow struct {
	schedule *cron.SpecSchedule
	duration time.Duration
	minimum  int
	loc      *time.Location
}

func compileWindow(w WarmWindow) (warmWindow, error) {
	s, err := parseSchedule(w.Schedule)
	if err != nil {
		return warmWindow{}, err
	}
	loc, err := loadZone(w.TimeZone)
	if err != nil {
		return warmWindow{}, err
	}
	return warmWindow{schedule: s, duration: w.Duration, minimum: w.Minimum, loc: loc}, nil
}

// activeAt reports whether some start s of the schedule has s <= t < s+duration.
//
// cron only searches forward, so look for the first start strictly after t-duration: the window
// is active iff that start is not after t. This makes the start inclusive and the end exclusive.
// The search runs in the window's zone, so "0 9 * * 1-5" means 09:00 local on both sides of DST.
// Known robfig/cron behaviour at DST changes: a start inside the skipped spring-forward hour does
// not fire that day, and one inside the repeated fall-back hour fires twice (harmless here).
func (w warmWindow) activeAt(t time.Time) bool {
	start := w.schedule.Next(t.Add(-w.duration).In(w.loc))
	return !start.IsZero() && !start.After(t)
}
