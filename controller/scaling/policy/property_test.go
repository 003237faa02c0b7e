package policy

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

// The property tests drive the policy with seeded pseudo-random configs and input sequences, so a
// failure names a seed that reproduces it exactly.

const (
	propertySeeds = 400 // sequences per property
	propertySteps = 150 // evaluations per sequence
)

var propertySchedules = []string{"0 9 * * 1-5", "*/15 * * * *", "30 2 * * *", "0 0 * * 0", "@hourly", "0 8-18/2 * * *"}
var propertyZones = []string{"", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"}

func randomConfig(r *rand.Rand) Config {
	c := Config{
		JobsPerNode:            1 + r.IntN(8),
		WarmMinimum:            r.IntN(12),
		MaxNodes:               r.IntN(41), // <= 40 keeps distinct targets below MaxHistory: no merging
		ScaleDownStabilization: []time.Duration{0, time.Second, time.Minute, 5 * time.Minute, 17 * time.Minute}[r.IntN(5)],
		ScaleDownStep:          r.IntN(5),
	}
	for range r.IntN(4) {
		c.WarmWindows = append(c.WarmWindows, config.WarmWindow{
			Schedule: propertySchedules[r.IntN(len(propertySchedules))],
			Duration: metav1.Duration{Duration: time.Duration(1+r.IntN(600)) * time.Minute},
			Minimum:  r.IntN(20),
			TimeZone: propertyZones[r.IntN(len(propertyZones))],
		})
	}
	return c
}

// randomInputs is a sequence of evaluations a few seconds to a few minutes apart, starting near a
// DST change so windows cross it, with bursts, drains and stale stretches.
func randomInputs(r *rand.Rand, n int) []Input {
	now := time.Date(2026, time.March, 28, 20, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(48*60)) * time.Minute)
	queued, running := r.IntN(50), r.IntN(50)
	ins := make([]Input, n)
	current := r.IntN(60)
	for i := range ins {
		now = now.Add(time.Duration(1+r.IntN(180)) * time.Second)
		switch r.IntN(6) {
		case 0:
			queued = r.IntN(300)
		case 1:
			queued = 0
		case 2:
			running = r.IntN(100)
		}
		ins[i] = Input{Now: now, Queued: queued, Running: running, Known: r.IntN(8) != 0, CurrentNodes: current}
	}
	return ins
}

// forEachSequence runs a fresh random config and input sequence per seed.
func forEachSequence(t *testing.T, f func(t *testing.T, seed uint64, p *Policy, ins []Input)) {
	for seed := range uint64(propertySeeds) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		c := randomConfig(r)
		f(t, seed, mustCompile(t, c), randomInputs(r, propertySteps))
		if t.Failed() {
			t.Fatalf("seed %d, config %+v", seed, c)
		}
	}
}

// previousDesired is what Decide compares against (Direction's baseline).
func previousDesired(in Input, prev State) int {
	if prev.LastEvaluation.IsZero() {
		return max(in.CurrentNodes, 0)
	}
	return max(prev.Desired, 0)
}

func TestPropertyBoundsAndConsistency(t *testing.T) {
	reasons := Reasons()
	forEachSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
		c := p.Config()
		var s State
		for i, in := range ins {
			before := previousDesired(in, s)
			floor, active := p.WarmMinimumAt(in.Now)
			d, next := p.Decide(in, s)
			fail := func(msg string) { t.Errorf("seed %d step %d: %s: in %+v prev %+v -> %+v", seed, i, msg, in, s, d) }
			if d.Desired > c.MaxNodes {
				fail("above max")
			}
			if d.Desired < min(floor, c.MaxNodes) {
				fail("below warm floor")
			}
			if d.WarmMinimum != floor || d.WarmWindowActive != active {
				fail("warm floor differs from WarmMinimumAt")
			}
			if !in.Known && d.Desired != min(max(before, floor), c.MaxNodes) {
				fail("unknown data changed desired other than via the warm floor or max")
			}
			wantDir := DirectionNone
			if d.Desired > before {
				wantDir = DirectionUp
			} else if d.Desired < before {
				wantDir = DirectionDown
			}
			if d.Direction != wantDir {
				fail("direction inconsistent with previous desired")
			}
			if d.Direction == DirectionUp && d.Desired != d.Target {
				fail("scale-up not straight to target")
			}
			if step := c.ScaleDownStep; step > 0 && d.Direction == DirectionDown && before-d.Desired > step && before <= c.MaxNodes {
				fail("step exceeded")
			}
			if !slices.Contains(reasons, d.Reason) {
				fail("unlisted reason")
			}
			if !d.StabilizedUntil.IsZero() && (d.Desired <= d.Target || !d.StabilizedUntil.After(in.Now)) {
				fail("StabilizedUntil set without a hold")
			}
			h := next.History
			if len(h) == 0 || len(h) > MaxHistory || next.Desired != d.Desired || !next.LastEvaluation.Equal(in.Now) {
				fail("state malformed")
			}
			for j := 1; j < len(h); j++ {
				if h[j-1].At.After(h[j].At) || h[j-1].Target <= h[j].Target {
					fail("history not a decreasing queue")
				}
			}
			s = next
		}
	})
}

