package hold

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

func node(deleting bool, outcome string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	if deleting {
		n.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	}
	if outcome != "" {
		n.Annotations = map[string]string{AnnotationSaveOutcome: outcome}
	}
	return n
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name    string
		node    *corev1.Node
		release bool
		reason  string
	}{
		{"node gone", nil, true, "gone"},
		{"rollout on a node that stays", node(false, ""), true, "not being deleted"},
		{"deleting, save running", node(true, ""), false, "has not concluded"},
		{"deleting, saved", node(true, "saved"), true, "(saved)"},
		{"deleting, save timed out", node(true, "timeout"), true, "(timeout)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Decide(tc.node)
			if v.Release != tc.release || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("Decide = %+v, want release %v with a reason containing %q", v, tc.release, tc.reason)
			}
		})
	}
}

// script is a Read that returns its steps in turn, then repeats the last.
type script struct {
	mu    sync.Mutex
	steps []func() (*corev1.Node, error)
	reads int
}

func (s *script) read(context.Context) (*corev1.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := min(s.reads, len(s.steps)-1)
	s.reads++
	return s.steps[i]()
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// run runs Run on a fake clock, stepping it by the interval whenever Run waits.
func run(t *testing.T, o Options, s *script) (error, string) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Now())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), clk, o, s.read, &out) }()
	for {
		select {
		case err := <-done:
			return err, out.String()
		default:
		}
		if clk.HasWaiters() {
			clk.Step(o.Interval)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunReleasedWhenTheSaveConcludes(t *testing.T) {
	s := &script{steps: []func() (*corev1.Node, error){
		func() (*corev1.Node, error) { return node(true, ""), nil },
		func() (*corev1.Node, error) { return node(true, ""), nil },
		func() (*corev1.Node, error) { return node(true, "saved"), nil },
	}}
	err, out := run(t, Options{MaxWait: time.Hour, Interval: 2 * time.Second}, s)
	if err != nil {
		t.Fatalf("Run = %v, want released", err)
	}
	if s.count() != 3 || !strings.Contains(out, "released after 4s") {
		t.Errorf("reads %d, output %q: want released at the third read, 4s in", s.count(), out)
	}
}

func TestRunRetriesAFailingReadUntilReleased(t *testing.T) {
	s := &script{steps: []func() (*corev1.Node, error){
		func() (*corev1.Node, error) { return nil, errors.New("connection refused") },
		func() (*corev1.Node, error) { return nil, errors.New("connection refused") },
		func() (*corev1.Node, error) { return nil, nil }, // the node is gone
	}}
	err, out := run(t, Options{MaxWait: time.Hour, Interval: time.Second}, s)
	if err != nil {
		t.Fatalf("Run = %v, want released once the node is gone", err)
	}
	if strings.Count(out, "connection refused") != 1 {
		t.Errorf("output %q: want the same failure reported once", out)
	}
}

func TestRunGivesUpAtMaxWait(t *testing.T) {
	s := &script{steps: []func() (*corev1.Node, error){func() (*corev1.Node, error) { return node(true, ""), nil }}}
	err, _ := run(t, Options{MaxWait: 10 * time.Second, Interval: 3 * time.Second}, s)
	if !errors.Is(err, ErrTimedOut) || !strings.Contains(err.Error(), "has not concluded") {
		t.Fatalf("Run = %v, want ErrTimedOut saying why", err)
	}
	// Reads at 0, 3, 6, 9 and a last one at 10 s, the bound itself.
	if s.count() != 5 {
		t.Errorf("%d reads, want 5 (the last at the bound)", s.count())
	}
}

func TestRunStopsAtOnceWhenDenied(t *testing.T) {
	s := &script{steps: []func() (*corev1.Node, error){
		func() (*corev1.Node, error) { return nil, fmt.Errorf("%w: nodes \"n\" is forbidden", ErrDenied) },
	}}
	err, _ := run(t, Options{MaxWait: time.Hour, Interval: time.Second}, s)
	if !errors.Is(err, ErrDenied) || s.count() != 1 {
		t.Fatalf("Run = %v after %d reads, want ErrDenied after one", err, s.count())
	}
}

func TestRunEndsWithItsContext(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	s := &script{steps: []func() (*corev1.Node, error){func() (*corev1.Node, error) { return node(true, ""), nil }}}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, clk, Options{MaxWait: time.Hour, Interval: time.Second}, s.read, &bytes.Buffer{})
	}()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil || errors.Is(err, ErrTimedOut) {
		t.Fatalf("Run = %v, want it stopped by its context", err)
	}
}

func TestValidate(t *testing.T) {
	if err := (Options{Interval: 0}).Validate(); err == nil {
		t.Error("a zero interval was accepted")
	}
	if err := (Options{MaxWait: -time.Second, Interval: time.Second}).Validate(); err == nil {
		t.Error("a negative max wait was accepted")
	}
}
