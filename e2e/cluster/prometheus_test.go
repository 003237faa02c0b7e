package cluster

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
)

// The harness must really scrape a loopback target, or the dashboard test proves nothing.
func TestPrometheusScrapesLoopbackTarget(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "harness_answer"})
	g.Set(42)
	reg.MustRegister(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := StartPrometheus(ctx, PrometheusOptions{Targets: map[string][]string{"harness": {l.Addr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if err := p.WaitScraped(ctx, "harness"); err != nil {
		t.Fatalf("%v\n%s", err, p.Logs())
	}
	v, err := p.Query(ctx, "harness_answer")
	if err != nil {
		t.Fatal(err)
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 || vec[0].Value != 42 {
		t.Fatalf("harness_answer = %v, want one sample of 42", v)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("prometheus pid %d still alive after Stop", pid)
	}
}
