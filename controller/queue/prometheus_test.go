package queue

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

type promWriter struct {
	rw http.ResponseWriter
	r  *http.Request
}

func (w promWriter) json(code int, body string) {
	w.rw.Header().Set("Content-Type", "application/json")
	w.rw.WriteHeader(code)
	io.WriteString(w.rw, body)
}

func (w promWriter) text(code int, body string) {
	w.rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.rw.WriteHeader(code)
	io.WriteString(w.rw, body)
}

// promHandler serves /api/v1/query (under any prefix); the request's form is parsed.
func promHandler(f func(promWriter)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/api/v1/query") {
			http.NotFound(rw, r)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		f(promWriter{rw, r})
	})
}

// Bodies as Prometheus's /api/v1/query returns them.
func promScalar(v string) string {
	return `{"status":"success","data":{"resultType":"scalar","result":[1772441999.123,"` + v + `"]}}`
}

func promVector(samples ...string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(samples, ",") + `]}}`
}

func promSample(labels, v string) string {
	return `{"metric":{` + labels + `},"value":[1772441999.123,"` + v + `"]}`
}

func promNew(t *testing.T, url, state string) *Prometheus {
	t.Helper()
	p, err := NewPrometheus(url, `sum(buildkite_queues_scheduled_jobs_count{queue="nvme-arm64"})`, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func promServe(t *testing.T, code int, body string) string {
	return wrLoopback(t, promHandler(func(w promWriter) { w.json(code, body) })).URL
}

func TestPrometheusScalarAndVector(t *testing.T) {
	for name, tc := range map[string]struct {
		body, state string
		want        Counts
	}{
		"scalar queued":              {promScalar("7"), "queued", Counts{Queued: 7}},
		"scalar default state":       {promScalar("7"), "", Counts{Queued: 7}},
		"vector one sample running":  {promVector(promSample(``, "12")), "running", Counts{Running: 12}},
		"vector with labels":         {promVector(promSample(`"queue":"nvme-arm64","job":"bk-metrics"`, "3")), "queued", Counts{Queued: 3}},
		"zero is a reading":          {promVector(promSample(``, "0")), "queued", Counts{}},
		"fraction rounds up":         {promScalar("2.25"), "queued", Counts{Queued: 3}},
		"float noise does not round": {promScalar("3.0000000000001"), "queued", Counts{Queued: 3}},
		"scientific notation":        {promScalar("1e+02"), "running", Counts{Running: 100}},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := promNew(t, promServe(t, 200, tc.body), tc.state).Poll(context.Background())
			if err != nil || c != tc.want {
				t.Fatalf("Poll = %+v, %v; want %+v", c, err, tc.want)
			}
		})
	}
}

