package policy

import (
	"time"

	"github.com/robfig/cron/v3"

	"warmpool.io/warmpool/controller/config"
)

// warmWindow is a config.WarmWindow parsed once, by the config's own parser: what validation
// accepts is exactly what the policy can compile.
type warmWindow struct {
	schedule *cron.SpecSchedule
	duration time.Duration
	minimum  int
	loc      *time.Location
}

func compileWindow(w config.WarmWindow) (warmWindow, error) {
	s, err := config.ParseWindowSchedule(w.Schedule)
	if err != nil {
		return warmWindow{}, err
	}
	loc, err := config.LoadZone(w.TimeZone)
	if err != nil {
		return warmWindow{}, err
	}
	return warmWindow{schedule: s, duration: w.Duration.Duration, minimum: w.Minimum, loc: loc}, nil
}

// activeAt reports whether some start s of the schedule has s <= t < s+duration.
//
// cron only searches forward, so look for the first start strictly after t-duration: the window
// is active iff that start is not after t. This makes the start inclusive and the end exclusive.
// The search runs in the window's zone, so "0 9 * * 1-5" means 09:00 local on both sides of DST.
// The duration is elapsed time, not wall-clock: a window spanning a DST change still lasts
// exactly its duration.
// Known robfig/cron behaviour at DST changes: a start inside the skipped spring-forward hour does
// not fire that day, and one inside the repeated fall-back hour fires twice (harmless here).
func (w warmWindow) activeAt(t time.Time) bool {
	start := w.schedule.Next(t.Add(-w.duration).In(w.loc))
	return !start.IsZero() && !start.After(t)
}
