package policy

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

func burstConfig(percent int, window time.Duration) Config {
	c := Config{JobsPerNode: 1, MaxNodes: 100, ScaleDownStabilization: time.Nanosecond}
	c.BurstHold = BurstHold{Percent: percent, Window: window}
	return c
}

// TestBurstHoldKeepsShareOfPeak follows one pool through a burst of 20 jobs and its end: the
// hold keeps ceil(45% of 20) = 9 nodes until the peak leaves the window, then nothing.
func TestBurstHoldKeepsShareOfPeak(t *testing.T) {
	p := mustCompile(t, burstConfig(45, 20*time.Minute))
	var s State
	step := func(at time.Duration, queued, running int) Decision {
		t.Helper()
		d, next := p.Decide(Input{Now: t0.Add(at), Queued: queued, Running: running, Known: true}, s)
		s = next
		return d
	}
	if d := step(0, 20, 0); d.Desired != 20 || d.BurstHold != 9 || d.Reason != ReasonQueueGrew {
		t.Fatalf("burst: %+v", d)
	}
	if d := step(5*time.Minute, 0, 0); d.Desired != 9 || d.BurstHold != 9 || d.Reason != ReasonQueueDrained {
		t.Errorf("after the burst: %+v, want 9 held", d)
	}
	if d := step(10*time.Minute, 0, 0); d.Desired != 9 || d.Reason != ReasonBurstHold {
		t.Errorf("inside the window: %+v, want 9 held by the burst hold", d)
	}
	// A smaller burst inside the window does not lower the peak.
	if d := step(15*time.Minute, 4, 0); d.Desired != 9 || d.QueueNodes != 4 || d.BurstHold != 9 {
		t.Errorf("small burst: %+v", d)
	}
	// At 20 minutes the big peak leaves the window; the small one (4) still holds ceil(1.8) = 2.
	if d := step(20*time.Minute, 0, 0); d.Desired != 2 || d.BurstHold != 2 {
		t.Errorf("big peak expired: %+v, want 2 held for the small one", d)
	}
	if d := step(35*time.Minute, 0, 0); d.Desired != 0 || d.BurstHold != 0 || len(s.Peaks) != 0 {
		t.Errorf("every peak expired: %+v, peaks %v", d, s.Peaks)
	}
}

func TestBurstHoldTable(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		prev        State
		in          Input
		wantDesired int
		wantHold    int
		wantReason  Reason
	}{
		{"off keeps nothing", burstConfig(0, 20*time.Minute),
			State{Desired: 10, LastEvaluation: t0.Add(-time.Minute), Peaks: []Recommendation{rec(time.Minute, 10)}},
			Input{Now: t0, Known: true}, 0, 0, ReasonQueueDrained},
		{"rounds up", burstConfig(45, 20*time.Minute),
			State{Desired: 1, LastEvaluation: t0.Add(-time.Minute), Peaks: []Recommendation{rec(time.Minute, 1)}},
			Input{Now: t0, Known: true}, 1, 1, ReasonBurstHold},
		{"100% holds the whole peak", burstConfig(100, 20*time.Minute),
			State{Desired: 7, LastEvaluation: t0.Add(-time.Minute), Peaks: []Recommendation{rec(time.Minute, 7)}},
			Input{Now: t0, Known: true}, 7, 7, ReasonBurstHold},
		{"capped by max nodes", Config{JobsPerNode: 1, MaxNodes: 3, BurstHold: BurstHold{Percent: 50, Window: time.Hour}},
			State{Desired: 3, LastEvaluation: t0.Add(-time.Minute), Peaks: []Recommendation{rec(time.Minute, 20)}},
			Input{Now: t0, Known: true}, 3, 10, ReasonAtMax},
		{"raises from zero after a restart with the peak recorded", burstConfig(50, 20*time.Minute),
			State{LastEvaluation: t0.Add(-time.Minute), Peaks: []Recommendation{rec(5*time.Minute, 8)}},
			Input{Now: t0, Known: true}, 4, 4, ReasonBurstHold},
		{"unknown queue records no peak and holds the count", burstConfig(50, 20*time.Minute),
			State{Desired: 2, LastEvaluation: t0.Add(-time.Minute)},
			Input{Now: t0, Queued: 40}, 2, 0, ReasonUnknownQueue},
		{"queue above the hold: the queue sets it", burstConfig(50, 20*time.Minute),
			State{Desired: 4, LastEvaluation: t0.Add(-time.Minute), Peaks: []Recommendation{rec(time.Minute, 8)}},
			Input{Now: t0, Queued: 6, Known: true}, 6, 4, ReasonQueueGrew},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, s := mustCompile(t, tt.cfg).Decide(tt.in, tt.prev)
			if d.Desired != tt.wantDesired || d.BurstHold != tt.wantHold || d.Reason != tt.wantReason {
				t.Errorf("decision %+v, want desired %d, hold %d, reason %s", d, tt.wantDesired, tt.wantHold, tt.wantReason)
			}
			if !tt.cfg.BurstHold.on() && len(s.Peaks) != 0 {
				t.Errorf("hold off but peaks %v kept", s.Peaks)
			}
		})
	}
}

