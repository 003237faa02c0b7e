package steps

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// trace is the state the test steps share: the names of the steps that ran, in order.
type trace struct{ ran []string }

// noting is a step that notes it ran and ends with e and err.
func noting(name string, e Exit, err error) Step[trace] {
	return Step[trace]{Name: name, Run: func(_ context.Context, s *trace) (Exit, error) {
		s.ran = append(s.ran, name)
		return e, err
	}}
}

func TestRunsInOrderUntilTheEnd(t *testing.T) {
	s := &trace{}
	res, err := List[trace]{noting("first", Next, nil), noting("second", Next, nil), noting("third", Next, nil)}.Run(t.Context(), s)
	if err != nil {
		t.Fatalf("Run = %v, want no error", err)
	}
	if !res.IsZero() {
		t.Errorf("result = %+v, want none when every step went on", res)
	}
	if want := []string{"first", "second", "third"}; !slices.Equal(s.ran, want) {
		t.Errorf("ran %v, want %v", s.ran, want)
	}
}

func TestFirstExitWins(t *testing.T) {
	for _, tc := range []struct {
		name string
		exit Exit
		want reconcile.Result
	}{
		{"Stop", Stop, reconcile.Result{}},
		{"WaitFor", WaitFor(7 * time.Second), reconcile.Result{RequeueAfter: 7 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &trace{}
			// The later exit would requeue sooner: the first one still decides.
			res, err := List[trace]{
				noting("go on", Next, nil),
				noting("exit", tc.exit, nil),
				noting("later exit", WaitFor(time.Second), nil),
				noting("never", Next, nil),
			}.Run(t.Context(), s)
			if err != nil {
				t.Fatalf("Run = %v, want no error", err)
			}
			if res != tc.want {
				t.Errorf("result = %+v, want %+v (the first exit's)", res, tc.want)
			}
			if want := []string{"go on", "exit"}; !slices.Equal(s.ran, want) {
				t.Errorf("ran %v, want %v: no step runs after an exit", s.ran, want)
			}
		})
	}
}

func TestErrorEndsTheRunNamingItsStep(t *testing.T) {
	cause := errors.New("apiserver unavailable")
	s := &trace{}
	// The failing step's exit asks for a requeue: the error still wins.
	res, err := List[trace]{
		noting("holdNode", Next, nil),
		noting("stopEngine", WaitFor(time.Minute), cause),
		noting("never", Next, nil),
	}.Run(t.Context(), s)
	if !errors.Is(err, cause) {
		t.Fatalf("Run = %v, want it to wrap %v", err, cause)
	}
	if want := "step stopEngine, apiserver unavailable"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if !res.IsZero() {
		t.Errorf("result = %+v, want none with an error", res)
	}
	if want := []string{"holdNode", "stopEngine"}; !slices.Equal(s.ran, want) {
		t.Errorf("ran %v, want %v", s.ran, want)
	}
}

func TestStepsShareTheState(t *testing.T) {
	type counter struct{ n int }
	add := Step[counter]{Name: "add", Run: func(_ context.Context, c *counter) (Exit, error) { c.n++; return Next, nil }}
	check := Step[counter]{Name: "check", Run: func(_ context.Context, c *counter) (Exit, error) {
		if c.n != 2 {
			return Stop, errors.New("the steps before did not run on this state")
		}
		return WaitFor(time.Duration(c.n) * time.Second), nil
	}}
	res, err := List[counter]{add, add, check}.Run(t.Context(), &counter{})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 2*time.Second {
		t.Errorf("requeue after %s, want 2s (passed through from the step)", res.RequeueAfter)
	}
}

func TestWaitForNonPositiveIsAStop(t *testing.T) {
	s := &trace{}
	res, err := List[trace]{noting("wait", WaitFor(-time.Second), nil), noting("never", Next, nil)}.Run(t.Context(), s)
	if err != nil || !res.IsZero() {
		t.Errorf("Run = %+v, %v; want a stop without requeue", res, err)
	}
	if want := []string{"wait"}; !slices.Equal(s.ran, want) {
		t.Errorf("ran %v, want %v", s.ran, want)
	}
}

func TestNoStepsIsNoRequeue(t *testing.T) {
	res, err := List[trace]{}.Run(context.Background(), &trace{})
	if err != nil || !res.IsZero() {
		t.Errorf("Run = %+v, %v; want nothing", res, err)
	}
}