// Monotone in queue depth: with everything else equal, more queued jobs never give fewer nodes,
// neither in one evaluation nor along a whole sequence where one queue dominates the other.
func TestPropertyMonotoneInQueue(t *testing.T) {
	forEachSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
		r := rand.New(rand.NewPCG(seed, 0x6d6f6e6f))
		var low, high State
		for i, in := range ins {
			more := in
			more.Queued += r.IntN(40)
			dl, nl := p.Decide(in, low)
			dh, nh := p.Decide(more, high)
			if dh.Desired < dl.Desired {
				t.Errorf("seed %d step %d: dominating sequence desired %d < %d", seed, i, dh.Desired, dl.Desired)
			}
			// Same previous state, one evaluation.
			d1, _ := p.Decide(in, low)
			d2, _ := p.Decide(more, low)
			if d2.Desired < d1.Desired {
				t.Errorf("seed %d step %d: queued %d -> %d but %d -> %d", seed, i, in.Queued, more.Queued, d1.Desired, d2.Desired)
			}
			low, high = nl, nh
		}
	})
}

// Never down within the stabilization window after going up, for any random sequence.
func TestPropertyNoDownSoonAfterUp(t *testing.T) {
	forEachSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
		c := p.Config()
		window := c.stabilization()
		var s State
		var lastUp time.Time
		for i, in := range ins {
			d, next := p.Decide(in, s)
			// A lowered max is the one permitted immediate drop; random configs keep max fixed.
			if d.Direction == DirectionDown && !lastUp.IsZero() && in.Now.Sub(lastUp) < window {
				t.Errorf("seed %d step %d: down %v after an up (window %v)", seed, i, in.Now.Sub(lastUp), window)
			}
			if d.Direction == DirectionUp {
				lastUp = in.Now
			}
			s = next
		}
	})
}

// An oscillating queue (high/low every 30 s for an hour) does not flap: one scale-up, then a hold.
func TestPropertyOscillatingQueueDoesNotFlap(t *testing.T) {
	for _, window := range []time.Duration{0, time.Minute, 5 * time.Minute, 15 * time.Minute} {
		for _, step := range []int{0, 1} {
			p := mustCompile(t, Config{JobsPerNode: 2, WarmMinimum: 1, MaxNodes: 20, ScaleDownStabilization: window, ScaleDownStep: step})
			s := evaluated(1)
			changes, ups := 0, 0
			prev := s.Desired
			for i := range 120 {
				queued := 2
				if i%2 == 0 {
					queued = 30
				}
				var d Decision
				d, s = p.Decide(Input{Now: t0.Add(time.Duration(i) * 30 * time.Second), Queued: queued, Known: true}, s)
				if d.Desired != prev {
					changes++
				}
				if d.Direction == DirectionUp {
					ups++
				}
				prev = d.Desired
			}
			if changes != 1 || ups != 1 || prev != 15 {
				t.Errorf("window %v step %d: %d changes, %d ups, final %d; want one scale-up to 15 and a hold", window, step, changes, ups, prev)
			}
		}
	}
}

// Keeping State on an annotation (JSON) must not change any decision.
func TestPropertyStateSurvivesJSON(t *testing.T) {
	forEachSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
		var mem, disk State
		for i, in := range ins {
			dm, nm := p.Decide(in, mem)
			dd, nd := p.Decide(in, disk)
			if !reflect.DeepEqual(stripTimes(dm), stripTimes(dd)) || !dm.StabilizedUntil.Equal(dd.StabilizedUntil) {
				t.Fatalf("seed %d step %d: in-memory %+v, via JSON %+v", seed, i, dm, dd)
			}
			b, err := json.Marshal(nd)
			if err != nil {
				t.Fatal(err)
			}
			disk = State{}
			if err := json.Unmarshal(b, &disk); err != nil {
				t.Fatal(err)
			}
			mem = nm
		}
	})
}

func stripTimes(d Decision) Decision {
	d.StabilizedUntil = time.Time{}
	return d
}