func TestPrometheusRequest(t *testing.T) {
	var mu sync.Mutex
	var methods []string
	var query, timeout, path string
	srv := wrLoopback(t, promHandler(func(w promWriter) {
		mu.Lock()
		defer mu.Unlock()
		methods = append(methods, w.r.Method)
		if w.r.Method == http.MethodPost {
			// A read-only proxy in front (some Thanos/Mimir setups) refuses POST: the client falls back to GET.
			w.text(http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		query, timeout, path = w.r.Form.Get("query"), w.r.Form.Get("timeout"), w.r.URL.Path
		w.json(200, promScalar("1"))
	}))
	p, err := NewPrometheus(srv.URL+"/prometheus/", `sum(ci_queue_depth{pool="arm"})`, "queued", srv.Client().Transport)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := p.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(methods, ",") != "POST,GET" || path != "/prometheus/api/v1/query" || query != `sum(ci_queue_depth{pool="arm"})` {
		t.Fatalf("methods %v path %q query %q", methods, path, query)
	}
	if d, err := time.ParseDuration(timeout); err != nil || d <= 0 || d > time.Hour {
		t.Fatalf("timeout parameter %q, want the poll's remaining time", timeout)
	}
}

func TestPrometheusRejectsNonSingleNumbers(t *testing.T) {
	for name, tc := range map[string]struct {
		body, fragment string
	}{
		"empty vector": {promVector(), "no series"},
		"many series": {promVector(
			promSample(`"queue":"a"`, "1"), promSample(`"queue":"b"`, "2"), promSample(`"queue":"c"`, "3")), "3 series"},
		"NaN":       {promScalar("NaN"), "NaN"},
		"+Inf":      {promVector(promSample(``, "+Inf")), "Inf"},
		"-Inf":      {promScalar("-Inf"), "Inf"},
		"negative":  {promScalar("-2"), "negative"},
		"too large": {promScalar("1e12"), "not a queue"},
		"matrix": {`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1772441939,"1"],[1772441999,"2"]]}]}}`,
			"range vector"},
		"native histogram": {`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1772441999,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]}]}}`,
			"histogram"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := promNew(t, promServe(t, 200, tc.body), "queued").Poll(context.Background())
			bkWantReason(t, err, ReasonQuery)
			if !strings.Contains(err.Error(), tc.fragment) {
				t.Fatalf("error %q does not mention %q", err, tc.fragment)
			}
		})
	}
}

func TestPrometheusBadQuery(t *testing.T) {
	for name, tc := range map[string]struct {
		code int
		body string
	}{
		"parse error": {400, `{"status":"error","errorType":"bad_data","error":"1:4: parse error: unexpected end of input"}`},
		"execution":   {422, `{"status":"error","errorType":"execution","error":"vector cannot contain metrics with the same labelset"}`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := promNew(t, promServe(t, tc.code, tc.body), "queued").Poll(context.Background())
			bkWantReason(t, err, ReasonQuery)
		})
	}
}

func TestPrometheusHTTPErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		code       int
		headers    map[string]string
		body       string
		reason     string
		retryAfter time.Duration
	}{
		"401 from the auth proxy": {401, map[string]string{"WWW-Authenticate": `Basic realm="prometheus"`}, "Unauthorized", ReasonAuth, 0},
		"403 from the auth proxy": {403, nil, "Forbidden", ReasonAuth, 0},
		"429 from the proxy":      {429, map[string]string{"Retry-After": "17"}, "Too Many Requests", ReasonRateLimited, 17 * time.Second},
		"429 without Retry-After": {429, nil, "Too Many Requests", ReasonRateLimited, 0},
		"502 from the proxy":      {502, nil, "Bad Gateway", ReasonHTTP, 0},
		"503 with Retry-After":    {503, map[string]string{"Retry-After": "5"}, "Service Unavailable", ReasonHTTP, 5 * time.Second},
		"503 query timeout": {503, nil, `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`,
			ReasonTimeout, 0},
	} {
		t.Run(name, func(t *testing.T) {
			srv := wrLoopback(t, promHandler(func(w promWriter) {
				for k, v := range tc.headers {
					w.rw.Header().Set(k, v)
				}
				if strings.HasPrefix(tc.body, "{") {
					w.json(tc.code, tc.body)
				} else {
					w.text(tc.code, tc.body)
				}
			}))
			_, err := promNew(t, srv.URL, "queued").Poll(context.Background())
			if qe := bkWantReason(t, err, tc.reason); qe.RetryAfter != tc.retryAfter {
				t.Fatalf("RetryAfter %s, want %s (%v)", qe.RetryAfter, tc.retryAfter, err)
			}
		})
	}
}

func TestPrometheusMalformed(t *testing.T) {
	for name, tc := range map[string]struct {
		code int
		body string
	}{
		"html login page":    {200, `<!DOCTYPE html><html><head><title>Sign in</title></head></html>`},
		"truncated":          {200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"val`},
		"unknown resultType": {200, `{"status":"success","data":{"resultType":"table","result":[]}}`},
		"value not a string": {200, `{"status":"success","data":{"resultType":"scalar","result":[1772441999.123,7]}}`},
		"no data":            {200, `{"status":"success"}`},
		"400 not json":       {400, `bad request`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := promNew(t, promServe(t, tc.code, tc.body), "queued").Poll(context.Background())
			bkWantReason(t, err, ReasonMalformed)
		})
	}
}

