package simulate

import "testing"

// BenchmarkSimulateWeekday runs all three strategies over the weekday trace (about 7,400 jobs).
func BenchmarkSimulateWeekday(b *testing.B) {
	jobs := readShipped(b, "weekday.csv")
	c := DefaultConfig()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Run(jobs, c); err != nil {
			b.Fatal(err)
		}
	}
}
