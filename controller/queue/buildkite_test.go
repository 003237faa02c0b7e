package queue

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// bkPayload is a /v3/metrics/queue answer as the agent API sends it (the shape
// buildkite-agent-metrics decodes): one queue's agents and jobs, the org and the cluster.
const bkPayload = `{"agents":{"idle":3,"busy":2,"total":5},` +
	`"jobs":{"scheduled":4,"running":2,"waiting":1,"total":6},` +
	`"organization":{"slug":"acme-inc"},"cluster":{"name":"Default cluster"}}`

type bkWriter struct {
	rw http.ResponseWriter
	r  *http.Request
}

func (w bkWriter) json(code int, body string) {
	w.rw.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.rw.WriteHeader(code)
	io.WriteString(w.rw, body)
}

func (w bkWriter) text(code int, body string) {
	w.rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.rw.WriteHeader(code)
	io.WriteString(w.rw, body)
}

// bkHandler serves the agent metrics endpoint, checking the request is the one Buildkite expects.
func bkHandler(t *testing.T, f func(bkWriter)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/v3/metrics/queue") {
			t.Errorf("request %s %s, want GET .../v3/metrics/queue", r.Method, r.URL.Path)
			http.NotFound(rw, r)
			return
		}
		f(bkWriter{rw, r})
	})
}

func bkNew(t *testing.T, url string) *Buildkite {
	t.Helper()
	b, err := NewBuildkite(url, "nvme-arm64", "bkct_agent-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bkWantReason(t *testing.T, err error, reason string) *Error {
	t.Helper()
	var qe *Error
	if !errors.As(err, &qe) || qe.Reason != reason {
		t.Fatalf("error %v (reason %q), want reason %q", err, ReasonOf(err), reason)
	}
	return qe
}

func TestBuildkiteCounts(t *testing.T) {
	var got *http.Request
	srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
		got = w.r
		w.json(200, bkPayload)
	}))
	c, err := bkNew(t, srv.URL).Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Queued = scheduled + waiting, Running = running.
	if c != (Counts{Queued: 5, Running: 2}) {
		t.Fatalf("Counts = %+v, want {5 2}", c)
	}
	if h := got.Header.Get("Authorization"); h != "Token bkct_agent-token" {
		t.Fatalf("Authorization %q", h)
	}
	if q := got.URL.Query(); q.Get("name") != "nvme-arm64" || len(q) != 1 {
		t.Fatalf("query %v, want name=nvme-arm64", q)
	}
}

func TestBuildkiteURLs(t *testing.T) {
	var path, name string
	srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
		path, name = w.r.URL.Path, w.r.URL.Query().Get("name")
		w.json(200, bkPayload)
	}))
	b, err := NewBuildkite(srv.URL+"/proxy/", "linux arm64&nvme=1", "tok", srv.Client().Transport)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if path != "/proxy/v3/metrics/queue" || name != "linux arm64&nvme=1" {
		t.Fatalf("path %q name %q", path, name)
	}

	d, err := NewBuildkite("", "q", "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.endpoint != "https://agent.buildkite.com/v3/metrics/queue?name=q" {
		t.Fatalf("default endpoint %q", d.endpoint)
	}
	for _, bad := range [][3]string{{"ftp://x", "q", "t"}, {"agent.buildkite.com", "q", "t"}, {"", " ", "t"}, {"", "q", ""}} {
		if _, err := NewBuildkite(bad[0], bad[1], bad[2], nil); err == nil {
			t.Errorf("NewBuildkite(%q, %q, %q) accepted", bad[0], bad[1], bad[2])
		}
	}
}

func TestBuildkiteIdleQueueAndOldShape(t *testing.T) {
	for name, tc := range map[string]struct {
		body string
		want Counts
	}{
		"idle queue is zeros": {`{"agents":{"idle":0,"busy":0,"total":0},"jobs":{"scheduled":0,"running":0,"waiting":0,"total":0},"organization":{"slug":"acme-inc"}}`, Counts{}},
		"no waiting field":    {`{"agents":{"idle":1,"busy":1,"total":2},"jobs":{"scheduled":3,"running":1,"total":4},"organization":{"slug":"acme-inc"}}`, Counts{Queued: 3, Running: 1}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := wrLoopback(t, bkHandler(t, func(w bkWriter) { w.json(200, tc.body) }))
			c, err := bkNew(t, srv.URL).Poll(context.Background())
			if err != nil || c != tc.want {
				t.Fatalf("Poll = %+v, %v; want %+v", c, err, tc.want)
			}
		})
	}
}

