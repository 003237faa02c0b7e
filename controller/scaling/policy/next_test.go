package policy

import (
	"math/rand/v2"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

// weekdays is a weekday window 09:00-17:00 UTC of 3 nodes.
func weekdays() config.WarmWindow {
	return config.WarmWindow{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 8 * time.Hour}, Minimum: 3}
}

func adaptive(window time.Duration) Spare {
	return Spare{Probability: 0.9, BootTime: 3 * time.Minute, Window: window, Max: 5}
}

func TestNextChange(t *testing.T) {
	mon := func(hhmm string) time.Time { return utc("2026-06-01T" + hhmm + ":00Z") } // a Monday
	tests := []struct {
		name string
		cfg  Config
		at   time.Time
		in   Input
		prev State
		want time.Time
	}{
		{
			name: "no window, no spare, steady: never on the clock alone",
			cfg:  Config{JobsPerNode: 1, WarmMinimum: 1, MaxNodes: 10},
			at:   mon("12:00"), in: Input{Known: true},
			prev: State{Desired: 1, LastEvaluation: mon("11:59")},
		},
		{
			name: "before a warm window: its start",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, WarmWindows: []config.WarmWindow{weekdays()}},
			at:   mon("08:00"), in: Input{Known: true},
			want: mon("09:00"),
		},
		{
			name: "inside a warm window: its end",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, WarmWindows: []config.WarmWindow{weekdays()}},
			at:   mon("10:30"), in: Input{Known: true},
			want: mon("17:00"),
		},
		{
			name: "at a window's end: the next start",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, WarmWindows: []config.WarmWindow{weekdays()}},
			at:   mon("17:00"), in: Input{Known: true},
			want: utc("2026-06-02T09:00:00Z"),
		},
		{
			name: "Friday evening: Monday's start",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, WarmWindows: []config.WarmWindow{weekdays()}},
			at:   utc("2026-06-05T18:00:00Z"), in: Input{Known: true},
			want: utc("2026-06-08T09:00:00Z"),
		},
		{
			name: "a drained queue held by stabilization: when the hold runs out",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, ScaleDownStabilization: 5 * time.Minute},
			at:   mon("12:00"), in: Input{Known: true},
			prev: State{Desired: 4, LastEvaluation: mon("11:59"), History: []Recommendation{{At: mon("11:58"), Target: 4}}},
			want: utc("2026-06-01T12:03:00Z"),
		},
		{
			name: "a burst held: when its peak leaves the hold's window",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, ScaleDownStabilization: time.Second, BurstHold: BurstHold{Percent: 50, Window: 20 * time.Minute}},
			at:   mon("12:00"), in: Input{Known: true},
			prev: State{Desired: 3, LastEvaluation: mon("11:59"), Peaks: []Recommendation{{At: mon("11:50"), Target: 6}, {At: mon("11:55"), Target: 2}}},
			want: mon("12:10"),
		},
		{
			name: "a step-limited scale-down: the next evaluation",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, ScaleDownStabilization: time.Second, ScaleDownStep: 1},
			at:   mon("12:00"), in: Input{Known: true},
			prev: State{Desired: 4, LastEvaluation: mon("11:59")},
			want: mon("12:00"),
		},
		{
			name: "unknown queue data: held, nothing moves on the clock",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, Spare: adaptive(10 * time.Minute)},
			at:   mon("12:00"), in: Input{Known: false},
			prev: State{Desired: 2, LastEvaluation: mon("11:59")},
		},
		{
			name: "adaptive, first known evaluation: when the estimate's coverage is reached",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, Spare: adaptive(10 * time.Minute)},
			at:   mon("12:00"), in: Input{Known: true},
			want: utc("2026-06-01T12:02:00Z"), // minCoverage: min(window/2, 2m)
		},
		{
			name: "adaptive, covered, no arrivals in the window: before the coverage would restart",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, Spare: adaptive(10 * time.Minute)},
			at:   mon("12:00"), in: Input{Known: true},
			prev: State{LastEvaluation: mon("11:59"), Arrivals: Arrivals{Since: mon("11:00")}},
			want: utc("2026-06-01T12:07:30Z"),
		},
		{
			name: "adaptive with arrivals in the window: the next bucket edge",
			cfg:  Config{JobsPerNode: 1, MaxNodes: 10, Spare: adaptive(10 * time.Minute)},
			at:   utc("2026-06-01T12:00:05Z"), in: Input{Known: true},
			prev: State{LastEvaluation: mon("11:59"), Arrivals: Arrivals{Since: mon("11:00"),
				Buckets: []ArrivalBucket{{Start: utc("2026-06-01T11:55:00Z"), Count: 3}}}},
			want: utc("2026-06-01T12:00:20Z"), // 20 s buckets: the window's first edge moves from 11:50:20 to 11:50:40
		},
		{
			name: "adaptive with a time-of-week profile: the hour BootTime ahead turns first",
			cfg: Config{JobsPerNode: 1, MaxNodes: 10, Spare: Spare{Probability: 0.9, BootTime: 3 * time.Minute,
				Window: 10 * time.Minute, Max: 5, TimeOfWeek: true}},
			at: utc("2026-06-01T12:56:00Z"), in: Input{Known: true},
			prev: State{LastEvaluation: utc("2026-06-01T12:55:00Z"), Arrivals: Arrivals{Since: mon("11:00")}},
			want: utc("2026-06-01T12:57:00Z"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, tt.cfg)
			tt.in.Now = tt.at
			d, s := p.Decide(tt.in, tt.prev)
			if got := p.NextChange(tt.at, d, s); !got.Equal(tt.want) {
				t.Errorf("NextChange = %v, want %v (decision %+v)", got, tt.want, d)
			}
		})
	}
}

