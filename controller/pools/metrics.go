package pools

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"warmpool.io/warmpool/controller/config"
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
	poolApplyFailed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warmpool_pool_apply_failed",
		Help: "1 while an object of the pool could not be applied (Event ApplyFailed says why); the pool's last good settings stay in force.",
	}, []string{"pool"})
)

func init() {
	crmetrics.Registry.MustRegister(configValid, configRejections, poolsInForce, poolApplies, poolApplyFailed)
}

// setApplyFailed sets the gauge for every pool of cfg; pools cfg dropped lose their series.
func setApplyFailed(cfg *config.Config, failed map[string]error) {
	poolApplyFailed.Reset()
	for _, p := range cfg.Pools {
		v := 0.0
		if _, bad := failed[p.Name]; bad {
			v = 1
		}
		poolApplyFailed.WithLabelValues(p.Name).Set(v)
	}
}
