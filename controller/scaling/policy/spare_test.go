package policy

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/controller/config"
)

// adaptiveConfig: one job per node, max 100 nodes, an adaptive spare at 90% for a 2 minute boot
// over a 10 minute window, at most 8 spare nodes.
func adaptiveConfig() Config {
	return Config{JobsPerNode: 1, MaxNodes: 100, Spare: Spare{Probability: 0.9, BootTime: 2 * time.Minute, Window: 10 * time.Minute, Max: 8}}
}

// stream is a job queued every interval from start to end (exclusive).
func stream(start, end time.Time, interval time.Duration) []time.Time {
	var out []time.Time
	for t := start; t.Before(end); t = t.Add(interval) {
		out = append(out, t)
	}
	return out
}

// feed evaluates p every step from `from` for n steps, passing the arrivals of each step, with
// constant queue counts; it returns every decision and the last state.
func feed(p *Policy, s State, from time.Time, step time.Duration, n int, arrivals []time.Time, queued, running int) ([]Decision, State) {
	var out []Decision
	i := 0
	for k := range n {
		now := from.Add(time.Duration(k) * step)
		j := i
		for j < len(arrivals) && !arrivals[j].After(now) {
			j++
		}
		var d Decision
		d, s = p.Decide(Input{Now: now, Queued: queued, Running: running, Known: true, Arrivals: arrivals[i:j]}, s)
		i = j
		out = append(out, d)
	}
	return out, s
}

func TestPoissonQuantile(t *testing.T) {
	tests := []struct {
		mu, p float64
		limit int
		want  int
	}{
		{0, 0.9, 10, 0},
		{-1, 0.9, 10, 0},
		{math.NaN(), 0.9, 10, 0},
		{1, 0.5, 10, 1},       // P(X<=0) = 0.368, P(X<=1) = 0.736
		{1, 0.9, 10, 2},       // P(X<=2) = 0.920
		{10, 0.9, 100, 14},    // P(X<=13) = 0.864, P(X<=14) = 0.917
		{10, 0.99, 100, 18},   // P(X<=17) = 0.986, P(X<=18) = 0.993
		{10, 0.9, 5, 5},       // capped
		{1e6, 0.9, 50, 50},    // far below the mean: the cap at once
		{800, 0.5, 2000, 800}, // exp(-800) underflows; the median is still found
		{2, 0.9, 0, 0},
	}
	for _, tt := range tests {
		if got := poissonQuantile(tt.mu, tt.p, tt.limit); got != tt.want {
			t.Errorf("poissonQuantile(%v, %v, %d) = %d, want %d", tt.mu, tt.p, tt.limit, got, tt.want)
		}
	}
}

