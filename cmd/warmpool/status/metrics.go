package status

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names read from the controller's metrics endpoint (controller/queue/metrics.go). A
// queue source's last reading is not recorded in the cluster: it lives in the leader's memory,
// and these gauges are the only way to see it from outside.
const (
	metricQueueJobs       = "warmpool_queue_jobs"
	metricSourceStaleness = "warmpool_source_staleness_seconds"
)

// Metrics are the queue source readings of one scrape of the controller's metrics endpoint.
type Metrics struct {
	// jobs[pool/source][state] is warmpool_queue_jobs; staleness[pool/source] is
	// warmpool_source_staleness_seconds.
	jobs      map[string]map[string]float64
	staleness map[string]float64
}

// ParseMetrics reads the Prometheus text exposition format.
func ParseMetrics(r io.Reader) (*Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics, %w", err)
	}
	m := &Metrics{jobs: map[string]map[string]float64{}, staleness: map[string]float64{}}
	if f := families[metricQueueJobs]; f != nil {
		for _, s := range f.GetMetric() {
			l := labelMap(s.GetLabel())
			key := l["pool"] + "/" + l["source"]
			if m.jobs[key] == nil {
				m.jobs[key] = map[string]float64{}
			}
			m.jobs[key][l["state"]] = s.GetGauge().GetValue()
		}
	}
	if f := families[metricSourceStaleness]; f != nil {
		for _, s := range f.GetMetric() {
			m.staleness[labelMap(s.GetLabel())["source"]] = s.GetGauge().GetValue()
		}
	}
	return m, nil
}

func labelMap[T interface {
	GetName() string
	GetValue() string
}](pairs []T) map[string]string {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		out[p.GetName()] = p.GetValue()
	}
	return out
}

// Leading says whether the scrape came from a process that runs queue sources: only the leader
// polls them, so a standby's endpoint has no staleness series at all.
func (m *Metrics) Leading() bool { return len(m.staleness) > 0 }

// source fills a source's reading from the scrape, leaving it unknown when the scrape has none.
func (m *Metrics) source(pool string, s *Source) {
	key := pool + "/" + s.Name
	if v, ok := m.staleness[key]; ok {
		s.StalenessSeconds = &v
	}
	if jobs, ok := m.jobs[key]; ok {
		if v, ok := jobs["queued"]; ok {
			q := int(v)
			s.Queued = &q
		}
		if v, ok := jobs["running"]; ok {
			r := int(v)
			s.Running = &r
		}
	}
}

// FetchMetrics scrapes url (the controller's /metrics, e.g. through `kubectl port-forward`).
func FetchMetrics(ctx context.Context, url string) (*Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics URL %q, %w", url, err)
	}
	// The text format: the endpoint would otherwise pick protobuf or OpenMetrics by negotiation.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s, %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	m, err := ParseMetrics(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("scraping %s, %w", url, err)
	}
	return m, nil
}
