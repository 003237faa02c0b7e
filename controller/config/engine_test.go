package config

import (
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/volumes/engine"
)

// supportedEngines is how validation names the table's ranges.
var supportedEngines = engine.Supported()

const gcWant = `must be "<int>%" of the node's disk ("75%") or a size in binary units ("100GB" = 100 GiB, "512m" = 512 MiB, "100GiB"): the engine cannot parse it`

// The engine's own decoding (buildkitd config DiskSpace.UnmarshalText over go-units
// RAMInBytes) decides; warmpool adds only that a share is 1-100 % and a size at least a byte.
func TestValidateDiskSpace(t *testing.T) {
	accepted := []string{
		"75%", "1%", "100%", "+5%",
		"100GB", "100gb", "100G", "100g", "100GiB", "100gib", "100 GB", // binary units, any spelling
		"512m", "512MB", "512MiB", "1.5GB", "1TB", "2T",
		"1073741824", "1024b", "1B",
		// go-units parses the number with strconv.ParseFloat, so the engine takes these too.
		"1e9", "1_000", "5.",
	}
	for _, v := range accepted {
		if err := ValidateDiskSpace(v); err != nil {
			t.Errorf("ValidateDiskSpace(%q) = %v, want accepted (the engine reads it)", v, err)
		}
	}
	rejected := map[string]string{
		"50Gi":    "invalid suffix", // Kubernetes' unit: the engine refuses it
		"100GBb":  "invalid suffix",
		"10 %":    "the engine cannot parse it",
		"1.5%":    "the engine cannot parse it",
		"%":       "the engine cannot parse it",
		"lots":    "invalid size",
		"-1":      "invalid size",
		" 100GB":  "the engine cannot parse it",
		"Inf":     "invalid size",
		"0":       "at least 1 byte",
		"0GB":     "at least 1 byte",
		".5":      "at least 1 byte", // 0.5 bytes truncates to 0
		"0%":      "from 1% to 100%",
		"101%":    "from 1% to 100%",
		"-5%":     "from 1% to 100%",
		"100GB\"": "the engine cannot parse it",
	}
	for v, want := range rejected {
		err := ValidateDiskSpace(v)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateDiskSpace(%q) = %v, want an error containing %q", v, err, want)
		}
	}
}

func TestEngineDrainSeconds(t *testing.T) {
	for _, tc := range []struct {
		grace, stop *int64
		want        int64
	}{
		{nil, nil, 570}, // the defaults: 900 - 300 - 30
		{ptr.To[int64](900), ptr.To[int64](300), 570},
		{ptr.To[int64](330), nil, 0},
		{ptr.To[int64](331), nil, 1},
		{ptr.To[int64](30), nil, 0}, // never negative
		{ptr.To[int64](3600), ptr.To[int64](1200), 2370},
		{ptr.To[int64](900), ptr.To[int64](870), 0},
	} {
		e := Engine{TerminationGracePeriodSeconds: tc.grace, StopSeconds: tc.stop}
		if got := e.DrainSeconds(); got != tc.want {
			t.Errorf("grace %v stop %v: DrainSeconds = %d, want %d", deref(tc.grace), deref(tc.stop), got, tc.want)
		}
	}
}

func deref(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// Defaulting fills stopSeconds, and a defaulted pool's drain wait leaves the engine its stop.
func TestEngineStopSecondsDefault(t *testing.T) {
	cfg := mustDecode(t, minimalYAML)
	Default(cfg)
	e := cfg.Pools[0].Engine
	if e.StopSeconds == nil || *e.StopSeconds != DefaultEngineStopSeconds {
		t.Fatalf("stopSeconds = %v, want %d", e.StopSeconds, DefaultEngineStopSeconds)
	}
	if got := e.DrainSeconds() + *e.StopSeconds + EngineExitSeconds; got != *e.TerminationGracePeriodSeconds {
		t.Errorf("drain %d + stop %d + exit %d = %d, want the grace period %d", e.DrainSeconds(), *e.StopSeconds, EngineExitSeconds, got, *e.TerminationGracePeriodSeconds)
	}
}