func TestSpareDecide(t *testing.T) {
	window := config.WarmWindow{Schedule: "0 9 * * *", Duration: metav1.Duration{Duration: 8 * time.Hour}, Minimum: 0, Spare: 3} // active at t0 (12:00)
	closed := config.WarmWindow{Schedule: "0 20 * * *", Duration: metav1.Duration{Duration: time.Hour}, Spare: 7}
	with := func(mut func(*Config)) Config {
		c := adaptiveConfig()
		c.Spare.Probability = 0
		mut(&c)
		return c
	}
	tests := []struct {
		name       string
		config     Config
		in         Input
		prev       State
		wantSpare  int
		wantFrom   SpareSource
		wantTarget int
		wantReason Reason
	}{
		{"none configured", Config{JobsPerNode: 1, MaxNodes: 10}, Input{Now: t0, Known: true, Queued: 2}, evaluated(2), 0, "", 2, ReasonSteady},
		{"constant", with(func(c *Config) { c.Spare.Constant = 2 }), Input{Now: t0, Known: true, Queued: 2}, evaluated(2), 2, SpareConstant, 4, ReasonSpare},
		{"constant on an idle pool", with(func(c *Config) { c.Spare.Constant = 2 }), Input{Now: t0, Known: true}, evaluated(0), 2, SpareConstant, 2, ReasonSpare},
		{"queue grew and spare", with(func(c *Config) { c.Spare.Constant = 2 }), Input{Now: t0, Known: true, Queued: 5}, evaluated(2), 2, SpareConstant, 7, ReasonQueueGrew},
		{"capped by spare max", with(func(c *Config) { c.Spare.Constant = 20 }), Input{Now: t0, Known: true, Queued: 1}, evaluated(9), 8, SpareAtMax, 9, ReasonSteady},
		{"max zero keeps none", with(func(c *Config) { c.Spare.Constant, c.Spare.Max = 2, 0 }), Input{Now: t0, Known: true, Queued: 1}, evaluated(1), 0, "", 1, ReasonSteady},
		{"capped by max nodes", with(func(c *Config) { c.Spare.Constant, c.MaxNodes = 3, 4 }), Input{Now: t0, Known: true, Queued: 3}, evaluated(3), 3, SpareConstant, 4, ReasonAtMax},
		{"open window", with(func(c *Config) { c.WarmWindows = []config.WarmWindow{window, closed} }), Input{Now: t0, Known: true, Queued: 1}, evaluated(1), 3, SpareWarmWindow, 4, ReasonSpare},
		{"window below constant", with(func(c *Config) { c.Spare.Constant = 5; c.WarmWindows = []config.WarmWindow{window} }), Input{Now: t0, Known: true}, evaluated(5), 5, SpareConstant, 5, ReasonSteady},
		{"spare above the warm floor", with(func(c *Config) { c.Spare.Constant, c.WarmMinimum = 1, 3 }), Input{Now: t0, Known: true, Queued: 1}, evaluated(3), 1, SpareConstant, 3, ReasonWarmMinimum},
		{"jobs per node: spare nodes on top of the queue's", with(func(c *Config) { c.JobsPerNode, c.Spare.Constant = 4, 1 }), Input{Now: t0, Known: true, Queued: 5}, evaluated(2), 1, SpareConstant, 3, ReasonSpare},
		{"unknown queue: the count holds", with(func(c *Config) { c.Spare.Constant = 2 }), Input{Now: t0, Queued: 50}, evaluated(3), 2, SpareConstant, 3, ReasonUnknownQueue},
		// Adaptive, from a state that saw 20 arrivals in the 580 s of whole buckets of its window
		// (about 2 a minute, 4.14 per boot): the 90% quantile of Poisson(4.14*0.8) is 6 (P<=5 is
		// 0.88, P<=6 is 0.95), and of Poisson(4.14*1.2) 8, so a spare of 6 from none.
		{"adaptive", adaptiveConfig(), Input{Now: t0, Known: true, Queued: 1}, seenArrivals(20), 6, SpareArrivalRate, 7, ReasonSpare},
		{"adaptive, 3 jobs per node", func() Config { c := adaptiveConfig(); c.JobsPerNode = 3; return c }(),
			Input{Now: t0, Known: true, Queued: 1}, seenArrivals(20), 2, SpareArrivalRate, 3, ReasonSpare}, // ceil(7/3) - ceil(1/3)
		{"adaptive, at least the constant", func() Config { c := adaptiveConfig(); c.Spare.Constant = 7; return c }(),
			Input{Now: t0, Known: true}, seenArrivals(20), 7, SpareConstant, 7, ReasonSpare},
		{"adaptive, no arrivals", adaptiveConfig(), Input{Now: t0, Known: true, Queued: 1}, seenArrivals(0), 0, "", 1, ReasonSteady},
		// A fresh state has no rate: the spare is the held (zero) one, not a guess.
		{"adaptive, fresh state", adaptiveConfig(), Input{Now: t0, Known: true, Queued: 1, Arrivals: []time.Time{t0, t0}}, State{}, 0, "", 1, ReasonQueueGrew},
		// Stale source: arrivals unknown; the spare decided last holds.
		{"adaptive, stale source holds", adaptiveConfig(), Input{Now: t0}, heldSlots(4, 5), 4, SpareHeld, 5, ReasonUnknownQueue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, tt.config)
			d, s := p.Decide(tt.in, tt.prev)
			if d.Spare != tt.wantSpare || d.SpareFrom != tt.wantFrom || d.Target != tt.wantTarget || d.Reason != tt.wantReason {
				t.Fatalf("spare %d from %q, target %d (%s); want %d from %q, target %d (%s)\n%+v",
					d.Spare, d.SpareFrom, d.Target, d.Reason, tt.wantSpare, tt.wantFrom, tt.wantTarget, tt.wantReason, d)
			}
			if !tt.config.Spare.adaptive() && (s.SpareSlots != 0 || !reflect.DeepEqual(s.Arrivals, Arrivals{})) {
				t.Fatalf("non-adaptive spare left estimator state %+v", s)
			}
		})
	}
}

