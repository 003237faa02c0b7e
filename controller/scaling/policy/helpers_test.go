package policy

import (
	"testing"
	"time"
)

// t0 is a fixed instant: tests never read the wall clock.
var t0 = time.Date(2026, time.June, 1, 12, 0, 0, 0, time.UTC)

func mustCompile(t testing.TB, c Config) *Policy {
	t.Helper()
	p, err := Compile(c)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", c, err)
	}
	return p
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

// baseConfig is the config most tests vary: 2 jobs per node, warm 1, max 10, default window.
func baseConfig() Config {
	return Config{JobsPerNode: 2, WarmMinimum: 1, MaxNodes: 10}
}

// evaluated is a previous state whose last evaluation was 30 s before t0, with no history.
func evaluated(desired int, history ...Recommendation) State {
	return State{Desired: desired, History: history, LastEvaluation: t0.Add(-30 * time.Second)}
}

func rec(ago time.Duration, target int) Recommendation {
	return Recommendation{At: t0.Add(-ago), Target: target}
}
