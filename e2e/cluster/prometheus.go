package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Prometheus is a real Prometheus server (Debian's build, put into bin/ by
// hack/install-prometheus.sh) scraping targets on 127.0.0.1. The e2e tier uses it to prove that
// every dashboard query returns data from a running warmpool.
type Prometheus struct {
	URL  string
	API  promv1.API
	proc *process
	dir  string
}

// PrometheusOptions names what to scrape.
type PrometheusOptions struct {
	// Targets maps a job name to host:port addresses serving /metrics over http.
	Targets map[string][]string
	// ScrapeInterval defaults to 1s so a short test sees several samples of every series.
	ScrapeInterval time.Duration
}

// StartPrometheus starts Prometheus on a free loopback port with its data in a temp dir and
// waits until it is ready. Stop it with Stop.
func StartPrometheus(ctx context.Context, opts PrometheusOptions) (*Prometheus, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(root, "bin", "prometheus")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("prometheus not built (run `make tools`): %w", err)
	}
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	dir, err := os.MkdirTemp("", "warmpool-prometheus-")
	if err != nil {
		return nil, fmt.Errorf("prometheus dir: %w", err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(prometheusConfig(opts)), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("writing prometheus config: %w", err)
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProcess("prometheus", bin, []string{
		"--config.file=" + cfg,
		"--web.listen-address=" + addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1h",
		"--log.level=warn",
	}, []string{"HOME=" + dir}, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	url := "http://" + addr
	if err := waitHealthy(ctx, p, url+"/-/ready", time.Minute); err != nil {
		_ = p.stop()
		err = fmt.Errorf("prometheus: %w%s", err, logTail(p.logPath, 20))
		_ = os.RemoveAll(dir)
		return nil, err
	}
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		_ = p.stop()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return &Prometheus{URL: url, API: promv1.NewAPI(c), proc: p, dir: dir}, nil
}

func prometheusConfig(opts PrometheusOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\nscrape_configs:\n",
		model.Duration(opts.ScrapeInterval), model.Duration(opts.ScrapeInterval))
	for job, targets := range opts.Targets {
		fmt.Fprintf(&b, "  - job_name: %q\n    static_configs:\n      - targets: [", job)
		for i, t := range targets {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", t)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// PID is the server's process ID.
func (p *Prometheus) PID() int { return p.proc.pid() }

// Logs returns the tail of the server's log.
func (p *Prometheus) Logs() string { return logTail(p.proc.logPath, 50) }

// Query runs an instant query now.
func (p *Prometheus) Query(ctx context.Context, expr string) (model.Value, error) {
	v, warnings, err := p.API.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		return v, fmt.Errorf("warnings: %v", warnings)
	}
	return v, nil
}

// WaitScraped blocks until every target of job is up, so queries see data.
func (p *Prometheus) WaitScraped(ctx context.Context, job string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		v, err := p.Query(ctx, fmt.Sprintf(`min(up{job=%q})`, job))
		if err == nil {
			if vec, ok := v.(model.Vector); ok && len(vec) == 1 && vec[0].Value == 1 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s never scraped: %w (last: %v %v)", job, ctx.Err(), v, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Stop stops the server by its PID and removes its data.
func (p *Prometheus) Stop() error {
	err := p.proc.stop()
	if rmErr := os.RemoveAll(p.dir); err == nil {
		err = rmErr
	}
	return err
}
