package pools_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/controller/operator/operatortest"
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

// env is one test's namespace, ConfigMap and running manager (operatortest.Env), plus the
// suite's views of what it did.
type env struct{ *operatortest.Env }

// newEnv creates a namespace and a ConfigMap holding cfg, and starts the manager on them with
// its options adjusted by options (nil: the defaults). Every test cleans up the NodePools and
// node classes its manager created.
func newEnv(t testing.TB, cfg string, options func(*operator.Options)) *env {
	t.Helper()
	return &env{operatortest.NewEnv(t, restConfig, kube, cfg, operatortest.EnvOptions{Options: options, Cleanup: cleanupOwned})}
}

var eventually = operatortest.Eventually

// events returns the Events of reason on the test's ConfigMap, newest last.
func (e *env) events(reason string) []string {
	e.T.Helper()
	list := &corev1.EventList{}
	if err := kube.List(e.T.Context(), list, client.InNamespace(e.Namespace)); err != nil {
		e.T.Fatal(err)
	}
	var notes []string
	for _, ev := range list.Items {
		if ev.Reason == reason && ev.InvolvedObject.Kind == "ConfigMap" && ev.InvolvedObject.Name == e.ConfigMap.Name {
			notes = append(notes, ev.Message)
		}
	}
	return notes
}

// waitEvent waits for an Event of reason whose note contains every fragment.
func (e *env) waitEvent(reason string, fragments ...string) string {
	e.T.Helper()
	var found string
	eventually(e.T, "event "+reason, func() error {
		for _, note := range e.events(reason) {
			if operatortest.ContainsAll(note, fragments...) {
				found = note
				return nil
			}
		}
		return fmt.Errorf("no %s event containing %q; have %q", reason, fragments, e.events(reason))
	})
	return found
}

// gauge reads a single-series gauge from the registry the manager serves on /metrics.
func gauge(t testing.TB, name string) float64 {
	t.Helper()
	v, ok := operatortest.Metric(t, name, nil)
	if !ok {
		t.Fatalf("gauge %s not found", name)
	}
	return v
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