// seenArrivals is a state evaluated 10 s before t0 that has observed arrivals for an hour, the
// last n of them in the 10 minutes before t0, spread evenly.
func seenArrivals(n int) State {
	p := mustCompileTB(adaptiveConfig())
	start := t0.Add(-time.Hour)
	var arrivals []time.Time
	for i := range n {
		arrivals = append(arrivals, t0.Add(-9*time.Minute+time.Duration(i)*9*time.Minute/time.Duration(n)))
	}
	_, s := feed(p, evaluated(1), start, 10*time.Second, 359, arrivals, 1, 0)
	// The table rows start from one node and no spare, so neither stabilization nor hysteresis
	// blurs them.
	s.Desired, s.History, s.SpareSlots = 1, nil, 0
	return s
}

// heldSlots is a state whose last evaluation (10 s before t0) kept a spare of slots job slots
// and desired nodes.
func heldSlots(slots, desired int) State {
	return State{Desired: desired, LastEvaluation: t0.Add(-10 * time.Second), SpareSlots: slots,
		Arrivals: Arrivals{Since: t0.Add(-time.Hour)}}
}

func mustCompileTB(c Config) *Policy {
	p, err := Compile(c)
	if err != nil {
		panic(err)
	}
	return p
}

func TestSpareValidate(t *testing.T) {
	tests := []struct {
		name  string
		spare Spare
		want  []string
	}{
		{"zero is valid (no spare)", Spare{}, nil},
		{"constant only", Spare{Constant: 2, Max: 2}, nil},
		{"adaptive", adaptiveConfig().Spare, nil},
		{"negatives", Spare{Probability: -0.1, Constant: -1, Max: -1, BootTime: -time.Second, Window: -time.Second},
			[]string{"scaling.spare.probability", "scaling.spare.constant", "scaling.spare.max", "scaling.spare.bootTime", "scaling.spare.window"}},
		{"probability 1 has no quantile", Spare{Probability: 1, BootTime: time.Minute, Window: time.Minute}, []string{"scaling.spare.probability"}},
		{"NaN probability", Spare{Probability: math.NaN(), BootTime: time.Minute, Window: time.Minute}, []string{"scaling.spare.probability"}},
		{"adaptive needs a boot time and a window", Spare{Probability: 0.9}, []string{"scaling.spare.bootTime", "scaling.spare.window"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{JobsPerNode: 1, MaxNodes: 10, Spare: tt.spare}
			var got []string
			for _, e := range c.Validate(field.NewPath("scaling")) {
				got = append(got, e.Field)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("error fields %v, want %v", got, tt.want)
			}
		})
	}
	c := Config{JobsPerNode: 1, WarmWindows: []config.WarmWindow{{Schedule: "@daily", Duration: metav1.Duration{Duration: time.Hour}, Spare: -1}}}
	if errs := c.Validate(field.NewPath("scaling")); len(errs) != 1 || errs[0].Field != "scaling.warmWindows[0].spare" {
		t.Fatalf("negative window spare: %v", errs)
	}
	c.WarmWindows[0].Spare = 3
	c.Spare = Spare{Constant: 2, Max: 1}
	w := c.Warnings()
	if len(w) != 2 || !strings.Contains(w[0], "spare.constant 2") || !strings.Contains(w[1], "warmWindows[0].spare 3") {
		t.Fatalf("Warnings() = %q", w)
	}
}