func TestPrometheusWarningsAreLogged(t *testing.T) {
	url := promServe(t, 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1772441999.123,"2"]}]},`+
		`"warnings":["PromQL warning: encountered a mix of histograms and floats for metric name \"ci_jobs\""]}`)
	var logged []string
	log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})
	c, err := promNew(t, url, "queued").Poll(logr.NewContext(context.Background(), log))
	if err != nil || c.Queued != 2 {
		t.Fatalf("Poll = %+v, %v; warnings must not fail the reading", c, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "mix of histograms") {
		t.Fatalf("logged %q, want the warning", logged)
	}
}

func TestPrometheusSlowResponseTimesOut(t *testing.T) {
	arrived := make(chan struct{}, 2)
	release := make(chan struct{})
	srv := wrLoopback(t, promHandler(func(w promWriter) {
		arrived <- struct{}{}
		select {
		case <-w.r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) })
	p := promNew(t, srv.URL, "queued")

	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	_, err := p.Poll(ctx)
	bkWantReason(t, err, ReasonTimeout)

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = p.Poll(ctx)
	bkWantReason(t, err, ReasonTimeout)
}

// A server that accepts the request and sends a 200 but stalls mid-body.
func TestPrometheusStalledBodyTimesOut(t *testing.T) {
	srv := wrLoopback(t, promHandler(func(w promWriter) {
		w.rw.Header().Set("Content-Type", "application/json")
		w.rw.WriteHeader(200)
		io.WriteString(w.rw, `{"status":"success","data":{"resultType":"vector","result":[`)
		w.rw.(http.Flusher).Flush()
		<-w.r.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := promNew(t, srv.URL, "queued").Poll(ctx)
	bkWantReason(t, err, ReasonTimeout)
}

// The connection drops after the headers and part of the body.
func TestPrometheusConnectionDroppedMidBody(t *testing.T) {
	srv := wrLoopback(t, promHandler(func(w promWriter) {
		conn, buf, err := w.rw.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n")
		buf.WriteString(`{"status":"success","data":{"resultType":"scalar","result":[1772441999.123,"`)
		buf.Flush()
	}))
	_, err := promNew(t, srv.URL, "queued").Poll(context.Background())
	bkWantReason(t, err, ReasonNetwork)
}

func TestPrometheusConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = promNew(t, "http://"+addr, "queued").Poll(context.Background())
	bkWantReason(t, err, ReasonNetwork)
}

func TestNewPrometheusValidates(t *testing.T) {
	for _, tc := range [][3]string{
		{"http://127.0.0.1:9090", "up", "waiting"},
		{"http://127.0.0.1:9090", " ", "queued"},
		{"127.0.0.1:9090", "up", "queued"},
		{"", "up", "queued"},
	} {
		if _, err := NewPrometheus(tc[0], tc[1], tc[2], nil); err == nil {
			t.Errorf("NewPrometheus(%q, %q, %q) accepted", tc[0], tc[1], tc[2])
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := wrEpoch
	for _, tc := range []struct {
		h    map[string]string
		want time.Duration
	}{
		{nil, 0},
		{map[string]string{"Retry-After": "0"}, 0},
		{map[string]string{"Retry-After": "120"}, 2 * time.Minute},
		{map[string]string{"Retry-After": "-5"}, 0},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{"Retry-After": now.Add(45 * time.Second).Format(http.TimeFormat)}, 45 * time.Second},
		{map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{map[string]string{"Retry-After": "999999999999"}, time.Hour},
		{map[string]string{"RateLimit-Reset": "42"}, 42 * time.Second},
		{map[string]string{"RateLimit-Reset": fmt.Sprint(now.Add(3 * time.Minute).Unix())}, 3 * time.Minute}, // GitLab: a Unix time
		{map[string]string{"Retry-After": "7", "RateLimit-Reset": "42"}, 7 * time.Second},
	} {
		h := http.Header{}
		for k, v := range tc.h {
			h.Set(k, v)
		}
		if got := RetryAfterHeader(h, now); got != tc.want {
			t.Errorf("RetryAfterHeader(%v) = %s, want %s", tc.h, got, tc.want)
		}
	}
}
