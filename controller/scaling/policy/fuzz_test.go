package policy

import (
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

// FuzzWarmWindow: any window config either fails validation or compiles, never panics, and
// validation and compilation agree.
func FuzzWarmWindow(f *testing.F) {
	f.Add("0 9 * * 1-5", "Europe/Berlin", int64(8*time.Hour), 3, int64(0))
	f.Add("@every 1h", "", int64(time.Hour), 1, int64(1e9))
	f.Add("TZ=UTC * * * * *", "Local", int64(-1), -1, int64(-1e18))
	f.Add("0 0 30 2 *", "America/New_York", int64(1), 0, int64(1<<62))
	f.Add("*/7 1-5,20 ? JAN-MAR SUN", "Asia/Kolkata", int64(1<<62), 1<<40, int64(-1<<62))
	f.Fuzz(func(t *testing.T, schedule, zone string, duration int64, minimum int, offset int64) {
		c := Config{JobsPerNode: 1, MaxNodes: 10, WarmWindows: []config.WarmWindow{
			{Schedule: schedule, Duration: metav1.Duration{Duration: time.Duration(duration)}, Minimum: minimum, TimeZone: zone},
		}}
		errs := c.Validate(nil)
		p, err := Compile(c)
		if (len(errs) == 0) != (err == nil) {
			t.Fatalf("Validate %v but Compile %v", errs, err)
		}
		if err != nil {
			return
		}
		now := t0.Add(time.Duration(offset))
		floor, _ := p.WarmMinimumAt(now)
		if floor < 0 || floor > 10 {
			t.Fatalf("floor %d outside [0, 10]", floor)
		}
		d, _ := p.Decide(Input{Now: now, Known: true}, State{})
		if d.Desired < floor || d.Desired > 10 {
			t.Fatalf("desired %d outside [%d, 10]", d.Desired, floor)
		}
	})
}

// FuzzDecideState: State read back from an annotation may be anything JSON can hold (edited by
// hand, written by another version); Decide must stay within its bounds and not panic.
func FuzzDecideState(f *testing.F) {
	f.Add([]byte(`{"desired":4,"history":[{"at":"2026-06-01T11:59:00Z","target":4}],"lastEvaluation":"2026-06-01T11:59:30Z"}`), 3, 1, true, 2)
	f.Add([]byte(`{"desired":-7,"history":[{"at":"2099-01-01T00:00:00Z","target":-1},{"at":"0001-01-01T00:00:00Z","target":99}]}`), -1, 0, false, 0)
	f.Add([]byte(`{"desired":9223372036854775807,"lastEvaluation":"2026-06-01T12:00:00Z"}`), 1<<40, 1<<40, true, 1)
	p := mustCompile(f, Config{JobsPerNode: 3, WarmMinimum: 2, MaxNodes: 12, ScaleDownStep: 2, WarmWindows: []config.WarmWindow{officeHours}})
	f.Fuzz(func(t *testing.T, data []byte, queued, running int, known bool, current int) {
		var prev State
		if err := json.Unmarshal(data, &prev); err != nil {
			return
		}
		d, next := p.Decide(Input{Now: t0, Queued: queued, Running: running, Known: known, CurrentNodes: current}, prev)
		if d.Desired < d.WarmMinimum || d.Desired > 12 {
			t.Fatalf("desired %d outside [%d, 12]", d.Desired, d.WarmMinimum)
		}
		if len(next.History) == 0 || len(next.History) > MaxHistory {
			t.Fatalf("history length %d", len(next.History))
		}
	})
}
