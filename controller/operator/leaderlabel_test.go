package operator_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
)

// TestLeaderLabelFollowsLease runs two real managers with leader election against a real
// apiserver: only the leader's pod carries the label the webhook Service selects; a stale label
// left by an earlier run is removed; when the leader stops, the other replica takes the Lease
// and the label moves with it.
func TestLeaderLabelFollowsLease(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	api := cluster.StartTestAPIServer(t)
	kube := api.Client
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-"}}
	if err := kube.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	// Both pods start labelled, as after a crash of the old leader's container.
	for _, name := range []string{"warmpool-a", "warmpool-b"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name, Labels: map[string]string{"app": "warmpool", operator.LeaderLabel: "true"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "warmpool", Image: "warmpool"}}},
		}
		if err := kube.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}

	start := func(pod string) (stop func()) {
		r, err := operatortest.Start(api.Config, operator.Options{
			Namespace: ns.Name, ConfigMap: "warmpool", NodeClass: nodepools.KWOKNodeClass,
			MetricsAddr: "0", ProbeAddr: "0", WebhookAddr: "",
			LeaderElection: true, LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond,
			SkipControllerNameValidation: true, PodName: pod,
		})
		if err != nil {
			t.Fatal(err)
		}
		stop = sync.OnceFunc(func() {
			if err := r.Stop(); err != nil {
				t.Errorf("manager of %s: %v", pod, err)
			}
		})
		t.Cleanup(stop)
		return stop
	}

	stopA := start("warmpool-a")
	waitLabelled(t, kube, ns.Name, "warmpool-a", "first leader")
	// The standby's container "restarted" with the label still on its pod: it clears it itself.
	setLabel(t, kube, ns.Name, "warmpool-b", "true")
	start("warmpool-b")
	waitLabelled(t, kube, ns.Name, "warmpool-a", "standby started (stale label cleared)")

	stopped := time.Now()
	stopA()
	waitLabelled(t, kube, ns.Name, "warmpool-b", "after the leader stopped")
	// Reported, not asserted: the leader releases the Lease on a clean stop.
	t.Logf("webhook label moved to the new leader %s after the old one was stopped", time.Since(stopped).Round(10*time.Millisecond))
}

// TestLeaderLabelNewLeaderClearsOthers: a leader whose pod label outlived it (it crashed and
// its pod stayed) is unlabelled by the next leader, so the Service never reaches two pods.
func TestLeaderLabelNewLeaderClearsOthers(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	api := cluster.StartTestAPIServer(t)
	kube := api.Client
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-"}}
	if err := kube.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for name, label := range map[string]string{"warmpool-old": "true", "warmpool-new": ""} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name, Labels: map[string]string{"app": "warmpool"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "warmpool", Image: "warmpool"}}},
		}
		if label != "" {
			pod.Labels[operator.LeaderLabel] = label
		}
		if err := kube.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	l := &operator.LeaderLabeler{Client: kube, Reader: kube, Namespace: ns.Name, PodName: "warmpool-new"}
	mgr, err := ctrl.NewManager(api.Config, ctrl.Options{Scheme: cluster.Scheme(), Metrics: metricsOff(), HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Register(mgr); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	waitLabelled(t, kube, ns.Name, "warmpool-new", "new leader")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// On a clean stop the leader takes its label off: no pod is left to route to.
	waitLabelled(t, kube, ns.Name, "", "after a clean stop")
}

// waitLabelled waits until exactly want (or, if want is empty, no pod) carries the leader label.
func waitLabelled(t *testing.T, kube client.Client, ns, want, when string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		pods := &corev1.PodList{}
		if err := kube.List(t.Context(), pods, client.InNamespace(ns), client.MatchingLabels{operator.LeaderLabel: "true"}); err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for i := range pods.Items {
			got = append(got, pods.Items[i].Name)
		}
		if (want == "" && len(got) == 0) || (len(got) == 1 && got[0] == want) {
			return
		}
	}
	t.Fatalf("%s: pods labelled %s=true: %v, want only %q", when, operator.LeaderLabel, got, want)
}

func setLabel(t *testing.T, kube client.Client, ns, pod, value string) {
	t.Helper()
	p := &corev1.Pod{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: pod}, p); err != nil {
		t.Fatal(err)
	}
	p.Labels[operator.LeaderLabel] = value
	if err := kube.Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
}

func metricsOff() metricsserver.Options { return metricsserver.Options{BindAddress: "0"} }
