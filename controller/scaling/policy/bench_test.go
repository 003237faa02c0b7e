package policy

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

func benchmarkDecide(b *testing.B, c Config) {
	p := mustCompile(b, c)
	// Warm up to a steady state with a realistic history: evaluations every 15 s.
	var s State
	now := t0
	for i := range 40 {
		_, s = p.Decide(Input{Now: now, Queued: (i * 7) % 23, Running: 4, Known: true}, s)
		now = now.Add(15 * time.Second)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, s = p.Decide(Input{Now: now, Queued: (i * 7) % 23, Running: 4, Known: true}, s)
		now = now.Add(15 * time.Second)
		i++
	}
}

func BenchmarkDecide(b *testing.B) {
	b.Run("no windows", func(b *testing.B) { benchmarkDecide(b, baseConfig()) })
	b.Run("three zoned windows", func(b *testing.B) {
		c := baseConfig()
		c.WarmWindows = []config.WarmWindow{
			{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 9 * time.Hour}, Minimum: 3, TimeZone: "Europe/Berlin"},
			{Schedule: "0 8 * * 1-5", Duration: metav1.Duration{Duration: 10 * time.Hour}, Minimum: 2, TimeZone: "America/New_York"},
			{Schedule: "0 0 1 * *", Duration: metav1.Duration{Duration: 48 * time.Hour}, Minimum: 5, TimeZone: "Asia/Tokyo"},
		}
		benchmarkDecide(b, c)
	})
}

func BenchmarkCompile(b *testing.B) {
	c := baseConfig()
	c.WarmWindows = []config.WarmWindow{{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 9 * time.Hour}, Minimum: 3, TimeZone: "Europe/Berlin"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(c); err != nil {
			b.Fatal(err)
		}
	}
}
