package counted

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func TestReconcilerCountsErrorsOnly(t *testing.T) {
	fail := true
	r := Reconciler[reconcile.Request]("counted-test", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		if fail {
			return reconcile.Result{}, errors.New("boom")
		}
		return reconcile.Result{}, nil
	}))
	series := reconcileErrors.WithLabelValues("counted-test")
	if v := testutil.ToFloat64(series); v != 0 {
		t.Fatalf("before any reconcile: %v, want the series at 0", v)
	}
	if _, err := r.Reconcile(t.Context(), reconcile.Request{}); err == nil {
		t.Fatal("the wrapped error was swallowed")
	}
	fail = false
	if _, err := r.Reconcile(t.Context(), reconcile.Request{}); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(series); v != 1 {
		t.Errorf("after one failure and one success: %v, want 1", v)
	}
}
