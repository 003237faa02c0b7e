package policy

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestWarmWindowActive(t *testing.T) {
	type probe struct {
		at   string // RFC 3339, UTC
		want bool
	}
	tests := []struct {
		name   string
		window config.WarmWindow
		probes []probe
	}{
		{
			name:   "UTC boundaries: start inclusive, end exclusive",
			window: config.WarmWindow{Schedule: "0 9 * * *", Duration: metav1.Duration{Duration: 2 * time.Hour}},
			probes: []probe{
				{"2026-06-01T08:59:59.999999999Z", false},
				{"2026-06-01T09:00:00Z", true},
				{"2026-06-01T10:59:59.999999999Z", true},
				{"2026-06-01T11:00:00Z", false},
			},
		},
		{
			// CET is UTC+1, CEST UTC+2; Europe switched on 2026-03-29 and back on 2026-10-25.
			name:   "Berlin weekdays 09:00 local across spring DST",
			window: config.WarmWindow{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 9 * time.Hour}, TimeZone: "Europe/Berlin"},
			probes: []probe{
				{"2026-03-27T07:59:59Z", false}, // Fri 08:59:59 CET
				{"2026-03-27T08:00:00Z", true},  // Fri 09:00 CET
				{"2026-03-27T16:59:59Z", true},
				{"2026-03-27T17:00:00Z", false}, // 18:00 CET, end exclusive
				{"2026-03-28T08:00:00Z", false}, // Saturday
				{"2026-03-30T06:59:59Z", false}, // Mon 08:59:59 CEST
				{"2026-03-30T07:00:00Z", true},  // Mon 09:00 CEST: an hour earlier in UTC
				{"2026-03-30T15:59:59Z", true},
				{"2026-03-30T16:00:00Z", false},
			},
		},
		{
			name:   "Berlin weekdays 09:00 local across autumn DST",
			window: config.WarmWindow{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 9 * time.Hour}, TimeZone: "Europe/Berlin"},
			probes: []probe{
				{"2026-10-23T06:59:59Z", false}, // Fri 08:59:59 CEST
				{"2026-10-23T07:00:00Z", true},
				{"2026-10-26T07:00:00Z", false}, // Mon 08:00 CET
				{"2026-10-26T08:00:00Z", true},  // Mon 09:00 CET
				{"2026-10-26T17:00:00Z", false},
			},
		},
		{
			// Saturday 22:00 CET + 6 h crosses the 02:00 -> 03:00 jump: Duration is elapsed time,
			// so it ends at 03:00 UTC (05:00 CEST on the wall), not at 04:00 wall.
			name:   "window spanning the DST jump lasts its Duration",
			window: config.WarmWindow{Schedule: "0 22 * * 6", Duration: metav1.Duration{Duration: 6 * time.Hour}, TimeZone: "Europe/Berlin"},
			probes: []probe{
				{"2026-03-28T20:59:59Z", false},
				{"2026-03-28T21:00:00Z", true},
				{"2026-03-29T02:59:59Z", true},
				{"2026-03-29T03:00:00Z", false},
			},
		},
		{
			// Pinned robfig/cron behaviour: 02:30 does not exist in New York on 2026-03-08, and
			// the window does not open that day. Schedules should avoid 02:00-03:00 local.
			name:   "start in the skipped spring-forward hour does not fire that day",
			window: config.WarmWindow{Schedule: "30 2 * * *", Duration: metav1.Duration{Duration: time.Hour}, TimeZone: "America/New_York"},
			probes: []probe{
				{"2026-03-07T07:30:00Z", true},  // Sat 02:30 EST
				{"2026-03-08T06:30:00Z", false}, // the 02:30 EST that never happens
				{"2026-03-08T07:30:00Z", false}, // 03:30 EDT
				{"2026-03-09T06:30:00Z", true},  // Mon 02:30 EDT
			},
		},
		{
			// Pinned robfig/cron behaviour: 01:30 happens twice on 2026-11-01 and the window
			// opens at both; a longer warm period that night, never a shorter one.
			name:   "start in the repeated fall-back hour fires at both",
			window: config.WarmWindow{Schedule: "30 1 * * *", Duration: metav1.Duration{Duration: 30 * time.Minute}, TimeZone: "America/New_York"},
			probes: []probe{
				{"2026-11-01T05:30:00Z", true}, // 01:30 EDT
				{"2026-11-01T06:00:00Z", false},
				{"2026-11-01T06:30:00Z", true}, // 01:30 EST
				{"2026-11-01T07:00:00Z", false},
			},
		},
		{
			name:   "window longer than its period stays active",
			window: config.WarmWindow{Schedule: "0 * * * *", Duration: metav1.Duration{Duration: 90 * time.Minute}},
			probes: []probe{
				{"2026-06-01T00:00:00Z", true},
				{"2026-06-01T00:59:59Z", true},
				{"2026-06-01T01:30:00Z", true},
			},
		},
		{
			name:   "descriptor",
			window: config.WarmWindow{Schedule: "@weekly", Duration: metav1.Duration{Duration: 24 * time.Hour}, TimeZone: "Asia/Tokyo"},
			probes: []probe{
				{"2026-05-30T14:59:59Z", false}, // Sat 23:59:59 JST
				{"2026-05-30T15:00:00Z", true},  // Sun 00:00 JST
				{"2026-05-31T14:59:59Z", true},
				{"2026-05-31T15:00:00Z", false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := compileWindow(tt.window)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.probes {
				at := utc(p.at)
				if got := w.activeAt(at); got != p.want {
					t.Errorf("activeAt(%s = %s local) = %v, want %v", p.at, at.In(w.loc).Format(time.DateTime+" MST"), got, p.want)
				}
				// The answer must not depend on the zone the caller's time happens to carry.
				if got := w.activeAt(at.In(mustZone(t, "Australia/Sydney"))); got != p.want {
					t.Errorf("activeAt(%s in Sydney) = %v, want %v", p.at, got, p.want)
				}
			}
		})
	}
}

func TestWarmMinimumAt(t *testing.T) {
	c := Config{JobsPerNode: 1, WarmMinimum: 2, MaxNodes: 5, WarmWindows: []config.WarmWindow{
		{Schedule: "0 9 * * *", Duration: metav1.Duration{Duration: 8 * time.Hour}, Minimum: 4}, // 09-17 UTC
		{Schedule: "0 12 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 8},    // 12-13 UTC, above max
		{Schedule: "0 20 * * *", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 1},    // below the constant
	}}
	p := mustCompile(t, c)
	tests := []struct {
		at         string
		wantMin    int
		wantActive bool
	}{
		{"2026-06-01T08:00:00Z", 2, false},
		{"2026-06-01T09:00:00Z", 4, true},
		{"2026-06-01T12:30:00Z", 5, true}, // max of 4 and 8, capped by MaxNodes
		{"2026-06-01T20:30:00Z", 2, true}, // a window below the constant is active but not raising
	}
	for _, tt := range tests {
		gotMin, gotActive := p.WarmMinimumAt(utc(tt.at))
		if gotMin != tt.wantMin || gotActive != tt.wantActive {
			t.Errorf("WarmMinimumAt(%s) = %d, %v; want %d, %v", tt.at, gotMin, gotActive, tt.wantMin, tt.wantActive)
		}
	}
}
