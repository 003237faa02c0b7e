package pools

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

const controllerName = "pools"

var (
	configValid = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "warmpool_config_valid",
		Help: "1 when the ConfigMap's config was accepted and applied, 0 while it is rejected (the last good config stays in force).",
	})
	configRejections = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "warmpool_config_rejections_total",
		Help: "Configs rejected by validation or the EC2 instance-type check.",
	})
	poolsInForce = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "warmpool_pools",
		Help: "Pools in the config in force.",
	})
	poolApplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warmpool_pool_applies_total",
		Help: "Applies that changed a pool's NodePool or node class.",
	}, []string{"pool"})
)

func init() {
	crmetrics.Registry.MustRegister(configValid, configRejections, poolsInForce, poolApplies)
}
