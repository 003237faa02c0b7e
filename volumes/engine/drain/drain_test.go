package drain_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"warmpool.io/warmpool/volumes/engine/drain"
)

// engineScrape is what a v0.21.8 engine serves on /metrics (cmd/engine/metrics.go: five gauges
// and the Go collector's metrics), with n clients.
func engineScrape(n int) string {
	return fmt.Sprintf(`# HELP dagger_connected_clients Number of currently connected clients
# TYPE dagger_connected_clients gauge
dagger_connected_clients %d
# HELP dagger_dagql_cache_entries Number of entries in the dagql cache
# TYPE dagger_dagql_cache_entries gauge
dagger_dagql_cache_entries 1234
# HELP dagger_local_cache_corrupt_db_reset If set, the local cache database was found to be corrupt and reset
# TYPE dagger_local_cache_corrupt_db_reset gauge
dagger_local_cache_corrupt_db_reset 0
# HELP dagger_local_cache_total_disk_size_bytes Total disk space consumed by the local cache in bytes
# TYPE dagger_local_cache_total_disk_size_bytes gauge
dagger_local_cache_total_disk_size_bytes 1.2345678e+10
# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.1e-05
go_gc_duration_seconds{quantile="1"} 0.000501
go_gc_duration_seconds_sum 0.01
go_gc_duration_seconds_count 12
`, n)
}

