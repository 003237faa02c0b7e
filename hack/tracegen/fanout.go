package main

import (
	"time"

	"warmpool.io/warmpool/controller/scaling/simulate"
)

// fanoutQuantiles is the inverse CDF of a fan-out job's duration: lognormal with median 300 s
// and sigma 0.9 (a longer tail than durationQuantiles: matrix legs range from a lint job to a
// full integration suite), clamped to 1-60 minutes, in whole seconds at p = i/64. Computed
// once in floating point and kept as integers, like durationQuantiles.
var fanoutQuantiles = [65]int{
	60, 60, 60, 66, 75, 84, 92, 99, 107, 114, 121, 128, 135, 142, 149, 156,
	163, 171, 178, 186, 193, 201, 209, 217, 225, 234, 242, 251, 260, 270, 280, 290,
	300, 311, 322, 334, 346, 358, 371, 385, 400, 415, 431, 448, 466, 485, 505, 527,
	550, 576, 603, 633, 667, 703, 745, 791, 845, 907, 982, 1075, 1193, 1356, 1604, 2084,
	3600,
}

// matrixSizes are the sizes a push's workflow matrix is drawn from, uniformly: single jobs
// are common, and so are the OS x version matrices of 4, 6, 8, 12 and 16 legs. Mean 5.9.
var matrixSizes = [20]int{1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 6, 6, 8, 8, 8, 12, 12, 16, 16}

// fanoutPushDivisor turns weekdayRate (jobs per minute) into pushes per minute, so the
// fan-out day queues about as many jobs as the weekday one, in bursts.
const fanoutPushDivisor = 6

// fanout is CI fan-out on a working day: pushes arrive with the weekday profile (a push per
// Bernoulli trial on one-second slots), and each starts a workflow matrix of 1-16 jobs at the
// same second. A push's legs run a similar build: each lasts the push's base duration (from
// fanoutQuantiles) times 0.80-1.25.
func fanout(seed uint64) []simulate.Job {
	r := newRNG(seed, 3)
	var jobs []simulate.Job
	for m := range 24 * 60 {
		rate := weekdayRate(m)
		for second := range 60 {
			// P(push in this second) = rate/1000 jobs a minute / divisor / 60 seconds.
			if r.intn(1000*60*fanoutPushDivisor) >= rate {
				continue
			}
			at := time.Duration(m*60+second) * time.Second
			n := matrixSizes[r.intn(len(matrixSizes))]
			i := r.intn(len(fanoutQuantiles) - 1)
			lo, hi := fanoutQuantiles[i], fanoutQuantiles[i+1]
			base := lo + (hi-lo)*r.intn(1024)/1024
			for range n {
				d := base * (80 + r.intn(46)) / 100
				jobs = append(jobs, simulate.Job{Arrival: at, Duration: time.Duration(d) * time.Second, Pool: pool})
			}
		}
	}
	return jobs // in arrival order by construction
}
