package policy

import (
	"math"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

// officeHours is active on every day from 09:00 to 17:00 UTC; t0 (12:00) is inside it.
var officeHours = config.WarmWindow{Schedule: "0 9 * * *", Duration: metav1.Duration{Duration: 8 * time.Hour}, Minimum: 4}

func TestDecide(t *testing.T) {
	known := func(queued, running int) Input {
		return Input{Now: t0, Queued: queued, Running: running, Known: true}
	}
	unknown := Input{Now: t0, Queued: 100, Running: 100} // counts must be ignored
	with := func(mut func(*Config)) Config {
		c := baseConfig()
		mut(&c)
		return c
	}
	tests := []struct {
		name   string
		config Config
		in     Input
		prev   State
		want   Decision
	}{
		{"queue grew: up at once", baseConfig(), known(5, 1), evaluated(1),
			Decision{Desired: 3, Direction: DirectionUp, Reason: ReasonQueueGrew, Target: 3, QueueNodes: 3, WarmMinimum: 1}},
		{"odd job count rounds up", baseConfig(), known(4, 1), evaluated(1),
			Decision{Desired: 3, Direction: DirectionUp, Reason: ReasonQueueGrew, Target: 3, QueueNodes: 3, WarmMinimum: 1}},
		{"steady", baseConfig(), known(3, 3), evaluated(3),
			Decision{Desired: 3, Direction: DirectionNone, Reason: ReasonSteady, Target: 3, QueueNodes: 3, WarmMinimum: 1}},
		{"warm minimum raises an idle pool", with(func(c *Config) { c.WarmMinimum = 2 }), known(0, 0), evaluated(0),
			Decision{Desired: 2, Direction: DirectionUp, Reason: ReasonWarmMinimum, Target: 2, WarmMinimum: 2}},
		{"warm minimum holds an idle pool", with(func(c *Config) { c.WarmMinimum = 2 }), known(1, 0), evaluated(2),
			Decision{Desired: 2, Direction: DirectionNone, Reason: ReasonWarmMinimum, Target: 2, QueueNodes: 1, WarmMinimum: 2}},
		{"warm window raises", with(func(c *Config) { c.WarmWindows = []config.WarmWindow{officeHours} }), known(2, 0), evaluated(1),
			Decision{Desired: 4, Direction: DirectionUp, Reason: ReasonWarmWindow, Target: 4, QueueNodes: 1, WarmMinimum: 4, WarmWindowActive: true}},
		{"queue above the window floor wins", with(func(c *Config) { c.WarmWindows = []config.WarmWindow{officeHours} }), known(12, 0), evaluated(4),
			Decision{Desired: 6, Direction: DirectionUp, Reason: ReasonQueueGrew, Target: 6, QueueNodes: 6, WarmMinimum: 4, WarmWindowActive: true}},
		{"at max: capped scale-up", baseConfig(), known(50, 10), evaluated(2),
			Decision{Desired: 10, Direction: DirectionUp, Reason: ReasonAtMax, Target: 10, QueueNodes: 30, WarmMinimum: 1}},
		{"at max: held", baseConfig(), known(50, 10), evaluated(10),
			Decision{Desired: 10, Direction: DirectionNone, Reason: ReasonAtMax, Target: 10, QueueNodes: 30, WarmMinimum: 1}},
		{"exactly max demand is steady, not capped", baseConfig(), known(20, 0), evaluated(10),
			Decision{Desired: 10, Direction: DirectionNone, Reason: ReasonSteady, Target: 10, QueueNodes: 10, WarmMinimum: 1}},
		{"max lowered: down at once despite the window", baseConfig(), known(50, 0), evaluated(15, rec(time.Minute, 15)),
			Decision{Desired: 10, Direction: DirectionDown, Reason: ReasonAtMax, Target: 10, QueueNodes: 25, WarmMinimum: 1}},
		{"max lowered with an empty queue: to max, then stabilized", baseConfig(), known(0, 0), evaluated(15, rec(time.Minute, 15)),
			Decision{Desired: 10, Direction: DirectionDown, Reason: ReasonAtMax, Target: 1, WarmMinimum: 1, StabilizedUntil: t0.Add(4 * time.Minute)}},
		{"warm minimum above max: max wins", with(func(c *Config) { c.WarmMinimum = 20 }), known(0, 0), evaluated(3),
			Decision{Desired: 10, Direction: DirectionUp, Reason: ReasonWarmMinimum, Target: 10, WarmMinimum: 10}},
		{"max zero holds the pool at zero", with(func(c *Config) { c.MaxNodes = 0 }), known(9, 9), evaluated(0),
			Decision{Desired: 0, Direction: DirectionNone, Reason: ReasonAtMax, Target: 0, QueueNodes: 9}},
		{"stabilizing: a recent higher target holds", baseConfig(), known(0, 0), evaluated(5, rec(time.Minute, 5)),
			Decision{Desired: 5, Direction: DirectionNone, Reason: ReasonStabilizing, Target: 1, WarmMinimum: 1, StabilizedUntil: t0.Add(4 * time.Minute)}},
		{"stabilizing: just inside the default window", baseConfig(), known(0, 0), evaluated(5, rec(5*time.Minute-time.Nanosecond, 5)),
			Decision{Desired: 5, Direction: DirectionNone, Reason: ReasonStabilizing, Target: 1, WarmMinimum: 1, StabilizedUntil: t0.Add(time.Nanosecond)}},
		{"drained: to the highest target still in the window", baseConfig(), known(0, 0), evaluated(5, rec(5*time.Minute, 5), rec(2*time.Minute, 3)),
			Decision{Desired: 3, Direction: DirectionDown, Reason: ReasonQueueDrained, Target: 1, WarmMinimum: 1, StabilizedUntil: t0.Add(3 * time.Minute)}},
		{"drained: window empty, down to target", baseConfig(), known(2, 1), evaluated(5, rec(6*time.Minute, 5)),
			Decision{Desired: 2, Direction: DirectionDown, Reason: ReasonQueueDrained, Target: 2, QueueNodes: 2, WarmMinimum: 1}},
		{"drained to the warm floor", with(func(c *Config) { c.WarmWindows = []config.WarmWindow{officeHours} }), known(0, 0), evaluated(7),
			Decision{Desired: 4, Direction: DirectionDown, Reason: ReasonQueueDrained, Target: 4, WarmMinimum: 4, WarmWindowActive: true}},
		{"custom window", with(func(c *Config) { c.ScaleDownStabilization = time.Minute }), known(0, 0), evaluated(5, rec(time.Minute, 5)),
			Decision{Desired: 1, Direction: DirectionDown, Reason: ReasonQueueDrained, Target: 1, WarmMinimum: 1}},
		{"step limited", with(func(c *Config) { c.ScaleDownStep = 2 }), known(0, 0), evaluated(8),
			Decision{Desired: 6, Direction: DirectionDown, Reason: ReasonStepLimited, Target: 1, WarmMinimum: 1}},
		{"step not binding", with(func(c *Config) { c.ScaleDownStep = 2 }), known(0, 0), evaluated(3),
			Decision{Desired: 1, Direction: DirectionDown, Reason: ReasonQueueDrained, Target: 1, WarmMinimum: 1}},
		{"step limits a partial stabilized drop", with(func(c *Config) { c.ScaleDownStep = 1 }), known(0, 0), evaluated(8, rec(time.Minute, 5)),
			Decision{Desired: 7, Direction: DirectionDown, Reason: ReasonStepLimited, Target: 1, WarmMinimum: 1}},
		{"step does not limit scale-up", with(func(c *Config) { c.ScaleDownStep = 1 }), known(20, 0), evaluated(1),
			Decision{Desired: 10, Direction: DirectionUp, Reason: ReasonQueueGrew, Target: 10, QueueNodes: 10, WarmMinimum: 1}},
		{"unknown: holds against a big queue", baseConfig(), unknown, evaluated(5),
			Decision{Desired: 5, Direction: DirectionNone, Reason: ReasonUnknownQueue, Target: 5, WarmMinimum: 1}},
		{"unknown: holds without history", baseConfig(), Input{Now: t0}, evaluated(5, rec(time.Hour, 5)),
			Decision{Desired: 5, Direction: DirectionNone, Reason: ReasonUnknownQueue, Target: 5, WarmMinimum: 1}},
		{"unknown: warm floor still raises", with(func(c *Config) { c.WarmMinimum = 3 }), unknown, evaluated(0),
			Decision{Desired: 3, Direction: DirectionUp, Reason: ReasonWarmMinimum, Target: 3, WarmMinimum: 3}},
		{"unknown: warm window still raises", with(func(c *Config) { c.WarmWindows = []config.WarmWindow{officeHours} }), unknown, evaluated(2),
			Decision{Desired: 4, Direction: DirectionUp, Reason: ReasonWarmWindow, Target: 4, WarmMinimum: 4, WarmWindowActive: true}},
		{"unknown: max still caps", baseConfig(), unknown, evaluated(12),
			Decision{Desired: 10, Direction: DirectionDown, Reason: ReasonAtMax, Target: 10, WarmMinimum: 1}},
		{"fresh state starts from current nodes", baseConfig(), Input{Now: t0, Known: true, CurrentNodes: 6}, State{},
			Decision{Desired: 6, Direction: DirectionNone, Reason: ReasonStabilizing, Target: 1, WarmMinimum: 1, StabilizedUntil: t0.Add(5 * time.Minute)}},
		{"fresh state scales up from current nodes", baseConfig(), Input{Now: t0, Known: true, Queued: 16, CurrentNodes: 6}, State{},
			Decision{Desired: 8, Direction: DirectionUp, Reason: ReasonQueueGrew, Target: 8, QueueNodes: 8, WarmMinimum: 1}},
		{"fresh state above max", baseConfig(), Input{Now: t0, Known: true, CurrentNodes: 14}, State{},
			Decision{Desired: 10, Direction: DirectionDown, Reason: ReasonAtMax, Target: 1, WarmMinimum: 1, StabilizedUntil: t0.Add(5 * time.Minute)}},
		{"fresh state, unknown queue", baseConfig(), Input{Now: t0, CurrentNodes: 4}, State{},
			Decision{Desired: 4, Direction: DirectionNone, Reason: ReasonUnknownQueue, Target: 4, WarmMinimum: 1}},
		{"current nodes ignored once evaluated", baseConfig(), Input{Now: t0, Known: true, Queued: 4, CurrentNodes: 9}, evaluated(2),
			Decision{Desired: 2, Direction: DirectionNone, Reason: ReasonSteady, Target: 2, QueueNodes: 2, WarmMinimum: 1}},
		{"negative counts are zero", baseConfig(), known(-5, -5), evaluated(1),
			Decision{Desired: 1, Direction: DirectionNone, Reason: ReasonWarmMinimum, Target: 1, WarmMinimum: 1}},
		{"absurd counts saturate", baseConfig(), known(math.MaxInt, math.MaxInt), evaluated(1),
			Decision{Desired: 10, Direction: DirectionUp, Reason: ReasonAtMax, Target: 10, QueueNodes: math.MaxInt / 2, WarmMinimum: 1}},
		{"negative previous desired is zero", with(func(c *Config) { c.WarmMinimum = 0 }), known(0, 0), evaluated(-4),
			Decision{Desired: 0, Direction: DirectionNone, Reason: ReasonSteady, Target: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, tt.config)
			got, state := p.Decide(tt.in, tt.prev)
			if got != tt.want {
				t.Fatalf("Decide =\n %+v\nwant\n %+v", got, tt.want)
			}
			if state.Desired != got.Desired || !state.LastEvaluation.Equal(tt.in.Now) {
				t.Fatalf("state = %+v, want Desired %d evaluated at %v", state, got.Desired, tt.in.Now)
			}
			if n := len(state.History); n == 0 || state.History[n-1].Target != got.Target || !state.History[n-1].At.Equal(t0) {
				t.Fatalf("state history %+v does not end with this target %d at t0", state.History, got.Target)
			}
		})
	}
}

