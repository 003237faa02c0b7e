package nodesim

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"warmpool.io/warmpool/volumes/engine"
)

// engineGauges are the values an engine's metrics endpoint reports.
type engineGauges struct {
	// clients is read at each scrape, as the engine sets dagger_connected_clients from its
	// live session count in the /metrics handler (cmd/engine/metrics.go).
	clients func() int
	// Fixed at start: what the engine found on disk (the engine updates the local cache gauge
	// at start and then every 5 minutes; dagql entries are what is in memory, which after a
	// start is what was imported).
	localEntries, dagqlEntries int
	corruptDBReset             bool
}

// metricsServer is one engine's _EXPERIMENTAL_DAGGER_METRICS_ADDR endpoint, on loopback.
type metricsServer struct {
	addr string
	srv  *http.Server
	done chan struct{}
}

// startMetrics serves /metrics with exactly the gauges the release exports (c.Metrics), with
// the real Prometheus client, as the engine does.
func startMetrics(c engine.Contract, g engineGauges) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	values := map[string]func() float64{
		engine.MetricConnectedClients:  func() float64 { return float64(g.clients()) },
		engine.MetricLocalCacheEntries: func() float64 { return float64(g.localEntries) },
		engine.MetricDagqlCacheEntries: func() float64 { return float64(g.dagqlEntries) },
		engine.MetricCorruptDBReset: func() float64 {
			if g.corruptDBReset {
				return 1
			}
			return 0
		},
	}
	for _, name := range c.Metrics {
		f, ok := values[name]
		if !ok {
			return nil, fmt.Errorf("metric %s of contract %s is not modelled", name, c.Name)
		}
		if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: name}, f)); err != nil {
			return nil, fmt.Errorf("registering %s: %w", name, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for engine metrics: %w", err)
	}
	m := &metricsServer{
		addr: ln.Addr().String(),
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		// Serve returns ErrServerClosed at close; the listener is ours, so nothing else ends it.
		_ = m.srv.Serve(ln)
	}()
	return m, nil
}

// close stops the endpoint, as the engine process exits.
func (m *metricsServer) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	<-m.done
}
