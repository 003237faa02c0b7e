package discovery

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

// scripted answers List from a queue of results and counts calls.
type scripted struct {
	mu      sync.Mutex
	calls   int
	results []result
}

type result struct {
	types []InstanceType
	err   error
}

func (s *scripted) push(types []InstanceType, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, result{types, err})
}

func (s *scripted) List(context.Context) ([]InstanceType, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.results) == 0 {
		return nil, errors.New("scripted: no result queued")
	}
	r := s.results[0]
	s.results = s.results[1:]
	return r.types, r.err
}

func (s *scripted) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestCacheTTL(t *testing.T) {
	l := &scripted{}
	l.push([]InstanceType{c6id2xl}, nil)
	l.push([]InstanceType{c6id2xl, m7gdL}, nil)
	clk := testingclock.NewFakePassiveClock(t0)
	c := NewCache(l, 10*time.Minute, clk)

	step := func(desc string, wantNames []string, wantCalls int) {
		t.Helper()
		got, err := c.List(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", desc, err)
		}
		if !slices.Equal(typeNames(got), wantNames) || l.callCount() != wantCalls {
			t.Errorf("%s: got %v after %d calls, want %v after %d", desc, typeNames(got), l.callCount(), wantNames, wantCalls)
		}
	}
	step("first call fetches", []string{"c6id.2xlarge"}, 1)
	step("same instant is cached", []string{"c6id.2xlarge"}, 1)
	clk.SetTime(t0.Add(10*time.Minute - time.Nanosecond))
	step("just inside the TTL is cached", []string{"c6id.2xlarge"}, 1)
	clk.SetTime(t0.Add(10 * time.Minute))
	step("at the TTL it refreshes", []string{"c6id.2xlarge", "m7gd.large"}, 2)
	clk.SetTime(t0.Add(15 * time.Minute))
	step("TTL restarts at the refresh", []string{"c6id.2xlarge", "m7gd.large"}, 2)
}

func TestCacheKeepsLastListOnFailure(t *testing.T) {
	l := &scripted{}
	cause := errors.New("ec2 down")
	l.push([]InstanceType{c6id2xl}, nil)
	l.push(nil, cause)
	l.push(nil, cause)
	l.push([]InstanceType{m7gdL}, nil)
	clk := testingclock.NewFakePassiveClock(t0)
	c := NewCache(l, time.Minute, clk)

	if _, err := c.List(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(t0.Add(time.Hour))
	for i := range 2 {
		got, err := c.List(t.Context())
		if !errors.Is(err, ErrStale) || !errors.Is(err, cause) {
			t.Errorf("failed refresh %d: error %v, want ErrStale wrapping the cause", i, err)
		}
		if !slices.Equal(typeNames(got), []string{"c6id.2xlarge"}) {
			t.Errorf("failed refresh %d: got %v, want the last good list", i, typeNames(got))
		}
	}
	if n := l.callCount(); n != 3 {
		t.Errorf("calls = %d, want 3: a failed refresh must not restart the TTL", n)
	}
	got, err := c.List(t.Context())
	if err != nil || !slices.Equal(typeNames(got), []string{"m7gd.large"}) {
		t.Errorf("recovery: got %v, %v", typeNames(got), err)
	}
}

func TestCacheFailureWithoutPreviousList(t *testing.T) {
	l := &scripted{}
	cause := errors.New("no credentials")
	l.push(nil, cause)
	c := NewCache(l, time.Minute, testingclock.NewFakePassiveClock(t0))
	got, err := c.List(t.Context())
	if got != nil || !errors.Is(err, cause) || errors.Is(err, ErrStale) {
		t.Errorf("got %v, %v; want nil and the cause, not ErrStale", got, err)
	}
}

func TestCacheZeroTTLAlwaysRefreshes(t *testing.T) {
	l := &scripted{}
	for range 3 {
		l.push([]InstanceType{c6id2xl}, nil)
	}
	c := NewCache(l, 0, testingclock.NewFakePassiveClock(t0))
	for range 3 {
		if _, err := c.List(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.callCount(); n != 3 {
		t.Errorf("calls = %d, want 3", n)
	}
}

func TestCacheResultIsCallersOwn(t *testing.T) {
	l := &scripted{}
	l.push([]InstanceType{c6id2xl, m7gdL}, nil)
	c := NewCache(l, time.Hour, testingclock.NewFakePassiveClock(t0))
	first, err := c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	first[0].Name = "mutated"
	first[1].Architectures[0] = "mutated"
	second, _ := c.List(t.Context())
	if second[0].Name != "c6id.2xlarge" || second[1].Architectures[0] != "arm64" {
		t.Errorf("caller's edits leaked into the cache: %+v", second)
	}
}

func TestCacheConcurrentCallersShareOneRefresh(t *testing.T) {
	l := &scripted{}
	l.push([]InstanceType{c6id2xl}, nil)
	c := NewCache(l, time.Hour, testingclock.NewFakePassiveClock(t0))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got, err := c.List(t.Context()); err != nil || len(got) != 1 {
				t.Errorf("got %v, %v", got, err)
			}
		})
	}
	wg.Wait()
	if n := l.callCount(); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
}

// blocking holds List until released, to test waiting callers.
type blocking struct {
	entered, release chan struct{}
}

func (b *blocking) List(ctx context.Context) ([]InstanceType, error) {
	close(b.entered)
	<-b.release
	return []InstanceType{c6id2xl}, nil
}

func TestCacheWaiterHonoursContext(t *testing.T) {
	b := &blocking{entered: make(chan struct{}), release: make(chan struct{})}
	c := NewCache(b, time.Hour, testingclock.NewFakePassiveClock(t0))
	done := make(chan error, 1)
	go func() {
		_, err := c.List(t.Context())
		done <- err
	}()
	<-b.entered // a refresh is in flight and holds the cache

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.List(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("waiter with canceled ctx: %v, want context.Canceled", err)
	}
	close(b.release)
	if err := <-done; err != nil {
		t.Errorf("refreshing caller: %v", err)
	}
}

// TestCacheOverEC2 checks the whole chain: the cache spares EC2 calls within
// the TTL and serves the stale list when EC2 then refuses.
func TestCacheOverEC2(t *testing.T) {
	srv := startFake(t)
	clk := testingclock.NewFakePassiveClock(t0)
	c := NewCache(newLister(t, srv, 2), 5*time.Minute, clk)

	first, err := c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clk.SetTime(t0.Add(4 * time.Minute))
	if _, err := c.List(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("EC2 requests within the TTL = %d, want 1", n)
	}

	clk.SetTime(t0.Add(6 * time.Minute))
	srv.FailNext(1, ec2fake.FaultAuth)
	got, err := c.List(t.Context())
	if !errors.Is(err, ErrStale) {
		t.Errorf("after AuthFailure: error %v, want ErrStale", err)
	}
	assertAPIError(t, err, "AuthFailure")
	if !slices.Equal(typeNames(got), typeNames(first)) {
		t.Errorf("stale list = %v, want %v", typeNames(got), typeNames(first))
	}
}
