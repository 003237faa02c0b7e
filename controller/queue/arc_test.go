package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/queue"
)

func assertARC(t *testing.T, arc *queue.ARC, want queue.Counts) {
	t.Helper()
	got, err := arc.Poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
}

func assertReason(t *testing.T, err error, reason, fragment string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", reason)
	}
	if got := queue.ReasonOf(err); got != reason {
		t.Errorf("reason = %q, want %q (%v)", got, reason, err)
	}
	if !strings.Contains(err.Error(), fragment) {
		t.Errorf("error %q does not contain %q", err, fragment)
	}
}

// stubReader serves canned objects, for shapes the API server's validation would refuse.
type stubReader struct {
	ars     map[string]any
	sets    []map[string]any
	getErr  error
	listErr error
}

func (s stubReader) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if s.getErr != nil {
		return s.getErr
	}
	obj.(*unstructured.Unstructured).Object = runtimeDeepCopy(s.ars)
	return nil
}

func (s stubReader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	if s.listErr != nil {
		return s.listErr
	}
	l := list.(*unstructured.UnstructuredList)
	for _, set := range s.sets {
		l.Items = append(l.Items, unstructured.Unstructured{Object: runtimeDeepCopy(set)})
	}
	return nil
}

func runtimeDeepCopy(m map[string]any) map[string]any {
	return (&unstructured.Unstructured{Object: m}).DeepCopy().Object
}

func stubSet(name string, spec, status map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": "actions.github.com/v1alpha1", "kind": "EphemeralRunnerSet",
		"metadata": map[string]any{"name": name, "namespace": "arc-runners"},
		"spec":     spec, "status": status,
	}
}

func TestARCMalformed(t *testing.T) {
	okARS := map[string]any{"spec": map[string]any{"minRunners": int64(1)}}
	okSpec := map[string]any{"replicas": int64(3), "patchID": int64(1)}
	okStatus := map[string]any{"currentReplicas": int64(2), "runningEphemeralRunners": int64(2)}
	for _, tc := range []struct {
		name     string
		reader   stubReader
		fragment string
	}{
		{"minRunners a string", stubReader{ars: map[string]any{"spec": map[string]any{"minRunners": "1"}}, sets: []map[string]any{stubSet("s", okSpec, okStatus)}},
			".spec.minRunners is a string"},
		{"spec not an object", stubReader{ars: map[string]any{"spec": "none"}, sets: []map[string]any{stubSet("s", okSpec, okStatus)}},
			"AutoscalingRunnerSet arc-runners/runners"},
		{"replicas a string", stubReader{ars: okARS, sets: []map[string]any{stubSet("s", map[string]any{"replicas": "3"}, okStatus)}},
			"EphemeralRunnerSet arc-runners/s: .spec.replicas is a string"},
		{"replicas fractional", stubReader{ars: okARS, sets: []map[string]any{stubSet("s", map[string]any{"replicas": 2.5}, okStatus)}},
			".spec.replicas is 2.5, not an integer"},
		{"replicas negative", stubReader{ars: okARS, sets: []map[string]any{stubSet("s", map[string]any{"replicas": int64(-1)}, okStatus)}},
			".spec.replicas is negative"},
		{"running a bool", stubReader{ars: okARS, sets: []map[string]any{stubSet("s", okSpec, map[string]any{"runningEphemeralRunners": true})}},
			".status.runningEphemeralRunners is a bool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := queue.NewARC(tc.reader, "arc-runners", "runners").Poll(t.Context())
			assertReason(t, err, queue.ReasonMalformed, tc.fragment)
		})
	}
	t.Run("whole-number float accepted", func(t *testing.T) {
		r := stubReader{ars: okARS, sets: []map[string]any{stubSet("s", map[string]any{"replicas": 3.0}, okStatus)}}
		assertARC(t, queue.NewARC(r, "arc-runners", "runners"), queue.Counts{Running: 2})
	})
}

func TestARCReadErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "actions.github.com", Resource: "autoscalingrunnersets"}
	for _, tc := range []struct {
		name     string
		reader   stubReader
		reason   string
		fragment string
	}{
		{"CRDs not installed", stubReader{getErr: &meta.NoKindMatchError{GroupKind: queue.ARCAutoscalingRunnerSetGVK.GroupKind(), SearchedVersions: []string{"v1alpha1"}}},
			queue.ReasonConfig, "ARC's CRDs (actions.github.com/v1alpha1) are not installed"},
		{"forbidden", stubReader{getErr: apierrors.NewForbidden(gr, "runners", errors.New("RBAC: access denied"))},
			queue.ReasonAuth, "reading AutoscalingRunnerSet arc-runners/runners"},
		{"list forbidden", stubReader{ars: map[string]any{}, listErr: apierrors.NewForbidden(gr, "", errors.New("RBAC: access denied"))},
			queue.ReasonAuth, "reading EphemeralRunnerSets in arc-runners labelled actions.github.com/scale-set-name=runners"},
		{"throttled", stubReader{getErr: apierrors.NewTooManyRequests("slow down", 1)}, queue.ReasonRateLimited, "slow down"},
		{"deadline", stubReader{getErr: fmt.Errorf("client rate limiter Wait returned an error: %w", context.DeadlineExceeded)}, queue.ReasonTimeout, "rate limiter"},
		{"server error", stubReader{getErr: apierrors.NewInternalError(errors.New("etcdserver: leader changed"))}, queue.ReasonHTTP, "leader changed"},
		{"connection refused", stubReader{getErr: errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")}, queue.ReasonNetwork, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := queue.NewARC(tc.reader, "arc-runners", "runners").Poll(t.Context())
			assertReason(t, err, tc.reason, tc.fragment)
		})
	}
}