// A steady stream (a job every 6 s, 10 a minute, each running 5 minutes) settles on one count
// and keeps it: no flapping, even with the arrival times jittered.
func TestSpareSteadyStreamDoesNotFlap(t *testing.T) {
	for _, jitter := range []bool{false, true} {
		p := mustCompile(t, adaptiveConfig())
		arrivals := stream(t0, t0.Add(3*time.Hour), 6*time.Second)
		if jitter {
			r := rand.New(rand.NewPCG(1, 2))
			for i := range arrivals {
				arrivals[i] = arrivals[i].Add(time.Duration(r.IntN(5000)) * time.Millisecond)
			}
			slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
		}
		ds, _ := feed(p, evaluated(50), t0, 10*time.Second, 3*360, arrivals, 0, 50)
		settled := ds[len(ds)/6:] // after the first half hour
		for i, d := range settled {
			if d.Desired != settled[0].Desired || d.Spare != settled[0].Spare {
				t.Fatalf("jitter %v: desired %d spare %d at step %d, then %d spare %d", jitter, settled[0].Desired, settled[0].Spare, i, d.Desired, d.Spare)
			}
		}
		// 10 a minute for a 2 minute boot: Poisson(20)'s 90% quantile is 26, capped at 8.
		if s := settled[0]; s.Spare != 8 || s.SpareFrom != SpareAtMax || s.Desired != 58 || math.Abs(s.ArrivalRate-10) > 1 {
			t.Fatalf("jitter %v: settled on %+v, want 8 spare at max above 50 running, rate ~10/min", jitter, s)
		}
	}
	// At 2 a minute the spare is below Max: still steady.
	c := adaptiveConfig()
	p := mustCompile(t, c)
	ds, _ := feed(p, evaluated(10), t0, 10*time.Second, 3*360, stream(t0, t0.Add(3*time.Hour), 30*time.Second), 0, 10)
	settled := ds[len(ds)/6:]
	for _, d := range settled {
		if d.Desired != settled[0].Desired {
			t.Fatalf("2/min: desired moved from %d to %d", settled[0].Desired, d.Desired)
		}
	}
	if settled[0].Spare != 7 { // Poisson(4)'s 90% quantile is 7, at rates 3.2 to 4.8 per boot too
		t.Fatalf("2/min: spare %d, want 7", settled[0].Spare)
	}
}

// The stream stops: the spare goes after the window, and the pool returns to its demand.
func TestSpareFollowsTheStreamDown(t *testing.T) {
	p := mustCompile(t, adaptiveConfig())
	ds, s := feed(p, evaluated(0), t0, 10*time.Second, 360, stream(t0, t0.Add(time.Hour), 30*time.Second), 0, 0)
	if ds[len(ds)-1].Spare == 0 {
		t.Fatal("no spare after an hour of arrivals")
	}
	ds, _ = feed(p, s, t0.Add(time.Hour), 10*time.Second, 180, nil, 0, 0)
	last := ds[len(ds)-1]
	if last.Spare != 0 || last.Desired != 0 || !last.ArrivalsKnown || last.ArrivalRate != 0 {
		t.Fatalf("30 minutes after the last arrival: %+v, want no spare, no nodes", last)
	}
}

