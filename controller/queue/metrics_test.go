package queue

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// wrLoopback serves h on 127.0.0.1 only, closed when the test ends.
func wrLoopback(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// wrMetric reads one series from controller-runtime's registry (the one the manager serves),
// going through every collector, so scrape-time updates (staleness) happen. labels must be
// the series' exact label set.
func wrMetric(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

// wrWantMetric asserts a series' value.
func wrWantMetric(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := wrMetric(t, name, labels)
	if !ok {
		t.Fatalf("%s%v: no such series", name, labels)
	}
	if got != want {
		t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// wrNoSeries asserts that no series of the source exists in any of the source metrics.
func wrNoSeries(t *testing.T, k Key) {
	t.Helper()
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var pool, source string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "pool":
					pool = lp.GetValue()
				case "source":
					source = lp.GetValue()
				}
			}
			if source == SourceLabel(k) || (pool == k.Pool && source == k.Source) {
				t.Fatalf("series of removed source %v left: %s %v", k, mf.GetName(), m.GetLabel())
			}
		}
	}
}

func TestMetricsRegisteredOnControllerRuntimeRegistry(t *testing.T) {
	k := Key{"mx-registered", "src"}
	ObserveError(SourceLabel(k), ReasonSignature)
	defer ForgetSource(k)
	// Registering them again must fail: they are already on the manager's registry.
	for _, c := range []prometheus.Collector{metricQueueJobs, metricSourceErrors, stalenessCollector{}, metricSourcePolls} {
		if err := crmetrics.Registry.Register(c); err == nil {
			t.Fatalf("%T was not registered on controller-runtime's registry", c)
		}
	}
	wrWantMetric(t, "warmpool_source_errors_total", map[string]string{"source": "mx-registered/src", "reason": ReasonSignature}, 1)
}

func TestObserveErrorAndForgetSource(t *testing.T) {
	k := Key{"mx-webhook", "gh"}
	src := SourceLabel(k)
	if src != "mx-webhook/gh" {
		t.Fatalf("SourceLabel = %q", src)
	}
	ObserveError(src, ReasonSignature)
	ObserveError(src, ReasonSignature)
	ObserveError(src, ReasonUnknownPool)
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(src, ReasonSignature)); got != 2 {
		t.Fatalf("signature errors = %v, want 2", got)
	}
	if got := testutil.ToFloat64(metricSourceErrors.WithLabelValues(src, ReasonUnknownPool)); got != 1 {
		t.Fatalf("unknown_pool errors = %v, want 1", got)
	}
	metricQueueJobs.WithLabelValues(k.Pool, k.Source, metricStateQueued).Set(3)
	other := Key{"mx-webhook", "other"}
	ObserveError(SourceLabel(other), ReasonBadRequest)
	defer ForgetSource(other)

	ForgetSource(k)
	wrNoSeries(t, k)
	wrWantMetric(t, "warmpool_source_errors_total", map[string]string{"source": "mx-webhook/other", "reason": ReasonBadRequest}, 1)
}
