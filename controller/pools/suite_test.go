package pools_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/e2e/cluster"
	"warmpool.io/warmpool/nodepools"
)

// The suite runs against a real etcd + kube-apiserver with the real Karpenter (AWS provider),
// KWOK and VolumeSnapshot CRDs, so the API server's own schema and CEL rules judge every
// object warmpool applies.
var (
	restConfig *rest.Config
	kube       client.Client
)

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, func(api *cluster.APIServer) { restConfig, kube = api.Config, api.Client }))
}

// env is one test's namespace, ConfigMap and running manager.
type env struct {
	t         testing.TB
	namespace string
	cm        *corev1.ConfigMap
	mgr       *operator.Manager
	stop      context.CancelFunc
	done      chan error
}

// newEnv creates a namespace and a ConfigMap holding cfg, and starts the manager on them.
// Tests run one at a time: every manager prunes the cluster-scoped objects it owns.
func newEnv(t testing.TB, cfg string, opts operator.Options) *env {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warmpool-"}}
	if err := kube.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, namespace: ns.Name}
	e.cm = &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "warmpool"},
		Data:       map[string]string{"config.yaml": cfg},
	}
	if err := kube.Create(t.Context(), e.cm); err != nil {
		t.Fatal(err)
	}
	e.start(opts)
	t.Cleanup(func() {
		e.stopManager()
		cleanupOwned(t)
	})
	return e
}

func (e *env) start(opts operator.Options) {
	e.t.Helper()
	opts.Namespace, opts.ConfigMap = e.namespace, "warmpool"
	opts.MetricsAddr, opts.ProbeAddr = "0", "0"
	opts.SkipControllerNameValidation = true
	if opts.NodeClass == "" {
		opts.NodeClass = nodepools.EC2NodeClass
	}
	mgr, err := operator.New(restConfig, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.mgr, e.stop, e.done = mgr, cancel, make(chan error, 1)
	go func() { e.done <- mgr.Start(ctx) }()
}

func (e *env) stopManager() {
	if e.stop == nil {
		return
	}
	e.stop()
	if err := <-e.done; err != nil {
		e.t.Errorf("manager: %v", err)
	}
	e.stop = nil
}

// setConfig replaces the ConfigMap's config.
func (e *env) setConfig(cfg string) {
	e.t.Helper()
	cm := &corev1.ConfigMap{}
	if err := kube.Get(e.t.Context(), client.ObjectKeyFromObject(e.cm), cm); err != nil {
		e.t.Fatal(err)
	}
	cm.Data = map[string]string{"config.yaml": cfg}
	if err := kube.Update(e.t.Context(), cm); err != nil {
		e.t.Fatal(err)
	}
}

// eventually polls cond until it returns nil, failing the test with its last error.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// events returns the Events of reason on the test's ConfigMap, newest last.
func (e *env) events(reason string) []string {
	e.t.Helper()
	list := &corev1.EventList{}
	if err := kube.List(e.t.Context(), list, client.InNamespace(e.namespace)); err != nil {
		e.t.Fatal(err)
	}
	var notes []string
	for _, ev := range list.Items {
		if ev.Reason == reason && ev.InvolvedObject.Kind == "ConfigMap" && ev.InvolvedObject.Name == e.cm.Name {
			notes = append(notes, ev.Message)
		}
	}
	return notes
}

// waitEvent waits for an Event of reason whose note contains every fragment.
func (e *env) waitEvent(reason string, fragments ...string) string {
	e.t.Helper()
	var found string
	eventually(e.t, "event "+reason, func() error {
		for _, note := range e.events(reason) {
			if containsAll(note, fragments...) {
				found = note
				return nil
			}
		}
		return fmt.Errorf("no %s event containing %q; have %q", reason, fragments, e.events(reason))
	})
	return found
}

func containsAll(s string, fragments ...string) bool {
	for _, f := range fragments {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}

// gauge reads a gauge from the registry the manager serves on /metrics.
func gauge(t testing.TB, name string) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && f.GetType() == dto.MetricType_GAUGE && len(f.Metric) == 1 {
			return f.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("gauge %s not found", name)
	return 0
}

// owned lists the names of objects of kind warmpool owns.
// It uses its own context: it also runs in cleanup, after t.Context() is cancelled.
func owned(t testing.TB, kind string) []string {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	switch kind {
	case "NodePool":
		list.SetGroupVersionKind(nodepools.NodePoolGV.WithKind("NodePoolList"))
	case "EC2NodeClass":
		list.SetGroupVersionKind(nodepools.EC2NodeClassGV.WithKind("EC2NodeClassList"))
	case "KWOKNodeClass":
		list.SetGroupVersionKind(nodepools.KWOKNodeClassGV.WithKind("KWOKNodeClassList"))
	}
	if err := kube.List(context.Background(), list, client.MatchingLabels{nodepools.LabelManagedBy: nodepools.ManagedBy}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, item := range list.Items {
		if item.GetDeletionTimestamp() == nil {
			names = append(names, item.GetName())
		}
	}
	return names
}

// cleanupOwned deletes everything a test's manager created, so the next test starts clean.
func cleanupOwned(t testing.TB) {
	for _, kind := range []string{"NodePool", "EC2NodeClass", "KWOKNodeClass"} {
		for _, name := range owned(t, kind) {
			u := &unstructured.Unstructured{}
			switch kind {
			case "NodePool":
				u.SetGroupVersionKind(nodepools.NodePoolGV.WithKind(kind))
			case "EC2NodeClass":
				u.SetGroupVersionKind(nodepools.EC2NodeClassGV.WithKind(kind))
			default:
				u.SetGroupVersionKind(nodepools.KWOKNodeClassGV.WithKind(kind))
			}
			u.SetName(name)
			if err := kube.Delete(context.Background(), u); client.IgnoreNotFound(err) != nil {
				t.Errorf("cleanup %s %s: %v", kind, name, err)
			}
		}
	}
}