// Clock jumps and stale stretches: the rate becomes unknown, and the spare holds; it is never
// raised from the gap, and it comes back once enough of the window is observed again.
func TestSpareClockJumpAndStaleHold(t *testing.T) {
	p := mustCompile(t, adaptiveConfig())
	arrivals := stream(t0.Add(-time.Hour), t0, 30*time.Second)
	_, s := feed(p, evaluated(0), t0.Add(-time.Hour), 10*time.Second, 360, arrivals, 0, 0)
	held := s.SpareSlots
	if held == 0 {
		t.Fatal("no spare to hold")
	}
	tests := []struct {
		name string
		now  time.Time
		in   Input
	}{
		{"clock forward by an hour", t0.Add(time.Hour), Input{Known: true}},
		{"clock back by an hour", t0.Add(-2 * time.Hour), Input{Known: true}},
		{"stale source", t0.Add(10 * time.Second), Input{}},
		// A burst of 1000 arrivals stamped in the gap is not evidence either.
		{"clock forward, with arrivals", t0.Add(time.Hour), Input{Known: true, Arrivals: slices.Repeat([]time.Time{t0.Add(30 * time.Minute)}, 1000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.Now = tt.now
			d, next := p.Decide(in, s)
			if d.ArrivalsKnown || next.SpareSlots != held || d.SpareFrom != SpareHeld {
				t.Fatalf("decision %+v, slots %d; want the rate unknown and %d slots held", d, next.SpareSlots, held)
			}
			if !next.Arrivals.Since.IsZero() && !next.Arrivals.Since.Equal(tt.now) || len(next.Arrivals.Buckets) > 0 {
				t.Fatalf("estimator not restarted: %+v", next.Arrivals)
			}
			// Two quiet minutes of fresh observation later the rate is known again: zero.
			ds, _ := feed(p, next, tt.now.Add(10*time.Second), 10*time.Second, 13, nil, 0, 0)
			if last := ds[len(ds)-1]; !last.ArrivalsKnown || last.Spare != 0 {
				t.Fatalf("after two quiet minutes: %+v, want a known zero rate and no spare", last)
			}
		})
	}
}

func TestArrivalsRate(t *testing.T) {
	window := 10 * time.Minute // 20 s buckets
	a := Arrivals{}.observe(t0, time.Time{}, true, []time.Time{t0.Add(-time.Second)}, window)
	if !a.Since.Equal(t0) || len(a.Buckets) != 0 {
		t.Fatalf("first observation: %+v, want coverage from t0 and the earlier arrival dropped", a)
	}
	if _, ok := a.rate(t0.Add(time.Minute), window); ok {
		t.Fatal("rate known after one minute of a 10 minute window (coverage 2 minutes)")
	}
	// A job every 15 s for 12 minutes, one stamped a minute ahead (another host's clock).
	now, last := t0, t0
	for i := 1; i <= 48; i++ {
		now = t0.Add(time.Duration(i) * 15 * time.Second)
		arr := []time.Time{now}
		if i == 48 {
			arr = append(arr, now.Add(time.Minute))
		}
		a = a.observe(now, last, true, arr, window)
		last = now
	}
	r, ok := a.rate(now, window)
	// Window from 11:52:20 (first whole bucket) to 12:12:00... that is 12:02:20 to 12:12:00: 580 s
	// holding 39 arrivals at 15 s plus the one clamped to now.
	if !ok || math.Abs(r*580-40) > 1e-9 {
		t.Fatalf("rate %v (%v), want 40 arrivals over 580 s", r, ok)
	}
	if n := len(a.Buckets); n > bucketsPerWindow+2 {
		t.Fatalf("%d buckets kept, want at most a window's", n)
	}
	// Unsorted arrivals land in their buckets.
	b := Arrivals{}.observe(t0, time.Time{}, true, nil, window)
	b = b.observe(t0.Add(time.Minute), t0, true, []time.Time{t0.Add(50 * time.Second), t0.Add(5 * time.Second), t0.Add(25 * time.Second)}, window)
	counts := []int{}
	for _, x := range b.Buckets {
		counts = append(counts, x.Count)
	}
	if !slices.Equal(counts, []int{1, 1, 1}) || !slices.IsSortedFunc(b.Buckets, func(x, y ArrivalBucket) int { return x.Start.Compare(y.Start) }) {
		t.Fatalf("buckets %+v", b.Buckets)
	}
	// The caller's state is not modified.
	before := slices.Clone(b.Buckets)
	_ = b.observe(t0.Add(70*time.Second), t0.Add(time.Minute), true, []time.Time{t0.Add(65 * time.Second)}, window)
	if !slices.Equal(before, b.Buckets) {
		t.Fatal("observe modified its receiver's buckets")
	}
}

func TestWeekProfile(t *testing.T) {
	// Two weeks of a routine: 20 jobs a minute on Mondays 09:00-10:00 UTC, nothing otherwise.
	// In the third week, at 08:58, the recent rate is zero but the profile knows the coming
	// hour: the spare is sized for it.
	c := adaptiveConfig()
	c.Spare.TimeOfWeek = true
	p := mustCompile(t, c)
	monday := time.Date(2026, time.June, 1, 0, 0, 0, 0, time.UTC) // a Monday
	var s State
	for week := range 2 {
		start := monday.AddDate(0, 0, 7*week).Add(8 * time.Hour)
		var d Decision
		ds, next := feed(p, s, start, 10*time.Second, 3*360, stream(start.Add(time.Hour), start.Add(2*time.Hour), 3*time.Second), 0, 0)
		d, s = ds[len(ds)-1], next
		_ = d
		// A gap of a week: the estimator restarts; the profile stays.
		s.LastEvaluation = time.Time{}
	}
	// Learned from the recent rate, which lags the hour's start by up to a window: a little low.
	if r, ok := s.Arrivals.Week.at(monday.Add(9*time.Hour + 30*time.Minute)); !ok || r < 17 || r > 20.5 {
		t.Fatalf("learned Monday 09:00 rate %v (%v), want about 20/min", r, ok)
	}
	if _, ok := s.Arrivals.Week.at(monday.Add(12 * time.Hour)); ok {
		t.Fatal("an hour never observed is learned")
	}
	start := monday.AddDate(0, 0, 14).Add(8*time.Hour + 50*time.Minute)
	ds, _ := feed(p, s, start, 10*time.Second, 49, nil, 0, 0) // to 08:58
	d := ds[len(ds)-1]
	if d.SpareFrom != SpareAtMax || d.Spare != c.Spare.Max || !d.ArrivalsKnown || d.ArrivalRate != 0 {
		t.Fatalf("at 08:58 in week 3: %+v, want the spare at max (from the week profile; nothing arrived recently)", d)
	}
	// Below Max the source says so: one job a minute learned for Monday 09:00 sizes a spare of
	// 3 at 08:58 (Poisson(2*0.8)'s 90% quantile), with nothing arrived recently.
	prof := NewWeekProfile()
	prof.Rates[9] = 1
	at := start.Add(8 * time.Minute)
	quiet := State{LastEvaluation: at.Add(-10 * time.Second), Arrivals: Arrivals{Since: at.Add(-time.Hour), Week: prof}}
	c.Spare.TimeOfWeek = true
	if d, _ := mustCompile(t, c).Decide(Input{Now: at, Known: true}, quiet); d.Spare != 3 || d.SpareFrom != SpareWeekProfile {
		t.Fatalf("learned 1/min ahead: %+v, want 3 spare from the week profile", d)
	}
	// Without the profile the same moment keeps no spare.
	c.Spare.TimeOfWeek = false
	ds, _ = feed(mustCompile(t, c), s, start, 10*time.Second, 49, nil, 0, 0)
	if d := ds[len(ds)-1]; d.Spare != 0 {
		t.Fatalf("without the profile: spare %d", d.Spare)
	}
}

// randomSpareInputs is a random sequence with arrivals, stale stretches and clock jumps.
func randomSpareInputs(r *rand.Rand, n int) []Input {
	now := t0.Add(time.Duration(r.IntN(7*24*60)) * time.Minute)
	rate := r.IntN(30)
	ins := make([]Input, n)
	for i := range ins {
		step := time.Duration(1+r.IntN(60)) * time.Second
		switch r.IntN(40) {
		case 0:
			step = time.Duration(r.IntN(3)) * time.Hour // forward jump
		case 1:
			step = -time.Duration(1+r.IntN(120)) * time.Minute // backward jump
		case 2, 3:
			rate = r.IntN(60)
		}
		prev := now
		now = now.Add(step)
		var arr []time.Time
		if step > 0 {
			for k := range rate * int(step.Seconds()) / 60 {
				arr = append(arr, prev.Add(time.Duration(k)*step/time.Duration(max(1, rate*int(step.Seconds())/60))))
			}
		}
		ins[i] = Input{Now: now, Queued: r.IntN(20), Running: r.IntN(40), Known: r.IntN(10) != 0, Arrivals: arr}
	}
	return ins
}

func randomSpareConfig(r *rand.Rand) Config {
	c := Config{
		JobsPerNode: 1 + r.IntN(4), WarmMinimum: r.IntN(5), MaxNodes: r.IntN(60),
		ScaleDownStabilization: []time.Duration{time.Second, time.Minute, 5 * time.Minute}[r.IntN(3)],
		Spare: Spare{
			Probability: []float64{0, 0.5, 0.9, 0.99}[r.IntN(4)], BootTime: time.Duration(1+r.IntN(300)) * time.Second,
			Window: time.Duration(1+r.IntN(30)) * time.Minute, Constant: r.IntN(4), Max: r.IntN(20), TimeOfWeek: r.IntN(2) == 0,
		},
	}
	if r.IntN(2) == 0 {
		c.WarmWindows = []config.WarmWindow{{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 8 * time.Hour}, Spare: r.IntN(10)}}
	}
	return c
}