func TestClients(t *testing.T) {
	for _, tc := range []struct {
		name, scrape string
		want         float64
		err          string // substring; "" means no error
	}{
		{name: "engine with clients", scrape: engineScrape(2), want: 2},
		{name: "engine idle", scrape: engineScrape(0), want: 0},
		{name: "untyped sample", scrape: "dagger_connected_clients 3\n", want: 3},
		{name: "labelled series are summed", scrape: "dagger_connected_clients{engine=\"a\"} 1\ndagger_connected_clients{engine=\"b\"} 2\n", want: 3},
		{name: "labelled series all idle", scrape: "dagger_connected_clients{engine=\"a\"} 0\ndagger_connected_clients{engine=\"b\"} 0\n", want: 0},
		{name: "metric absent", scrape: "dagger_local_cache_entries 12\n", err: "no dagger_connected_clients sample"},
		{name: "declared without a sample is not 0", scrape: "# TYPE dagger_connected_clients gauge\n", err: "no dagger_connected_clients sample"},
		{name: "empty body", scrape: "", err: "no dagger_connected_clients sample"},
		{name: "not the text format", scrape: "<html>404 page not found</html>\n", err: "parsing the metrics"},
		{name: "NaN", scrape: "dagger_connected_clients NaN\n", err: "is NaN"},
		{name: "negative", scrape: "dagger_connected_clients -1\n", err: "is -1"},
		{name: "a counter is not the gauge", scrape: "# TYPE dagger_connected_clients counter\ndagger_connected_clients 0\n", err: "want a gauge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := drain.Clients(strings.NewReader(tc.scrape))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Clients: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Clients = %v, %v; want an error containing %q", got, err, tc.err)
			case tc.err == "" && got != tc.want:
				t.Errorf("Clients = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := drain.Clients(strings.NewReader("")); !errors.Is(err, drain.ErrNoMetric) {
		t.Errorf("empty scrape: %v, want ErrNoMetric", err)
	}
}

var opts = drain.Options{MaxWait: 10 * time.Second, Interval: 2 * time.Second, UnreadableGrace: 4 * time.Second}

// read is one read of a scripted sequence: at offset `at` from the start, clients or an error.
type read struct {
	at      time.Duration
	clients float64
	err     error
}

var errRefused = errors.New("connect: connection refused")

// TestObserve feeds State a sequence of reads and checks the verdict after each, and the wait
// Next asks for after each Wait.
func TestObserve(t *testing.T) {
	for _, tc := range []struct {
		name  string
		o     drain.Options
		reads []read
		want  []drain.Verdict
		next  []time.Duration // after each Wait verdict
	}{
		{name: "drains at 0", o: opts,
			reads: []read{{0, 2, nil}, {2 * time.Second, 1, nil}, {4 * time.Second, 0, nil}},
			want:  []drain.Verdict{drain.Wait, drain.Wait, drain.Drained}, next: []time.Duration{2 * time.Second, 2 * time.Second}},
		{name: "idle at once", o: opts, reads: []read{{0, 0, nil}}, want: []drain.Verdict{drain.Drained}},
		{name: "last read falls on the deadline", o: drain.Options{MaxWait: 3 * time.Second, Interval: 2 * time.Second, UnreadableGrace: time.Minute},
			reads: []read{{0, 1, nil}, {2 * time.Second, 1, nil}, {3 * time.Second, 1, nil}},
			want:  []drain.Verdict{drain.Wait, drain.Wait, drain.TimedOut}, next: []time.Duration{2 * time.Second, time.Second}},
		{name: "0 at the deadline still drains", o: opts,
			reads: []read{{0, 1, nil}, {10 * time.Second, 0, nil}}, want: []drain.Verdict{drain.Wait, drain.Drained}, next: []time.Duration{2 * time.Second}},
		{name: "no time to wait reads once", o: drain.Options{Interval: 2 * time.Second, UnreadableGrace: time.Second},
			reads: []read{{0, 1, nil}}, want: []drain.Verdict{drain.TimedOut}},
		{name: "no time to wait, idle", o: drain.Options{Interval: 2 * time.Second}, reads: []read{{0, 0, nil}}, want: []drain.Verdict{drain.Drained}},
		{name: "unreadable for the grace gives up", o: opts,
			reads: []read{{0, 0, errRefused}, {2 * time.Second, 0, errRefused}, {4 * time.Second, 0, errRefused}},
			want:  []drain.Verdict{drain.Wait, drain.Wait, drain.Unreadable}, next: []time.Duration{2 * time.Second, 2 * time.Second}},
		{name: "a good read restarts the grace", o: opts,
			reads: []read{{0, 0, errRefused}, {2 * time.Second, 3, nil}, {4 * time.Second, 0, errRefused}, {6 * time.Second, 0, errRefused}, {8 * time.Second, 0, errRefused}},
			want:  []drain.Verdict{drain.Wait, drain.Wait, drain.Wait, drain.Wait, drain.Unreadable},
			next:  []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second}},
		{name: "the wait is cut to the end of the grace", o: drain.Options{MaxWait: time.Minute, Interval: 2 * time.Second, UnreadableGrace: 3 * time.Second},
			reads: []read{{0, 0, errRefused}, {2 * time.Second, 0, errRefused}, {3 * time.Second, 0, errRefused}},
			want:  []drain.Verdict{drain.Wait, drain.Wait, drain.Unreadable}, next: []time.Duration{2 * time.Second, time.Second}},
		{name: "zero grace gives up at the first failure", o: drain.Options{MaxWait: time.Minute, Interval: time.Second},
			reads: []read{{0, 0, errRefused}}, want: []drain.Verdict{drain.Unreadable}},
		{name: "deadline before the grace ends", o: drain.Options{MaxWait: 3 * time.Second, Interval: 2 * time.Second, UnreadableGrace: time.Minute},
			reads: []read{{0, 1, nil}, {2 * time.Second, 0, errRefused}, {3 * time.Second, 0, errRefused}},
			want:  []drain.Verdict{drain.Wait, drain.Wait, drain.TimedOut}, next: []time.Duration{2 * time.Second, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
			s := drain.NewState(start)
			var next []time.Duration
			for i, r := range tc.reads {
				now := start.Add(r.at)
				got := s.Observe(tc.o, now, r.clients, r.err)
				if got != tc.want[i] {
					t.Fatalf("read %d (%+v): %s, want %s", i, r, got, tc.want[i])
				}
				if got == drain.Wait {
					next = append(next, s.Next(tc.o, now))
				} else if i != len(tc.reads)-1 {
					t.Fatalf("read %d ended the drain (%s) before the last", i, got)
				}
			}
			if fmt.Sprint(next) != fmt.Sprint(tc.next) {
				t.Errorf("waits %v, want %v", next, tc.next)
			}
		})
	}
}