func TestBuildkiteAuthFailure(t *testing.T) {
	for _, code := range []int{401, 403} {
		srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
			w.json(code, `{"message":"Invalid agent registration token"}`)
		}))
		_, err := bkNew(t, srv.URL).Poll(context.Background())
		qe := bkWantReason(t, err, ReasonAuth)
		if !strings.Contains(err.Error(), "Invalid agent registration token") || qe.RetryAfter != 0 {
			t.Fatalf("%d: error %v", code, err)
		}
	}
}

func TestBuildkiteRateLimited(t *testing.T) {
	for name, tc := range map[string]struct {
		headers map[string]string
		want    time.Duration
	}{
		"Retry-After":             {map[string]string{"Retry-After": "20", "RateLimit-Reset": "42"}, 20 * time.Second},
		"RateLimit-Reset only":    {map[string]string{"RateLimit-Remaining": "0", "RateLimit-Limit": "200", "RateLimit-Reset": "42"}, 42 * time.Second},
		"Retry-After HTTP-date":   {map[string]string{"Retry-After": "Mon, 02 Mar 2026 09:01:30 GMT"}, 90 * time.Second},
		"no header: runner backs": {nil, 0},
	} {
		t.Run(name, func(t *testing.T) {
			srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
				for k, v := range tc.headers {
					w.rw.Header().Set(k, v)
				}
				w.json(429, `{"message":"Too many requests, please try again later."}`)
			}))
			b := bkNew(t, srv.URL)
			b.now = func() time.Time { return wrEpoch }
			_, err := b.Poll(context.Background())
			if qe := bkWantReason(t, err, ReasonRateLimited); qe.RetryAfter != tc.want {
				t.Fatalf("RetryAfter %s, want %s", qe.RetryAfter, tc.want)
			}
			if RetryAfterOf(err) != tc.want {
				t.Fatalf("RetryAfterOf = %s", RetryAfterOf(err))
			}
		})
	}
}

func TestBuildkiteMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"html":                `<html><body>Sign in to continue</body></html>`,
		"truncated":           `{"agents":{"idle":3,"busy":2,"total":5},"jobs":{"sched`,
		"no jobs object":      `{"agents":{"idle":3,"busy":2,"total":5},"organization":{"slug":"acme-inc"}}`,
		"empty object":        `{}`,
		"jobs without counts": `{"jobs":{"total":6},"organization":{"slug":"acme-inc"}}`,
		"no organization":     `{"jobs":{"scheduled":1,"running":0,"waiting":0,"total":1}}`,
		"strings for numbers": `{"jobs":{"scheduled":"1","running":"0"},"organization":{"slug":"acme-inc"}}`,
		"negative":            `{"jobs":{"scheduled":-1,"running":0},"organization":{"slug":"acme-inc"}}`,
		"all-queues shape":    `[{"jobs":{"scheduled":1}}]`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
				if strings.HasPrefix(body, "<") {
					w.text(200, body)
					return
				}
				w.json(200, body)
			}))
			c, err := bkNew(t, srv.URL).Poll(context.Background())
			bkWantReason(t, err, ReasonMalformed)
			if c != (Counts{}) {
				t.Fatalf("counts %+v with an error", c)
			}
		})
	}
}

func TestBuildkiteServerErrors(t *testing.T) {
	srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
		w.rw.Header().Set("Retry-After", "30")
		w.text(503, "<html>Service Unavailable</html>")
	}))
	_, err := bkNew(t, srv.URL).Poll(context.Background())
	if qe := bkWantReason(t, err, ReasonHTTP); qe.RetryAfter != 30*time.Second {
		t.Fatalf("503 Retry-After not honoured: %v", err)
	}
	srv2 := wrLoopback(t, bkHandler(t, func(w bkWriter) { w.json(404, `{"message":"Not Found"}`) }))
	_, err = bkNew(t, srv2.URL).Poll(context.Background())
	bkWantReason(t, err, ReasonHTTP)
}

func TestBuildkiteSlowResponseTimesOut(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := wrLoopback(t, bkHandler(t, func(w bkWriter) {
		arrived <- struct{}{}
		select {
		case <-w.r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before the server's Close

	// The poll's context ends while the server sits on the request.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	_, err := bkNew(t, srv.URL).Poll(ctx)
	bkWantReason(t, err, ReasonTimeout)

	// A real (short) deadline.
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = bkNew(t, srv.URL).Poll(ctx)
	bkWantReason(t, err, ReasonTimeout)
	<-arrived
}

func TestBuildkiteConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = bkNew(t, "http://"+addr).Poll(context.Background())
	bkWantReason(t, err, ReasonNetwork)
}
