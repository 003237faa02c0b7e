package enginecache

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes"
)

// lostSnapshotFailed is the warmpool_cache_lost_total reason of a snapshot that failed after
// its cut.
const lostSnapshotFailed = "snapshot-failed"

var (
	savesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_cache_saves_total",
		Help: "Cache saves that ran a copy Job, by result: saved, unclean, failed, timeout, node-gone.",
	}, []string{"pool", "result"})
	saveDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warmpool_cache_save_duration_seconds",
		Help:    "Time from starting the save Job to the snapshot being cut (the node is released then; the upload goes on).",
		Buckets: prometheus.ExponentialBuckets(5, 2, 11), // 5 s .. ~85 min
	}, []string{"pool"})
	saveBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warmpool_cache_save_bytes",
		Help:    "Bytes of engine cache copied by successful saves.",
		Buckets: prometheus.ExponentialBuckets(1<<20, 4, 12), // 1 MiB .. 4 TiB
	}, []string{"pool"})
	restoresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_cache_restores_total",
		Help: "Cache restores that ran a copy Job, by result: warm (the engine started on the copy and kept it), wiped (the engine discarded it; the snapshot is quarantined), unverified (the engine did not tell in time), no-cache, corrupt (the volume did not match its manifest; the snapshot is quarantined), failed, timeout.",
	}, []string{"pool", "result"})
	restoreDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warmpool_cache_restore_duration_seconds",
		Help:    "Time from creating the restore volume to the startup taint being removed after a successful restore.",
		Buckets: prometheus.ExponentialBuckets(5, 2, 9), // 5 s .. ~21 min
	}, []string{"pool"})
	coldStarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_cold_starts_total",
		Help: "Nodes of cache-enabled pools whose engine started without a restored cache, by reason.",
	}, []string{"pool", "reason"})
	snapshotsGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_cache_snapshots",
		Help: "Ready cache snapshots kept, per pool, architecture and engine version.",
	}, []string{"pool", "arch", "engine_version"})
	lostTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_cache_lost_total",
		Help: "Nodes that went away without their cache saved, by reason: timeout, spot-interruption, no-time, node-gone, unclean, failed, snapshot-failed (the snapshot failed after its cut; that save also counts in warmpool_cache_saves_total as saved).",
	}, []string{"pool", "reason"})
)

func init() {
	crmetrics.Registry.MustRegister(savesTotal, saveDuration, saveBytes, restoresTotal, restoreDuration, coldStarts, snapshotsGauge, lostTotal)
}

// InitMetrics creates every per-pool series of the cache-enabled pools at zero, so a
// dashboard's increase() counts a pool's first save, restore or cold start (a counter that
// appears at 1 shows no increase) and every panel has a series before anything happens.
func InitMetrics(cfg *config.Config) {
	if cfg == nil {
		return
	}
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		if !p.Cache.Enabled {
			continue
		}
		for _, r := range []string{outcomeSaved, outcomeUnclean, outcomeFailed} {
			savesTotal.WithLabelValues(p.Name, r)
		}
		for _, r := range []string{volumes.ResultWarm, volumes.ResultWiped, restoreUnverified, volumes.ResultFailed, volumes.ResultNoCache, volumes.ResultCorrupt, "timeout"} {
			restoresTotal.WithLabelValues(p.Name, r)
		}
		for _, r := range []string{ColdNoSnapshot, ColdFailed, ColdTimeout, ColdNoCache, ColdCorrupt, ColdWiped, ColdJobsWaiting} {
			coldStarts.WithLabelValues(p.Name, r)
		}
		for _, r := range []string{volumes.LostTimeout, volumes.LostSpotInterruption, volumes.LostNoTime, volumes.LostNodeGone, lostSnapshotFailed} {
			lostTotal.WithLabelValues(p.Name, r)
		}
		saveDuration.WithLabelValues(p.Name)
		saveBytes.WithLabelValues(p.Name)
		restoreDuration.WithLabelValues(p.Name)
	}
}