// TestRun drives the loop with a fake clock: each case scripts the reads, and the test checks
// when (in fake time) each read happened and how the drain ended.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       drain.Options
		script  []read // at is ignored: the loop decides when it reads
		wantAt  []time.Duration
		wantErr error
		msg     []string
		out     string
	}{
		{name: "waits until the clients are gone", o: opts,
			script: []read{{clients: 2}, {clients: 1}, {clients: 1}, {clients: 0}},
			wantAt: []time.Duration{0, 2 * time.Second, 4 * time.Second, 6 * time.Second},
			out:    "2 clients attached\n1 client attached\n0 clients attached\n"},
		{name: "gives up at the maximum wait", o: drain.Options{MaxWait: 5 * time.Second, Interval: 2 * time.Second, UnreadableGrace: time.Minute},
			script: []read{{clients: 3}},
			wantAt: []time.Duration{0, 2 * time.Second, 4 * time.Second, 5 * time.Second}, wantErr: drain.ErrTimedOut,
			msg: []string{"3 clients still attached at the end of the maximum wait (5s)", "SIGTERM"}},
		{name: "gives up when the metrics stay unreadable", o: opts,
			script: []read{{err: errRefused}},
			wantAt: []time.Duration{0, 2 * time.Second, 4 * time.Second}, wantErr: drain.ErrUnreadable,
			msg: []string{"for 4s (3 failed reads)", "connection refused", "cannot be drained"}},
		{name: "only the failures in a row count", o: opts,
			script: []read{{clients: 2}, {err: errRefused}, {err: errRefused}, {err: errRefused}},
			wantAt: []time.Duration{0, 2 * time.Second, 4 * time.Second, 6 * time.Second}, wantErr: drain.ErrUnreadable,
			msg: []string{"for 4s (3 failed reads)"}},
		{name: "a deadline with failing reads names the cause", o: drain.Options{MaxWait: 2 * time.Second, Interval: 2 * time.Second, UnreadableGrace: time.Minute},
			script: []read{{clients: 1}, {err: errRefused}},
			wantAt: []time.Duration{0, 2 * time.Second}, wantErr: drain.ErrTimedOut,
			msg: []string{"1 client at the last good read", "connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
			clk := testingclock.NewFakeClock(start)
			var at []time.Duration
			readFn := func(context.Context) (float64, error) {
				r := tc.script[min(len(at), len(tc.script)-1)]
				at = append(at, clk.Since(start))
				return r.clients, r.err
			}
			var out strings.Builder
			done := make(chan error, 1)
			go func() { done <- drain.Run(t.Context(), clk, tc.o, readFn, &out) }()
			err := driveClock(t, clk, done)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Run = %v, want %v", err, tc.wantErr)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
			if fmt.Sprint(at) != fmt.Sprint(tc.wantAt) {
				t.Errorf("reads at %v, want %v", at, tc.wantAt)
			}
			if tc.out != "" && out.String() != tc.out {
				t.Errorf("progress %q, want %q", out.String(), tc.out)
			}
		})
	}
}

// driveClock steps the fake clock in small increments whenever the loop waits on it, until the
// loop returns.
func driveClock(t *testing.T, clk *testingclock.FakeClock, done <-chan error) error {
	t.Helper()
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(time.Millisecond):
			if clk.HasWaiters() {
				clk.Step(250 * time.Millisecond)
			}
		}
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	for _, o := range []drain.Options{{Interval: 0}, {Interval: time.Second, MaxWait: -1}, {Interval: time.Second, UnreadableGrace: -1}} {
		called := false
		err := drain.Run(t.Context(), testingclock.NewFakeClock(time.Now()), o, func(context.Context) (float64, error) {
			called = true
			return 0, nil
		}, &strings.Builder{})
		if err == nil || called {
			t.Errorf("Run(%+v) = %v, read called %v; want an error before any read", o, err, called)
		}
	}
}

// TestRead scrapes a loopback endpoint the way the hook reads the engine's.
func TestRead(t *testing.T) {
	serve := func(t *testing.T, h http.HandlerFunc) string {
		t.Helper()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
		srv.Start()
		t.Cleanup(srv.Close)
		return srv.URL + "/metrics"
	}
	t.Run("engine", func(t *testing.T) {
		var accept string
		url := serve(t, func(w http.ResponseWriter, r *http.Request) {
			accept = r.Header.Get("Accept")
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			fmt.Fprint(w, engineScrape(4))
		})
		n, err := drain.Read(t.Context(), http.DefaultClient, url)
		if err != nil || n != 4 {
			t.Fatalf("Read = %v, %v; want 4", n, err)
		}
		if !strings.HasPrefix(accept, "text/plain") {
			t.Errorf("Accept %q: the text format is the only one parsed", accept)
		}
	})
	t.Run("server error", func(t *testing.T) {
		url := serve(t, func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
		})
		if _, err := drain.Read(t.Context(), http.DefaultClient, url); err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("Read = %v, want the status", err)
		}
	})
	t.Run("no metric", func(t *testing.T) {
		url := serve(t, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "go_goroutines 12\n") })
		if _, err := drain.Read(t.Context(), http.DefaultClient, url); !errors.Is(err, drain.ErrNoMetric) {
			t.Errorf("Read = %v, want ErrNoMetric", err)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, err := drain.Read(t.Context(), http.DefaultClient, "http://"+addr+"/metrics"); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Read = %v, want connection refused", err)
		}
	})
}