func forEachSpareSequence(t *testing.T, f func(t *testing.T, seed uint64, p *Policy, ins []Input)) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 0x59a7e))
		c := randomSpareConfig(r)
		f(t, seed, mustCompile(t, c), randomSpareInputs(r, 200))
		if t.Failed() {
			t.Fatalf("seed %d, config %+v", seed, c)
		}
	}
}

// Never above Max, never negative, never above MaxNodes; unknown data never raises the spare.
func TestPropertySpareBounds(t *testing.T) {
	forEachSpareSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
		c := p.Config()
		var s State
		for i, in := range ins {
			d, next := p.Decide(in, s)
			if d.Spare < 0 || d.Spare > c.Spare.Max || d.Desired > c.MaxNodes || next.SpareSlots < 0 {
				t.Errorf("seed %d step %d: spare %d (max %d), desired %d (max %d), slots %d", seed, i, d.Spare, c.Spare.Max, d.Desired, c.MaxNodes, next.SpareSlots)
			}
			if !d.ArrivalsKnown && next.SpareSlots != max(s.SpareSlots, 0) && c.Spare.adaptive() {
				t.Errorf("seed %d step %d: rate unknown but slots moved %d -> %d", seed, i, s.SpareSlots, next.SpareSlots)
			}
			if !c.Spare.adaptive() && (d.ArrivalsKnown || next.SpareSlots != 0) {
				t.Errorf("seed %d step %d: estimator ran without an adaptive spare", seed, i)
			}
			if (d.Spare == 0) != (d.SpareFrom == "") || d.SpareFrom != "" && !slices.Contains(SpareSources(), d.SpareFrom) {
				t.Errorf("seed %d step %d: spare %d from %q", seed, i, d.Spare, d.SpareFrom)
			}
			s = next
		}
	})
}

