package queue

import (
	"errors"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestAgesOut: the pool ages out when its oldest good reading passes the staleness bound, and
// Pool turns unknown exactly then; a pool unknown already, or without sources, never ages out
// on the clock.
func TestAgesOut(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	tr := NewTracker(clk, 5*time.Minute)
	tr.SetSources(map[string][]string{"p": {"a", "b"}, "none": nil})
	if got := tr.AgesOut("p"); !got.IsZero() {
		t.Errorf("before any reading: ages out at %v, want never (unknown already)", got)
	}
	if got := tr.AgesOut("none"); !got.IsZero() {
		t.Errorf("pool without sources: ages out at %v, want never", got)
	}
	tr.Record(Key{"p", "a"}, Counts{Queued: 1}, nil)
	clk.Step(time.Minute)
	tr.Record(Key{"p", "b"}, Counts{}, nil)
	clk.Step(time.Minute)
	tr.Record(Key{"p", "b"}, Counts{}, errors.New("down")) // keeps b's last good reading
	want := time.Date(2026, 3, 2, 9, 5, 0, 1, time.UTC)
	if got := tr.AgesOut("p"); !got.Equal(want) {
		t.Fatalf("ages out at %v, want %v (source a's reading plus the bound)", got, want)
	}
	clk.SetTime(want.Add(-time.Nanosecond))
	if _, known := tr.Pool("p"); !known {
		t.Fatal("unknown before it ages out")
	}
	clk.SetTime(want)
	if _, known := tr.Pool("p"); known {
		t.Fatal("still known when it ages out")
	}
	if got := tr.AgesOut("p"); !got.IsZero() {
		t.Errorf("aged out: ages out again at %v, want never", got)
	}
}
