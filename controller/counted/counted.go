// Package counted wraps reconcilers so every controller's failed reconciles are counted under
// one warmpool metric, warmpool_reconcile_errors_total{controller}, which dashboards and alerts
// can use without knowing controller-runtime's own metric names.
package counted

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

var reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "warmpool_reconcile_errors_total",
	Help: "Reconciles that failed and will be retried, by controller.",
}, []string{"controller"})

func init() {
	crmetrics.Registry.MustRegister(reconcileErrors)
}

// Reconciler counts r's errors under controller. The series starts at zero, so an alert on
// increase() fires on the first error.
func Reconciler[T comparable](controller string, r reconcile.TypedReconciler[T]) reconcile.TypedReconciler[T] {
	errs := reconcileErrors.WithLabelValues(controller)
	return reconcile.TypedFunc[T](func(ctx context.Context, req T) (reconcile.Result, error) {
		res, err := r.Reconcile(ctx, req)
		if err != nil {
			errs.Inc()
		}
		return res, err
	})
}