// TestPropertyBurstHold: on random queues, the hold never exceeds its share of the window's
// true peak (recomputed from the inputs), never goes negative, never lifts desired above
// MaxNodes, survives the state's JSON round trip unchanged, and keeps its peaks bounded.
func TestPropertyBurstHold(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for run := range 200 {
		window := time.Duration(1+rng.IntN(30)) * time.Minute
		percent := rng.IntN(101)
		maxNodes := 1 + rng.IntN(60)
		c := Config{JobsPerNode: 1 + rng.IntN(3), MaxNodes: maxNodes, BurstHold: BurstHold{Percent: percent, Window: window}}
		p := mustCompile(t, c)
		type seen struct {
			at    time.Time
			nodes int
		}
		var (
			s    State
			past []seen
			now  = t0
		)
		for range 300 {
			now = now.Add(time.Duration(1+rng.IntN(120)) * time.Second)
			queued, running := rng.IntN(80), rng.IntN(20)
			if rng.IntN(4) > 0 {
				queued = 0 // mostly calm, some bursts
			}
			in := Input{Now: now, Queued: queued, Running: running, Known: rng.IntN(10) > 0}
			d, next := p.Decide(in, s)
			if in.Known {
				past = append(past, seen{now, d.QueueNodes})
			}
			peak := 0
			for _, e := range past {
				if now.Sub(e.at) < window {
					peak = max(peak, e.nodes)
				}
			}
			want := (peak*percent + 99) / 100
			if d.BurstHold != want {
				t.Fatalf("run %d at %s: hold %d, want ceil(%d%% of peak %d) = %d", run, now.Sub(t0), d.BurstHold, percent, peak, want)
			}
			if d.Desired < 0 || d.Desired > maxNodes {
				t.Fatalf("run %d: desired %d outside [0, %d]", run, d.Desired, maxNodes)
			}
			if in.Known && d.Desired < min(d.BurstHold, maxNodes) {
				t.Fatalf("run %d: desired %d below the hold %d", run, d.Desired, d.BurstHold)
			}
			if len(next.Peaks) > MaxHistory {
				t.Fatalf("run %d: %d peaks kept", run, len(next.Peaks))
			}
			raw, err := json.Marshal(next)
			if err != nil {
				t.Fatal(err)
			}
			var back State
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			s = back
		}
	}
}

// TestBurstHoldAfterClockJump: a peak stamped in the future (the clock went back, another
// replica's clock) is taken as seen now, so it expires one window later instead of holding nodes
// until its stamp; a jump forward past the window drops it.
func TestBurstHoldAfterClockJump(t *testing.T) {
	p := mustCompile(t, burstConfig(50, 10*time.Minute))
	prev := State{Desired: 4, LastEvaluation: t0.Add(2 * time.Hour), Peaks: []Recommendation{{At: t0.Add(2 * time.Hour), Target: 8}}}
	d, s := p.Decide(Input{Now: t0, Known: true}, prev)
	if d.BurstHold != 4 || len(s.Peaks) != 1 || !s.Peaks[0].At.Equal(t0) {
		t.Fatalf("after the clock went back: hold %d, peaks %v; want 4, one peak at now", d.BurstHold, s.Peaks)
	}
	if d, _ := p.Decide(Input{Now: t0.Add(10 * time.Minute), Known: true}, s); d.BurstHold != 0 {
		t.Errorf("one window later: hold %d, want 0", d.BurstHold)
	}
	if d, _ := p.Decide(Input{Now: t0.Add(3 * time.Hour), Known: true}, State{Desired: 4, LastEvaluation: t0, Peaks: []Recommendation{{At: t0, Target: 8}}}); d.BurstHold != 0 {
		t.Errorf("after a jump forward past the window: hold %d, want 0", d.BurstHold)
	}
}
