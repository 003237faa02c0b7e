// Command tracegen writes the job traces `warmpool simulate` is benchmarked on, deploy/traces/weekday.csv,
// deploy/traces/spiky.csv and deploy/traces/fanout.csv, from a fixed seed. Run it from the repository root:
//
//	go run ./hack/tracegen
//
// or `go generate ./controller/scaling/simulate`. The output is byte-for-byte reproducible on
// every platform: the generator uses only integer arithmetic (a splitmix64 stream, and an integer
// quantile table for job durations), so no floating-point rounding can differ between machines.
package main

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"warmpool.io/warmpool/controller/scaling/simulate"
)

// Seed is the fixed seed the committed traces were generated with.
const Seed uint64 = 20260302

// pool is the pool name both traces use.
const pool = "runners"

// traces maps each file name to its generator.
var traces = []struct {
	file string
	gen  func(seed uint64) []simulate.Job
}{
	{"weekday.csv", weekday},
	{"spiky.csv", spiky},
	{"fanout.csv", fanout}, // fanout.go
}

func main() {
	out := flag.String("out", filepath.Join("deploy", "traces"), "directory to write the traces into")
	seed := flag.Uint64("seed", Seed, "random seed (the committed traces use the default)")
	flag.Parse()
	if err := write(*out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write(dir string, seed uint64) error {
	for _, t := range traces {
		data, err := render(t.gen(seed))
		if err != nil {
			return fmt.Errorf("rendering %s, %w", t.file, err)
		}
		if err := os.WriteFile(filepath.Join(dir, t.file), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func render(jobs []simulate.Job) ([]byte, error) {
	var buf bytes.Buffer
	err := simulate.WriteTrace(&buf, jobs)
	return buf.Bytes(), err
}

// rng is splitmix64: tiny, integer-only, and its output is fixed by its definition, unlike the
// helper methods of math/rand, whose algorithms a Go release may change.
type rng struct{ state uint64 }

func newRNG(seed, stream uint64) *rng { return &rng{state: seed ^ stream*0x9e3779b97f4a7c15} }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn is uniform on [0, n) up to a modulo bias of n/2^64, which is irrelevant here.
func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// durationQuantiles is the inverse CDF of a lognormal job duration (median 330 s, sigma 0.5),
// clamped to 2–20 minutes, in whole seconds at p = i/64. It was computed once in floating point
// and is kept as integers so the traces never depend on a platform's math library.
var durationQuantiles = [65]int{
	120, 120, 130, 143, 153, 162, 171, 178, 186, 193, 199, 206, 212, 218, 224, 230,
	236, 241, 247, 253, 258, 264, 270, 276, 281, 287, 293, 299, 305, 311, 317, 324,
	330, 337, 343, 350, 357, 364, 372, 379, 387, 395, 404, 412, 421, 431, 441, 451,
	462, 474, 487, 500, 514, 530, 547, 566, 587, 610, 638, 670, 711, 763, 838, 969,
	1200,
}

// duration samples the quantile table, interpolating linearly within a segment.
func (r *rng) duration() time.Duration {
	i := r.intn(len(durationQuantiles) - 1)
	lo, hi := durationQuantiles[i], durationQuantiles[i+1]
	return time.Duration(lo+(hi-lo)*r.intn(1024)/1024) * time.Second
}

// weekdayRate is the arrival rate at minute m of the day, in thousandths of a job per minute.
func weekdayRate(m int) int {
	switch {
	case m < 7*60: // quiet night: the odd nightly build
		return 200
	case m < 9*60: // people arrive
		return 500 + (m-7*60)*2500/120
	case m < 9*60+15: // 09:00 morning burst: everyone pushes
		return 30000
	case m < 9*60+45:
		return 40000
	case m < 10*60+30: // the burst fades by 10:30
		return 30000 - (m-(9*60+45))*20000/45
	case m < 14*60: // steady day
		return 8000
	case m < 16*60: // afternoon bump, peaking at 15:00
		d := m - 15*60
		return 8000 + 8000*(60-max(d, -d))/60
	case m < 18*60:
		return 8000
	case m < 20*60: // evening wind-down
		return 8000 - (m-18*60)*7500/120
	default:
		return 300
	}
}

// weekday is a working day from 00:00: quiet night, a morning burst 09:00–10:30 at 30–40 jobs a
// minute, a steady day at 8 a minute, an afternoon bump to 16, and a quiet evening. Arrivals are
// Bernoulli trials on 100 ms slots (so several jobs may share a second), durations lognormal-ish.
func weekday(seed uint64) []simulate.Job {
	r := newRNG(seed, 1)
	const slots = 600 // per minute
	var jobs []simulate.Job
	for m := range 24 * 60 {
		rate := weekdayRate(m)
		for slot := range slots {
			// P(job in slot) = rate/1000 jobs per minute / 600 slots per minute.
			if r.intn(1000*slots) < rate {
				at := time.Duration(m*60+slot/10) * time.Second
				jobs = append(jobs, simulate.Job{Arrival: at, Duration: r.duration(), Pool: pool})
			}
		}
	}
	return jobs
}

// spikyLength is how long the spiky trace runs.
const spikyLength = 12 * time.Hour

// spiky is spikes of 20–80 jobs arriving within one minute, separated by idle gaps of 2–30
// minutes in which nothing arrives, for 12 hours.
func spiky(seed uint64) []simulate.Job {
	r := newRNG(seed, 2)
	var jobs []simulate.Job
	t := time.Duration(0)
	for {
		start := t + time.Duration(120+r.intn(28*60+1))*time.Second
		if start >= spikyLength {
			break
		}
		n := 20 + r.intn(61)
		for range n {
			at := start + time.Duration(r.intn(60))*time.Second
			jobs = append(jobs, simulate.Job{Arrival: at, Duration: r.duration(), Pool: pool})
		}
		t = start + time.Minute
	}
	slices.SortStableFunc(jobs, func(a, b simulate.Job) int { return cmp.Compare(a.Arrival, b.Arrival) })
	return jobs
}
