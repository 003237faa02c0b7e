package main

import (
	"testing"
	"time"
)

func TestFanoutShape(t *testing.T) {
	jobs := fanout(Seed)
	// Jobs queued at the same second are one push's matrix (two pushes in one second are
	// possible but rare): 1 to 16 legs, mostly, at most two matrices' worth.
	sizes := map[time.Duration]int{}
	for i, j := range jobs {
		if i > 0 && j.Arrival < jobs[i-1].Arrival {
			t.Fatalf("job %d arrives before job %d", i, i-1)
		}
		if j.Duration < 48*time.Second || j.Duration > 75*time.Minute {
			t.Fatalf("job %+v lasts outside 48 s - 75 min (1-60 min times 0.80-1.25)", j)
		}
		sizes[j.Arrival]++
	}
	big, over16 := 0, 0
	for _, n := range sizes {
		if n >= 8 {
			big++
		}
		if n > 16 {
			over16++
		}
		if n > 32 {
			t.Fatalf("%d jobs at one second", n)
		}
	}
	if big < len(sizes)/5 || over16 > len(sizes)/50 {
		t.Errorf("%d pushes: %d with 8+ legs, %d with more than 16", len(sizes), big, over16)
	}
	// The weekday profile: quiet night, a morning burst.
	count := func(from, to time.Duration) int {
		n := 0
		for _, j := range jobs {
			if j.Arrival >= from && j.Arrival < to {
				n++
			}
		}
		return n
	}
	h := time.Hour
	if night, burst := count(0, 7*h), count(9*h, 10*h+30*time.Minute); night*10 > burst || burst < 1500 {
		t.Errorf("jobs: %d in the night (7 h), %d in the morning burst (1.5 h)", night, burst)
	}
	// A long tail: some jobs run for more than half an hour, the median is a few minutes.
	long := 0
	for _, j := range jobs {
		if j.Duration > 30*time.Minute {
			long++
		}
	}
	if long == 0 || long > len(jobs)/10 {
		t.Errorf("%d of %d jobs over 30 minutes", long, len(jobs))
	}
}