// step is one evaluation of a scripted timeline.
type step struct {
	at      time.Duration // after t0
	queued  int
	unknown bool
	want    int
	reason  Reason
}

func runTimeline(t *testing.T, c Config, start State, steps []step) {
	t.Helper()
	p := mustCompile(t, c)
	s := start
	for _, st := range steps {
		var d Decision
		d, s = p.Decide(Input{Now: t0.Add(st.at), Queued: st.queued, Known: !st.unknown}, s)
		if d.Desired != st.want || (st.reason != "" && d.Reason != st.reason) {
			t.Fatalf("at +%v queued %d unknown %v: desired %d (%s), want %d (%s)", st.at, st.queued, st.unknown, d.Desired, d.Reason, st.want, st.reason)
		}
	}
}

func TestTimelineBurstThenDrain(t *testing.T) {
	runTimeline(t, baseConfig(), evaluated(1), []step{
		{at: 0, queued: 20, want: 10, reason: ReasonQueueGrew},
		{at: 30 * time.Second, queued: 0, want: 10, reason: ReasonStabilizing},
		{at: 4*time.Minute + 59*time.Second, queued: 0, want: 10, reason: ReasonStabilizing},
		{at: 5 * time.Minute, queued: 0, want: 1, reason: ReasonQueueDrained},
		{at: 5*time.Minute + 30*time.Second, queued: 3, want: 2, reason: ReasonQueueGrew},
	})
}

