package operator_test

import (
	"context"
	"io"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
)

// TestStartReturnsWhenInformersNeverSync: a manager whose identity may list nothing (RBAC
// missing, as on a cluster whose ClusterRole lags the binary) never syncs its informers; once
// its context is cancelled, Start must still return, or the process ignores SIGTERM. It hung in
// controller-runtime's start-up wait (stop.go). The bound is the test's own deadline.
func TestStartReturnsWhenInformersNeverSync(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	api := cluster.StartTestAPIServer(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-"}}
	if err := api.Client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	// An authenticated user bound to no role: discovery works, every list is forbidden.
	cfg := rest.CopyConfig(api.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "warmpool-without-rbac"}
	mgr, err := operator.New(cfg, operator.Options{
		Namespace: ns.Name, ConfigMap: "warmpool", NodeClass: nodepools.KWOKNodeClass,
		MetricsAddr: "0", ProbeAddr: "0", WebhookAddr: "0", SkipControllerNameValidation: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	// Let it reach the wait for its caches, which cannot end: nothing can be listed.
	syncCtx, syncCancel := context.WithTimeout(t.Context(), 2*time.Second)
	synced := mgr.GetCache().WaitForCacheSync(syncCtx)
	syncCancel()
	if synced {
		t.Fatal("the caches synced without RBAC: the test does not exercise a cache that never syncs")
	}
	cancel()

	wait := time.After(time.Hour)
	if deadline, ok := t.Deadline(); ok {
		wait = time.After(time.Until(deadline) - 30*time.Second)
	}
	select {
	case err := <-done:
		t.Logf("Start returned after cancel: %v", err)
	case <-wait:
		t.Fatal("Start did not return after its context was cancelled, with informers that never synced")
	}
}
