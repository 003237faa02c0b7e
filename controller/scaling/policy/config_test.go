package policy

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/config"
)

func TestValidate(t *testing.T) {
	window := config.WarmWindow{Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 8 * time.Hour}, Minimum: 3, TimeZone: "Europe/Berlin"}
	withWindow := func(mut func(*config.WarmWindow)) Config {
		c := baseConfig()
		w := window
		mut(&w)
		c.WarmWindows = []config.WarmWindow{w}
		return c
	}
	tests := []struct {
		name   string
		config Config
		// wantFields are the field paths of the expected errors, in order; nil means valid.
		wantFields []string
	}{
		{"base", baseConfig(), nil},
		{"with window", withWindow(func(*config.WarmWindow) {}), nil},
		{"zero max is valid (pool held at zero)", Config{JobsPerNode: 1}, nil},
		{"warm above max is valid (max wins)", Config{JobsPerNode: 1, WarmMinimum: 5, MaxNodes: 2}, nil},
		{"descriptor schedule", withWindow(func(w *config.WarmWindow) { w.Schedule = "@daily" }), nil},
		{"empty zone means UTC", withWindow(func(w *config.WarmWindow) { w.TimeZone = "" }), nil},
		{"zero value", Config{}, []string{"scaling.jobsPerNode"}},
		{"negatives", Config{JobsPerNode: 1, WarmMinimum: -1, MaxNodes: -1, ScaleDownStabilization: -time.Second, ScaleDownStep: -1},
			[]string{"scaling.warmMinimum", "scaling.maxNodes", "scaling.scaleDownStabilization", "scaling.scaleDownStep"}},
		{"bad cron", withWindow(func(w *config.WarmWindow) { w.Schedule = "0 25 * * *" }), []string{"scaling.warmWindows[0].schedule"}},
		{"six fields", withWindow(func(w *config.WarmWindow) { w.Schedule = "0 0 9 * * 1-5" }), []string{"scaling.warmWindows[0].schedule"}},
		{"empty schedule", withWindow(func(w *config.WarmWindow) { w.Schedule = " " }), []string{"scaling.warmWindows[0].schedule"}},
		{"@every", withWindow(func(w *config.WarmWindow) { w.Schedule = "@every 1h" }), []string{"scaling.warmWindows[0].schedule"}},
		{"TZ prefix", withWindow(func(w *config.WarmWindow) { w.Schedule = "TZ=UTC 0 9 * * *" }), []string{"scaling.warmWindows[0].schedule"}},
		{"CRON_TZ prefix", withWindow(func(w *config.WarmWindow) { w.Schedule = "CRON_TZ=UTC 0 9 * * *" }), []string{"scaling.warmWindows[0].schedule"}},
		{"never fires", withWindow(func(w *config.WarmWindow) { w.Schedule = "0 0 30 2 *" }), []string{"scaling.warmWindows[0].schedule"}},
		{"zero duration", withWindow(func(w *config.WarmWindow) { w.Duration.Duration = 0 }), []string{"scaling.warmWindows[0].duration"}},
		{"negative minimum", withWindow(func(w *config.WarmWindow) { w.Minimum = -1 }), []string{"scaling.warmWindows[0].minimum"}},
		{"unknown zone", withWindow(func(w *config.WarmWindow) { w.TimeZone = "Mars/Olympus" }), []string{"scaling.warmWindows[0].timeZone"}},
		{"Local zone", withWindow(func(w *config.WarmWindow) { w.TimeZone = "Local" }), []string{"scaling.warmWindows[0].timeZone"}},
		{"all window fields at once", withWindow(func(w *config.WarmWindow) {
			*w = config.WarmWindow{Schedule: "x", Duration: metav1.Duration{Duration: -1}, Minimum: -1, TimeZone: "x/y"}
		}),
			[]string{"scaling.warmWindows[0].schedule", "scaling.warmWindows[0].duration", "scaling.warmWindows[0].minimum", "scaling.warmWindows[0].timeZone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.config.Validate(field.NewPath("scaling"))
			var got []string
			for _, e := range errs {
				got = append(got, e.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantFields, ",") {
				t.Fatalf("error fields = %v, want %v (errors: %v)", got, tt.wantFields, errs)
			}
			_, err := Compile(tt.config)
			if (err == nil) != (len(tt.wantFields) == 0) {
				t.Fatalf("Compile error = %v, want error: %v", err, len(tt.wantFields) > 0)
			}
		})
	}
}

func TestValidateNilPath(t *testing.T) {
	errs := Config{}.Validate(nil)
	if len(errs) != 1 || errs[0].Field != "jobsPerNode" {
		t.Fatalf("errors = %v, want one on jobsPerNode", errs)
	}
}

func TestWarnings(t *testing.T) {
	c := Config{JobsPerNode: 1, WarmMinimum: 5, MaxNodes: 3, WarmWindows: []config.WarmWindow{
		{Schedule: "@daily", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 2},
		{Schedule: "@daily", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 4},
	}}
	got := c.Warnings()
	if len(got) != 2 || !strings.Contains(got[0], "warmMinimum 5") || !strings.Contains(got[1], "warmWindows[1]") {
		t.Fatalf("Warnings() = %q", got)
	}
	if w := baseConfig().Warnings(); len(w) != 0 {
		t.Fatalf("base config warnings = %q, want none", w)
	}
}

func TestCompileCopiesConfig(t *testing.T) {
	c := baseConfig()
	c.WarmWindows = []config.WarmWindow{{Schedule: "@daily", Duration: metav1.Duration{Duration: time.Hour}, Minimum: 2}}
	p := mustCompile(t, c)
	c.WarmWindows[0].Minimum = 99
	if got := p.Config().WarmWindows[0].Minimum; got != 2 {
		t.Fatalf("policy saw the caller's later edit: minimum %d", got)
	}
	if got := p.Config().ScaleDownStabilization; got != 0 {
		t.Fatalf("Config() = %v, want the config as given (0)", got)
	}
}

func TestDecideFunctionRejectsInvalidConfig(t *testing.T) {
	prev := evaluated(3)
	_, s, err := Decide(Config{}, Input{Now: t0, Known: true}, prev)
	if err == nil {
		t.Fatal("Decide with zero config: want error")
	}
	if s.Desired != 3 {
		t.Fatalf("state on error = %+v, want prev unchanged", s)
	}
	d, _, err := Decide(baseConfig(), Input{Now: t0, Known: true, Queued: 5}, prev)
	if err != nil || d.Desired != 3 || d.Reason != ReasonSteady {
		t.Fatalf("Decide = %+v, %v; want 3 Steady", d, err)
	}
}