// TestNothingChangesBeforeNextChange: deciding again with the same input at any time before
// NextChange decides the same (the count, its target and hold, the floor, the busy window, the
// spare), and NextChange is now only for a step-limited scale-down. Random configs of windows, stabilization, steps and the constant spare, from random states.
func TestNothingChangesBeforeNextChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 14))
	schedules := []string{"0 9 * * 1-5", "30 */2 * * *", "0 0 * * 0", "15 13 * * *"}
	for i := range 5000 {
		cfg := Config{JobsPerNode: 1 + rng.IntN(3), WarmMinimum: rng.IntN(3), MaxNodes: 1 + rng.IntN(12),
			ScaleDownStabilization: time.Duration(1+rng.IntN(600)) * time.Second, ScaleDownStep: rng.IntN(3),
			Spare: Spare{Constant: rng.IntN(2), Max: rng.IntN(3)}}
		for range rng.IntN(3) {
			cfg.WarmWindows = append(cfg.WarmWindows, config.WarmWindow{Schedule: schedules[rng.IntN(len(schedules))],
				Duration: metav1.Duration{Duration: time.Duration(1+rng.IntN(240)) * time.Minute}, Minimum: rng.IntN(6), Spare: rng.IntN(2)})
		}
		now := t0.Add(time.Duration(rng.IntN(7*24*3600)) * time.Second)
		prev := State{Desired: rng.IntN(12), LastEvaluation: now.Add(-10 * time.Second)}
		if rng.IntN(2) == 0 {
			// Adaptive, observing since up to two windows ago, with arrivals in some buckets.
			cfg.Spare = Spare{Probability: 0.5 + rng.Float64()*0.49, BootTime: time.Duration(30+rng.IntN(300)) * time.Second,
				Window: time.Duration(1+rng.IntN(20)) * time.Minute, Constant: cfg.Spare.Constant, Max: 1 + rng.IntN(5), TimeOfWeek: rng.IntN(2) == 0}
			w := cfg.Spare.Window
			prev.Arrivals.Since = now.Add(-time.Duration(rng.Int64N(int64(2 * w))))
			for range rng.IntN(4) {
				at := now.Add(-time.Duration(rng.Int64N(int64(w))))
				if !at.Before(prev.Arrivals.Since) {
					prev.Arrivals.Buckets = addArrival(prev.Arrivals.Buckets, alignDown(at, bucketWidth(w)))
				}
			}
			prev.SpareSlots = rng.IntN(4)
		}
		p := mustCompile(t, cfg)
		for range rng.IntN(3) {
			prev.History = append(prev.History, Recommendation{At: now.Add(-time.Duration(rng.IntN(600)) * time.Second), Target: rng.IntN(12)})
		}
		in := Input{Now: now, Queued: rng.IntN(6), Running: rng.IntN(6), Known: rng.IntN(5) > 0}
		d, s := p.Decide(in, prev)
		next := p.NextChange(now, d, s)
		if next.Equal(now) {
			if d.Desired <= d.Target || !d.StabilizedUntil.IsZero() {
				t.Fatalf("case %d: NextChange is now, but %+v is no step-limited scale-down", i, d)
			}
			continue
		}
		horizon := next
		if horizon.IsZero() {
			horizon = now.Add(8 * 24 * time.Hour)
		}
		for range 5 {
			at := now.Add(time.Duration(rng.Int64N(int64(horizon.Sub(now)))))
			again := in
			again.Now = at
			d2, _ := p.Decide(again, s)
			if d2.Desired != d.Desired || d2.Target != d.Target || d2.WarmWindowActive != d.WarmWindowActive ||
				d2.Spare != d.Spare || d2.WarmMinimum != d.WarmMinimum || d2.ArrivalsKnown != d.ArrivalsKnown || !d2.StabilizedUntil.Equal(d.StabilizedUntil) {
				t.Fatalf("case %d (%+v): decided at %v %+v, at %v before NextChange %v %+v", i, cfg, now, d, at, next, d2)
			}
		}
	}
}
