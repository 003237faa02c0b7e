package main

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"warmpool.io/warmpool/volumes/hold"
)

func TestNodeReader(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{hold.AnnotationSaveOutcome: "saved"}}}
	cs := fake.NewClientset(node)
	n, err := nodeReader(cs, "n")(context.Background())
	if err != nil || n == nil || n.Annotations[hold.AnnotationSaveOutcome] != "saved" {
		t.Fatalf("read = %v, %v; want the node", n, err)
	}
	// A node that is gone reads as nil: the hold releases.
	if n, err := nodeReader(cs, "gone")(context.Background()); n != nil || err != nil {
		t.Fatalf("read of a missing node = %v, %v; want nil, nil", n, err)
	}
	// RBAC refusing the read is ErrDenied, which ends the hold at once, naming what is missing.
	cs.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "n", errors.New("no rule"))
	})
	_, err = nodeReader(cs, "n")(context.Background())
	if !errors.Is(err, hold.ErrDenied) {
		t.Fatalf("forbidden read = %v, want ErrDenied", err)
	}
	// Anything else is retried by the hold, not a denial.
	cs2 := fake.NewClientset()
	cs2.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
	})
	if _, err := nodeReader(cs2, "n")(context.Background()); err == nil || errors.Is(err, hold.ErrDenied) {
		t.Fatalf("unavailable read = %v, want a plain error", err)
	}
}

func TestHoldCommandNeedsANode(t *testing.T) {
	cmd := engineHoldCommand()
	cmd.SetArgs([]string{"--node", "", "--wait"})
	cmd.SetOut(&discard{})
	cmd.SetErr(&discard{})
	if err := cmd.Execute(); err == nil {
		t.Fatal("hold without a node ran")
	}
}

type discard struct{}

func (*discard) Write(p []byte) (int, error) { return len(p), nil }
