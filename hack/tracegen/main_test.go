package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"warmpool.io/warmpool/controller/scaling/simulate"
)

var committed = filepath.Join("..", "..", "deploy", "traces")

// TestCommittedTracesReproduce regenerates each trace with the fixed seed and compares it with the
// committed file byte for byte. If the generator changes on purpose, run
// `go generate ./controller/scaling/simulate` and commit the new traces.
func TestCommittedTracesReproduce(t *testing.T) {
	for _, tr := range traces {
		t.Run(tr.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(committed, tr.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := render(tr.gen(Seed))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("regenerating %s with seed %d gives %d bytes that differ from the committed %d; run go generate ./controller/scaling/simulate",
					tr.file, Seed, len(got), len(want))
			}
		})
	}
}

func TestWriteCreatesBothFiles(t *testing.T) {
	dir := t.TempDir()
	if err := write(dir, Seed); err != nil {
		t.Fatal(err)
	}
	for _, tr := range traces {
		data, err := os.ReadFile(filepath.Join(dir, tr.file))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := simulate.ReadTrace(bytes.NewReader(data)); err != nil {
			t.Errorf("%s does not read back: %v", tr.file, err)
		}
	}
}

func TestSeedMatters(t *testing.T) {
	a, _ := render(spiky(Seed))
	b, _ := render(spiky(Seed + 1))
	if bytes.Equal(a, b) {
		t.Error("two seeds gave the same spiky trace")
	}
}

func checkDurations(t *testing.T, jobs []simulate.Job) {
	t.Helper()
	for _, j := range jobs {
		if j.Duration < 2*time.Minute || j.Duration > 20*time.Minute {
			t.Fatalf("job %+v lasts outside 2-20 min", j)
		}
	}
}

func TestWeekdayShape(t *testing.T) {
	jobs := weekday(Seed)
	checkDurations(t, jobs)
	perMinute := func(from, to time.Duration) float64 {
		n := 0
		for _, j := range jobs {
			if j.Arrival >= from && j.Arrival < to {
				n++
			}
		}
		return float64(n) / (to - from).Minutes()
	}
	h := time.Hour
	night, burst := perMinute(0, 7*h), perMinute(9*h, 10*h+30*time.Minute)
	steady, bump := perMinute(10*h+30*time.Minute, 14*h), perMinute(14*h+30*time.Minute, 15*h+30*time.Minute)
	if night > 0.5 || burst < 24 || steady < 6 || steady > 10 || bump < 1.3*steady {
		t.Errorf("jobs per minute: night %.2f, burst %.1f, steady %.1f, bump %.1f", night, burst, steady, bump)
	}
	if last := jobs[len(jobs)-1].Arrival; last >= 24*h {
		t.Errorf("last arrival %s is past the day", last)
	}
}

func TestSpikyShape(t *testing.T) {
	jobs := spiky(Seed)
	checkDurations(t, jobs)
	// Spikes arrive within one minute and are at least two idle minutes apart, so a gap over a
	// minute between consecutive arrivals separates two spikes.
	var sizes []int
	start := jobs[0].Arrival
	for i, j := range jobs {
		if i == 0 || j.Arrival-jobs[i-1].Arrival > time.Minute {
			if i > 0 && j.Arrival-jobs[i-1].Arrival < 2*time.Minute {
				t.Errorf("idle gap before %s is only %s", j.Arrival, j.Arrival-jobs[i-1].Arrival)
			}
			sizes = append(sizes, 0)
			start = j.Arrival
		}
		if j.Arrival-start >= time.Minute {
			t.Errorf("spike starting at %s lasts past a minute (%s)", start, j.Arrival)
		}
		sizes[len(sizes)-1]++
	}
	for _, n := range sizes {
		if n < 20 || n > 80 {
			t.Errorf("spike of %d jobs, want 20-80", n)
		}
	}
	if len(sizes) < 20 {
		t.Errorf("%d spikes in 12 hours, want a few dozen", len(sizes))
	}
}
