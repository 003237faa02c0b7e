package operatortest

import (
	"fmt"
	"testing"

	dto "github.com/prometheus/client_model/go"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metric reads the series of name whose labels are exactly labels from the registry the
// manager serves on /metrics: a counter's or gauge's value, a histogram's sample count. ok is
// false when the series does not exist (yet).
func Metric(t testing.TB, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	for _, m := range series(t, name) {
		if labelsEqual(m.GetLabel(), labels) {
			return value(m), true
		}
	}
	return 0, false
}

// MetricSum adds up the series of name whose labels include every one of labels (0 when there
// is none): controller_runtime_reconcile_total of one controller over every result, say.
func MetricSum(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	total := 0.0
	for _, m := range series(t, name) {
		if labelsInclude(m.GetLabel(), labels) {
			total += value(m)
		}
	}
	return total
}

func series(t testing.TB, name string) []*dto.Metric {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

func labelsEqual(pairs []*dto.LabelPair, want map[string]string) bool {
	return len(pairs) == len(want) && labelsInclude(pairs, want)
}

func labelsInclude(pairs []*dto.LabelPair, want map[string]string) bool {
	found := 0
	for _, p := range pairs {
		if v, ok := want[p.GetName()]; ok {
			if v != p.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(want)
}

// Reconciles is how many reconciles the named controller has finished, whatever their result.
func Reconciles(t testing.TB, controller string) float64 {
	t.Helper()
	return MetricSum(t, "controller_runtime_reconcile_total", map[string]string{"controller": controller})
}

// WaitIdle waits until the named controller runs no reconcile and has finished none since the
// previous look. (Its workqueue depth cannot tell: the series outlives the managers of earlier
// tests, which may have stopped with a key queued.)
func WaitIdle(t testing.TB, controller string) {
	t.Helper()
	last := -1.0
	Eventually(t, "the "+controller+" controller idle", func() error {
		running := MetricSum(t, "controller_runtime_active_workers", map[string]string{"controller": controller})
		done := Reconciles(t, controller)
		if prev := last; running != 0 || done != prev {
			last = -1
			if running == 0 {
				last = done
			}
			return fmt.Errorf("%v reconciles running, %v done (%v at the previous look)", running, done, prev)
		}
		return nil
	})
}