func TestTimelineStepDown(t *testing.T) {
	c := baseConfig()
	c.ScaleDownStep = 3
	runTimeline(t, c, evaluated(1), []step{
		{at: 0, queued: 20, want: 10},
		{at: 5 * time.Minute, want: 7, reason: ReasonStepLimited},
		{at: 5*time.Minute + 30*time.Second, want: 4, reason: ReasonStepLimited},
		{at: 6 * time.Minute, want: 1, reason: ReasonQueueDrained},
		{at: 6*time.Minute + 30*time.Second, want: 1, reason: ReasonWarmMinimum},
	})
}

// A peak mid-window restarts the hold from the later recommendation.
func TestTimelineStepwiseStabilization(t *testing.T) {
	runTimeline(t, baseConfig(), evaluated(1), []step{
		{at: 0, queued: 16, want: 8},
		{at: 2 * time.Minute, queued: 8, want: 8, reason: ReasonStabilizing},
		{at: 5 * time.Minute, queued: 0, want: 4, reason: ReasonQueueDrained},
		{at: 7 * time.Minute, queued: 0, want: 1, reason: ReasonQueueDrained},
	})
}

// After a stale period the policy needs a full window of fresh evidence before scaling down,
// because the held count was recorded while the data was unknown.
func TestTimelineUnknownThenRecovery(t *testing.T) {
	runTimeline(t, baseConfig(), evaluated(1), []step{
		{at: 0, queued: 12, want: 6, reason: ReasonQueueGrew},
		{at: time.Minute, unknown: true, want: 6, reason: ReasonUnknownQueue},
		{at: 20 * time.Minute, unknown: true, want: 6, reason: ReasonUnknownQueue},
		{at: 20*time.Minute + 30*time.Second, queued: 0, want: 6, reason: ReasonStabilizing},
		{at: 25 * time.Minute, queued: 0, want: 1, reason: ReasonQueueDrained},
	})
}

// Desired changes when a warm window opens (at once) and closes (stabilized).
func TestTimelineWarmWindow(t *testing.T) {
	c := baseConfig()
	c.WarmWindows = []config.WarmWindow{{Schedule: "5 12 * * *", Duration: metav1.Duration{Duration: 10 * time.Minute}, Minimum: 5, TimeZone: "Europe/Berlin"}}
	// 12:05 Berlin (CEST) is 10:05 UTC; t0 is 12:00 UTC, so start two hours earlier.
	base := -2 * time.Hour
	runTimeline(t, c, evaluated(1), []step{
		{at: base + 4*time.Minute, want: 1, reason: ReasonWarmMinimum},
		{at: base + 5*time.Minute, want: 5, reason: ReasonWarmWindow},
		{at: base + 14*time.Minute, want: 5, reason: ReasonWarmWindow},
		{at: base + 15*time.Minute, want: 5, reason: ReasonStabilizing},
		{at: base + 19*time.Minute, want: 1, reason: ReasonQueueDrained},
	})
}