// Monotone in the arrival rate: a sequence with extra arrivals at every step never gets fewer
// nodes or less spare, step by step.
func TestPropertySpareMonotoneInArrivals(t *testing.T) {
	forEachSpareSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
		r := rand.New(rand.NewPCG(seed, 0x6d6f6e))
		var low, high State
		for i, in := range ins {
			more := in
			more.Arrivals = slices.Clone(in.Arrivals)
			for range r.IntN(10) {
				more.Arrivals = append(more.Arrivals, in.Now.Add(-time.Duration(r.IntN(10))*time.Second))
			}
			dl, nl := p.Decide(in, low)
			dh, nh := p.Decide(more, high)
			if dh.Desired < dl.Desired || dh.Spare < dl.Spare || nh.SpareSlots < nl.SpareSlots {
				t.Errorf("seed %d step %d: more arrivals gave desired %d spare %d slots %d, fewer gave %d %d %d",
					seed, i, dh.Desired, dh.Spare, nh.SpareSlots, dl.Desired, dl.Spare, nl.SpareSlots)
			}
			low, high = nl, nh
		}
	})
}

// Keeping State (estimator included) as JSON does not change any decision.
func TestPropertySpareStateSurvivesJSON(t *testing.T) {
	forEachSpareSequence(t, func(t *testing.T, seed uint64, p *Policy, ins []Input) {
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
			if len(b) > 16<<10 {
				t.Fatalf("seed %d step %d: state is %d bytes of JSON", seed, i, len(b))
			}
			disk = State{}
			if err := json.Unmarshal(b, &disk); err != nil {
				t.Fatal(err)
			}
			mem = nm
		}
	})
}

func TestSpareFromConfig(t *testing.T) {
	boot := metav1.Duration{Duration: time.Minute}
	tests := []struct {
		name string
		in   config.Spare
		want Spare
	}{
		{"defaults", config.DefaultSpare(), Spare{Probability: 0.9, BootTime: time.Minute, Window: 10 * time.Minute, Max: 14}},
		{"not defaulted reads the defaults", config.Spare{}, Spare{Probability: 0.9, BootTime: time.Minute, Window: 10 * time.Minute, Max: 14}},
		{"adaptive, set", config.Spare{Mode: config.SpareModeAdaptive, Probability: ptrInt(99), BootTime: &boot, Window: &boot, Constant: 2, Max: ptrInt(4), TimeOfWeek: true},
			Spare{Probability: 0.99, BootTime: time.Minute, Window: time.Minute, Constant: 2, Max: 4, TimeOfWeek: true}},
		{"constant", config.Spare{Mode: config.SpareModeConstant, Constant: 20}, Spare{Constant: 20, Max: 20}},
		{"off", config.Spare{Mode: config.SpareModeOff, Constant: 3}, Spare{}},
	}
	for _, tt := range tests {
		if got := SpareFromConfig(tt.in); got != tt.want {
			t.Errorf("%s: SpareFromConfig = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if errs := (Config{JobsPerNode: 1, Spare: SpareFromConfig(config.DefaultSpare())}).Validate(nil); len(errs) > 0 {
		t.Fatalf("the default spare does not validate: %v", errs)
	}
}

func ptrInt(n int) *int { return &n }
