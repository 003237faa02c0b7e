package queue

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Label values of warmpool_queue_jobs{state} and warmpool_source_polls_total{result}.
const (
	metricStateQueued  = "queued"
	metricStateRunning = "running"
	metricPollSuccess  = "success"
	metricPollError    = "error"
)

var (
	metricQueueJobs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_queue_jobs",
		Help: "CI jobs a source last reported for a pool (its last good reading), by state (queued|running).",
	}, []string{"pool", "source", "state"})
	metricSourceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_source_errors_total",
		Help: "Queue source failures by source (<pool>/<source>) and reason.",
	}, []string{"source", "reason"})
	metricSourceStaleness = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_source_staleness_seconds",
		Help: "Seconds since a queue source's last good reading; -1 when it never answered.",
	}, []string{"source"})
	metricSourcePolls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_source_polls_total",
		Help: "Polls of a queue source by source (<pool>/<source>) and result (success|error).",
	}, []string{"source", "result"})
)

func init() {
	crmetrics.Registry.MustRegister(metricQueueJobs, metricSourceErrors, stalenessCollector{}, metricSourcePolls)
}

// SourceLabel is the `source` label of the per-source metrics: "<pool>/<source name>".
func SourceLabel(k Key) string { return k.Pool + "/" + k.Source }

// ObserveError counts one failure of a source that is not polled by a Runner (the GitHub
// webhook: bad signatures, bodies, unknown pools). source is SourceLabel(key) (or any other
// bounded value); reason is one of the Reason* constants.
func ObserveError(source, reason string) {
	metricSourceErrors.WithLabelValues(source, reason).Inc()
}

// ForgetSource deletes every series of a source that the config no longer declares. The
// Runner does this itself for the sources it polls; call it for the others (webhook) so
// label cardinality stays bounded by the config in force.
func ForgetSource(k Key) {
	label := SourceLabel(k)
	metricQueueJobs.DeletePartialMatch(prometheus.Labels{"pool": k.Pool, "source": k.Source})
	metricSourceErrors.DeletePartialMatch(prometheus.Labels{"source": label})
	metricSourceStaleness.DeletePartialMatch(prometheus.Labels{"source": label})
	metricSourcePolls.DeletePartialMatch(prometheus.Labels{"source": label})
}

// observePoll updates the metrics of one finished poll from the tracker's view of the source.
func observePoll(t *Tracker, k Key, err error) {
	label := SourceLabel(k)
	if err != nil {
		metricSourcePolls.WithLabelValues(label, metricPollError).Inc()
		metricSourceErrors.WithLabelValues(label, ReasonOf(err)).Inc()
	} else {
		metricSourcePolls.WithLabelValues(label, metricPollSuccess).Inc()
	}
	ObserveSource(t, k)
}

// ObserveSource sets the gauges of one source from the tracker: warmpool_queue_jobs (its last
// good counts; no series before the first good reading) and its staleness. The Runner does
// this after every poll; sources it does not poll (the webhook) can call it after recording.
func ObserveSource(t *Tracker, k Key) {
	c, staleness, _ := t.Source(k)
	if staleness < 0 {
		metricSourceStaleness.WithLabelValues(SourceLabel(k)).Set(-1)
		return
	}
	metricSourceStaleness.WithLabelValues(SourceLabel(k)).Set(staleness.Seconds())
	metricQueueJobs.WithLabelValues(k.Pool, k.Source, metricStateQueued).Set(float64(c.Queued))
	metricQueueJobs.WithLabelValues(k.Pool, k.Source, metricStateRunning).Set(float64(c.Running))
}

// Staleness grows between polls (a rate-limited source may not be polled for many minutes),
// so the gauge is brought up to date at every scrape from the live runners' trackers.
var (
	liveRunnersMu sync.Mutex
	liveRunners   = map[*Runner]struct{}{}
)

type stalenessCollector struct{}

func (stalenessCollector) Describe(ch chan<- *prometheus.Desc) { metricSourceStaleness.Describe(ch) }

func (stalenessCollector) Collect(ch chan<- prometheus.Metric) {
	refreshStaleness()
	metricSourceStaleness.Collect(ch)
}

func refreshStaleness() {
	liveRunnersMu.Lock()
	defer liveRunnersMu.Unlock()
	for r := range liveRunners {
		r.refreshStaleness()
	}
}

// stalenessValue is the staleness gauge's value for one source.
func stalenessValue(t *Tracker, k Key) float64 {
	_, staleness, _ := t.Source(k)
	if staleness < 0 {
		return -1
	}
	return staleness.Seconds()
}
