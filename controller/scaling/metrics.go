package scaling

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	desiredNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_desired_nodes",
		Help: "Nodes the scaling policy wants for the pool: queue demand, warm minimum and max applied.",
	}, []string{"pool"})
	headroomPods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_headroom_pods",
		Help: "Placeholder pods keeping the pool's desired nodes booted ahead of runner pods.",
	}, []string{"pool"})
	poolNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_pool_nodes",
		Help: "Nodes the pool has now (booting or Ready, not being deleted): the actual count to set against warmpool_desired_nodes.",
	}, []string{"pool"})
	poolBusy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_pool_busy",
		Help: "1 while the pool has queued or running jobs or a warm window is open: its NodePool blocks consolidation.",
	}, []string{"pool"})
	spareNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_spare_nodes",
		Help: "Idle nodes the scaling policy keeps Ready above the queue's demand (scaling.spare), included in warmpool_desired_nodes.",
	}, []string{"pool"})
	spareFrom = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_spare_from",
		Help: "1 for what sets the pool's spare now (ArrivalRate, WeekProfile, Held, Constant, WarmWindow, AtMax), 0 for the others; all 0 with no spare.",
	}, []string{"pool", "from"})
	arrivalRate = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_arrival_rate_per_minute",
		Help: "The pool's estimated job arrival rate (jobs queued per minute over scaling.spare.window) that sizes the adaptive spare; NaN while unknown (stale source, too little observed).",
	}, []string{"pool"})
	burstHoldNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_burst_hold_nodes",
		Help: "Nodes the burst hold keeps (scaling.burstHold: a share of the highest queue demand of its window), before maxNodes; warmpool_desired_nodes is at least this.",
	}, []string{"pool"})
	decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_scaling_decisions_total",
		Help: "Changes of desired nodes by direction (up, down) and the policy's reason.",
	}, []string{"pool", "direction", "reason"})
)

func init() {
	crmetrics.Registry.MustRegister(desiredNodes, headroomPods, poolNodes, poolBusy, decisions, spareNodes, spareFrom, arrivalRate, burstHoldNodes)
}
