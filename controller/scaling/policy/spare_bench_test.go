package policy

import (
	"testing"
	"time"
)

// BenchmarkDecideSpare is Decide with the adaptive spare on a busy stream: 10 evaluations a
// minute, about 30 arrivals a minute, so the estimator's buckets are full.
func BenchmarkDecideSpare(b *testing.B) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"adaptive", func(*Config) {}},
		{"adaptive with week profile", func(c *Config) { c.Spare.TimeOfWeek = true }},
		// A pool's defaults: the adaptive spare and the burst hold (45% for 25m).
		{"adaptive with burst hold", func(c *Config) { c.BurstHold = BurstHold{Percent: 45, Window: 25 * time.Minute} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := adaptiveConfig()
			tc.mut(&c)
			p := mustCompile(b, c)
			var s State
			now := t0
			arrivals := make([]time.Time, 5)
			step := func(i int) {
				for k := range arrivals {
					arrivals[k] = now.Add(-time.Duration(k) * 2 * time.Second)
				}
				_, s = p.Decide(Input{Now: now, Queued: (i * 7) % 23, Running: 40, Known: true, Arrivals: arrivals}, s)
				now = now.Add(10 * time.Second)
			}
			for i := range 200 {
				step(i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				step(i)
				i++
			}
		})
	}
}
