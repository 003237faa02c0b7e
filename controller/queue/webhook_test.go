package queue_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clocktesting "k8s.io/utils/clock/testing"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"warmpool.io/warmpool/controller/queue"
)

const webhookSecret = "It's a Secret to Everybody"

var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// webhookFixture is a Webhook routing two pools, with a fake clock and its errors counted.
type webhookFixture struct {
	t       testing.TB
	clk     *clocktesting.FakeClock
	tracker *queue.Tracker
	hook    *queue.Webhook
	secret  []byte

	mu       sync.Mutex
	errs     map[string]int // "source/reason"
	delivery int
}

var testRoutes = []queue.WebhookRoute{
	{Pool: "linux-x64", Source: "githubWebhook", Labels: []string{"self-hosted", "linux", "x64"}},
	{Pool: "linux-arm64", Source: "githubWebhook", Labels: []string{"self-hosted", "linux", "ARM64"}},
}

func newWebhookFixture(t testing.TB) *webhookFixture {
	f := &webhookFixture{t: t, clk: clocktesting.NewFakeClock(t0), secret: []byte(webhookSecret), errs: map[string]int{}}
	f.tracker = queue.NewTracker(f.clk, 0)
	f.tracker.SetSources(map[string][]string{"linux-x64": {"githubWebhook"}, "linux-arm64": {"githubWebhook"}})
	f.hook = queue.NewWebhook(func() []byte { return f.secret }, f.tracker, f.clk, logr.Discard())
	f.hook.OnError = func(source, reason string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.errs[source+"/"+reason]++
	}
	f.hook.SetRoutes(testRoutes)
	return f
}

// counts is what the tracker holds for a pool's webhook source; it fails if never recorded.
func (f *webhookFixture) counts(pool string) queue.Counts {
	f.t.Helper()
	c, age, err := f.tracker.Source(queue.Key{Pool: pool, Source: "githubWebhook"})
	if age < 0 || err != nil {
		f.t.Fatalf("pool %s: webhook source never recorded (err %v)", pool, err)
	}
	return c
}

func (f *webhookFixture) wantCounts(pool string, want queue.Counts) {
	f.t.Helper()
	if got := f.counts(pool); got != want {
		f.t.Errorf("pool %s: counts = %+v, want %+v", pool, got, want)
	}
}

func (f *webhookFixture) errors() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.errs {
		out[k] = v
	}
	return out
}

func (f *webhookFixture) wantErrors(want map[string]int) {
	f.t.Helper()
	got := f.errors()
	if len(got) != len(want) {
		f.t.Errorf("errors = %v, want %v", got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			f.t.Errorf("errors = %v, want %v", got, want)
			return
		}
	}
}

// nextDelivery returns a fresh X-GitHub-Delivery GUID.
func (f *webhookFixture) nextDelivery() string {
	f.delivery++
	return fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012x", f.delivery)
}

func sign(secret []byte, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// request builds a delivery as GitHub sends it, signed with key.
func request(event, delivery string, body []byte, key []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "GitHub-Hookshot/a1b2c3d")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", delivery)
	r.Header.Set("X-GitHub-Hook-ID", "292430182")
	r.Header.Set("X-GitHub-Hook-Installation-Target-ID", "79929171")
	r.Header.Set("X-GitHub-Hook-Installation-Target-Type", "organization")
	if key != nil {
		r.Header.Set("X-Hub-Signature-256", sign(key, body))
	}
	r.RemoteAddr = "127.0.0.1:53124"
	return r
}

func (f *webhookFixture) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	f.hook.ServeHTTP(rec, r)
	return rec
}

// send delivers a signed event with a fresh delivery ID and checks the status code.
func (f *webhookFixture) send(event string, body []byte, wantCode int) *httptest.ResponseRecorder {
	f.t.Helper()
	return f.sendAs(f.nextDelivery(), event, body, wantCode)
}

func (f *webhookFixture) sendAs(delivery, event string, body []byte, wantCode int) *httptest.ResponseRecorder {
	f.t.Helper()
	rec := f.serve(request(event, delivery, body, []byte(webhookSecret)))
	if rec.Code != wantCode {
		f.t.Fatalf("%s delivery: status %d (%q), want %d", event, rec.Code, rec.Body.String(), wantCode)
	}
	return rec
}

func (f *webhookFixture) job(action string, id int64, labels ...string) {
	f.t.Helper()
	f.send("workflow_job", workflowJob(action, id, labels...), http.StatusOK)
}

var (
	x64   = []string{"self-hosted", "linux", "x64"}
	arm64 = []string{"self-hosted", "Linux", "ARM64", "gpu"}
)

// workflowJob is a workflow_job delivery shaped as in GitHub's webhook docs: runner_* are
// null until the job is in progress, conclusion and completed_at until it completes.
func workflowJob(action string, id int64, labels ...string) []byte {
	if labels == nil {
		labels = x64
	}
	created := "2026-03-14T09:26:41Z"
	job := map[string]any{
		"id":                id,
		"run_id":            id/10 + 13000000000,
		"workflow_name":     "CI",
		"head_branch":       "main",
		"run_url":           fmt.Sprintf("https://api.github.com/repos/octo-org/octo-repo/actions/runs/%d", id/10+13000000000),
		"run_attempt":       1,
		"node_id":           "CR_kwDOLm8Dq88AAAAJm1oF7Q",
		"head_sha":          "d6fde92930d4715a2b49857d24b940956b26d2d3",
		"url":               fmt.Sprintf("https://api.github.com/repos/octo-org/octo-repo/actions/jobs/%d", id),
		"html_url":          fmt.Sprintf("https://github.com/octo-org/octo-repo/actions/runs/%d/job/%d", id/10+13000000000, id),
		"status":            action,
		"conclusion":        nil,
		"created_at":        created,
		"started_at":        created,
		"completed_at":      nil,
		"name":              "build (ubuntu, go 1.26)",
		"steps":             []any{},
		"check_run_url":     fmt.Sprintf("https://api.github.com/repos/octo-org/octo-repo/check-runs/%d", id),
		"labels":            labels,
		"runner_id":         nil,
		"runner_name":       nil,
		"runner_group_id":   nil,
		"runner_group_name": nil,
	}
	switch action {
	case "in_progress", "completed":
		job["started_at"] = "2026-03-14T09:27:02Z"
		job["runner_id"] = 42
		job["runner_name"] = "arc-runner-set-x7k2p-runner-9c4lm"
		job["runner_group_id"] = 1
		job["runner_group_name"] = "Default"
		step := map[string]any{"name": "Set up job", "status": "in_progress", "conclusion": nil, "number": 1,
			"started_at": "2026-03-14T09:27:03Z", "completed_at": nil}
		if action == "completed" {
			job["conclusion"] = "success"
			job["completed_at"] = "2026-03-14T09:31:40Z"
			step["status"], step["conclusion"], step["completed_at"] = "completed", "success", "2026-03-14T09:27:05Z"
		}
		job["steps"] = []any{step}
	}
	payload := map[string]any{
		"action":       action,
		"workflow_job": job,
		"repository": map[string]any{
			"id": 768426923, "node_id": "R_kgDOLc2Mqw", "name": "octo-repo", "full_name": "octo-org/octo-repo",
			"private": true, "html_url": "https://github.com/octo-org/octo-repo", "default_branch": "main",
			"owner": map[string]any{"login": "octo-org", "id": 79929171, "node_id": "O_kgDOBMOMUw", "type": "Organization",
				"avatar_url": "https://avatars.githubusercontent.com/u/79929171?v=4", "site_admin": false},
			"created_at": "2024-03-07T10:02:12Z", "updated_at": "2026-03-01T08:00:00Z", "pushed_at": "2026-03-14T09:26:30Z",
			"visibility": "private", "fork": false, "archived": false,
		},
		"organization": map[string]any{
			"login": "octo-org", "id": 79929171, "node_id": "O_kgDOBMOMUw",
			"url": "https://api.github.com/orgs/octo-org", "repos_url": "https://api.github.com/orgs/octo-org/repos",
			"hooks_url": "https://api.github.com/orgs/octo-org/hooks", "description": "",
		},
		"sender": map[string]any{
			"login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==", "type": "User", "site_admin": false,
			"avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
		},
	}
	body, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	return body
}

// pingBody is GitHub's ping event for an organization hook.
const pingBody = `{"zen":"Design for failure.","hook_id":292430182,"hook":{"type":"Organization","id":292430182,"name":"web","active":true,"events":["workflow_job"],"config":{"content_type":"json","insecure_ssl":"0","url":"https://warmpool.example.com/webhooks/github"}},"organization":{"login":"octo-org","id":79929171},"sender":{"login":"octocat","id":583231}}`

func TestWebhookQueued(t *testing.T) {
	f := newWebhookFixture(t)
	f.wantCounts("linux-x64", queue.Counts{}) // SetRoutes records every route: known, empty
	f.job("queued", 1001)
	f.job("waiting", 1002) // waiting on an environment's protection rules: still queued
	f.wantCounts("linux-x64", queue.Counts{Queued: 2})
	f.wantCounts("linux-arm64", queue.Counts{})
	if c, known := f.tracker.Pool("linux-x64"); !known || c != (queue.Counts{Queued: 2}) {
		t.Errorf("Pool = %+v, %v", c, known)
	}
	f.wantErrors(nil)
}

func TestWebhookInProgress(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001)
	f.job("queued", 1002)
	f.job("in_progress", 1001)
	f.wantCounts("linux-x64", queue.Counts{Queued: 1, Running: 1})
}

func TestWebhookCompletedRemoves(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001)
	f.job("in_progress", 1001)
	f.job("queued", 1002)
	f.job("completed", 1001)
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
	f.job("completed", 1002) // cancelled while queued
	f.wantCounts("linux-x64", queue.Counts{})
}

func TestWebhookDuplicateDelivery(t *testing.T) {
	f := newWebhookFixture(t)
	body := workflowJob("queued", 1001)
	f.sendAs("dup-1", "workflow_job", body, http.StatusOK)
	rec := f.sendAs("dup-1", "workflow_job", body, http.StatusOK) // a redelivery
	if !strings.Contains(rec.Body.String(), "duplicate") {
		t.Errorf("redelivery answered %q", rec.Body.String())
	}
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
	// The delivery ID, not the body, identifies a delivery.
	f.sendAs("dup-1", "workflow_job", workflowJob("queued", 1002), http.StatusOK)
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})

	// The last 10000 IDs are remembered; older ones are forgotten (bounded memory).
	for i := range 10000 {
		f.sendAs(fmt.Sprintf("filler-%d", i), "workflow_job", workflowJob("completed", int64(5000000+i)), http.StatusOK)
	}
	f.sendAs("dup-1", "workflow_job", workflowJob("queued", 1002), http.StatusOK)
	f.wantCounts("linux-x64", queue.Counts{Queued: 2})
	f.sendAs("filler-9999", "workflow_job", workflowJob("queued", 1003), http.StatusOK)
	f.wantCounts("linux-x64", queue.Counts{Queued: 2})
}

func TestWebhookOutOfOrder(t *testing.T) {
	f := newWebhookFixture(t)
	// completed overtakes in_progress and queued.
	f.job("completed", 1001)
	f.job("in_progress", 1001)
	f.job("queued", 1001)
	f.wantCounts("linux-x64", queue.Counts{})
	// in_progress overtakes queued: the job stays running.
	f.job("in_progress", 1002)
	f.job("queued", 1002)
	f.wantCounts("linux-x64", queue.Counts{Running: 1})
	f.job("completed", 1002)
	f.job("in_progress", 1002) // a late redelivery of an older event
	f.wantCounts("linux-x64", queue.Counts{})
}

func TestWebhookBadSignature(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001)
	body := workflowJob("queued", 1002)
	for _, key := range []string{"It's a secret to everybody", ""} {
		rec := f.serve(request("workflow_job", "bad-sig", body, []byte(key)))
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", rec.Code)
		}
	}
	// A body changed after signing.
	r := request("workflow_job", "bad-sig", body, []byte(webhookSecret))
	r.Body, r.ContentLength = httptestBody(workflowJob("queued", 1003))
	if rec := f.serve(r); rec.Code != http.StatusUnauthorized {
		t.Fatalf("tampered body: status %d, want 401", rec.Code)
	}
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
	f.wantErrors(map[string]int{"githubWebhook/signature": 3})
	// The rejected delivery's ID was not remembered: its genuine delivery counts.
	f.sendAs("bad-sig", "workflow_job", body, http.StatusOK)
	f.wantCounts("linux-x64", queue.Counts{Queued: 2})
}

func httptestBody(b []byte) (*readCloser, int64) {
	return &readCloser{bytes.NewReader(b)}, int64(len(b))
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func TestWebhookMissingSignature(t *testing.T) {
	f := newWebhookFixture(t)
	body := workflowJob("queued", 1001)
	for name, header := range map[string]string{
		"absent":     "",
		"sha1 only":  "sha1=" + strings.Repeat("ab", 20),
		"no prefix":  strings.TrimPrefix(sign([]byte(webhookSecret), body), "sha256="),
		"not hex":    "sha256=" + strings.Repeat("zz", 32),
		"short":      sign([]byte(webhookSecret), body)[:40],
		"upper case": "SHA256=" + strings.TrimPrefix(sign([]byte(webhookSecret), body), "sha256="),
	} {
		r := request("workflow_job", f.nextDelivery(), body, nil)
		if header != "" {
			r.Header.Set("X-Hub-Signature-256", header)
		}
		if name == "sha1 only" {
			r.Header.Del("X-Hub-Signature-256")
			r.Header.Set("X-Hub-Signature", header)
		}
		if rec := f.serve(r); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, rec.Code)
		}
	}
	f.wantCounts("linux-x64", queue.Counts{})
	f.wantErrors(map[string]int{"githubWebhook/signature": 6})
}

func TestWebhookEmptySecretRejectsEverything(t *testing.T) {
	f := newWebhookFixture(t)
	f.secret = nil
	body := workflowJob("queued", 1001)
	for _, r := range []*http.Request{
		request("workflow_job", "d1", body, nil),      // unsigned
		request("workflow_job", "d2", body, []byte{}), // "signed" with the empty key
		request("ping", "d3", []byte(pingBody), []byte{}),
	} {
		if rec := f.serve(r); rec.Code != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", rec.Code)
		}
	}
	f.wantCounts("linux-x64", queue.Counts{})
	f.wantErrors(map[string]int{"githubWebhook/signature": 3})
}

// GitHub's documented test vector for X-Hub-Signature-256.
func TestWebhookSignatureVector(t *testing.T) {
	f := newWebhookFixture(t)
	r := request("ping", "vector", []byte("Hello, World!"), nil)
	r.Header.Set("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	if rec := f.serve(r); rec.Code != http.StatusOK {
		t.Fatalf("status %d (%s), want 200", rec.Code, rec.Body)
	}
	r = request("ping", "vector", []byte("Hello, World?"), nil)
	r.Header.Set("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	if rec := f.serve(r); rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", rec.Code)
	}
}

func TestWebhookOversizedBody(t *testing.T) {
	f := newWebhookFixture(t)
	// A signed, otherwise valid payload padded past 1 MiB.
	var payload map[string]any
	if err := json.Unmarshal(workflowJob("queued", 1001), &payload); err != nil {
		t.Fatal(err)
	}
	payload["padding"] = strings.Repeat("x", 1<<20)
	body, _ := json.Marshal(payload)
	rec := f.serve(request("workflow_job", f.nextDelivery(), body, []byte(webhookSecret)))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", rec.Code)
	}
	// Without a Content-Length (chunked), the reader's cap applies.
	r := request("workflow_job", f.nextDelivery(), body, []byte(webhookSecret))
	r.ContentLength = -1
	if rec := f.serve(r); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: status %d, want 413", rec.Code)
	}
	f.wantCounts("linux-x64", queue.Counts{})
	f.wantErrors(map[string]int{"githubWebhook/bad_request": 2})
	// Exactly at the cap is fine.
	f.hook.MaxBodyBytes = int64(len(body))
	f.send("workflow_job", body, http.StatusOK)
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
}

func TestWebhookMalformedJSON(t *testing.T) {
	f := newWebhookFixture(t)
	for _, body := range []string{
		`{"action":"queued","workflow_job":{"id":1001,`,
		`{"action":"queued","workflow_job":{"id":"1001","labels":["linux"]}}`,
		`{"action":"queued"}`,
		`{"action":"queued","workflow_job":null}`,
		`[]`,
		``,
	} {
		f.send("workflow_job", []byte(body), http.StatusBadRequest)
	}
	f.wantCounts("linux-x64", queue.Counts{})
	f.wantErrors(map[string]int{"githubWebhook/bad_request": 6})
}

func TestWebhookFormEncoded(t *testing.T) {
	f := newWebhookFixture(t)
	body := []byte(url.Values{"payload": {string(workflowJob("queued", 1001))}}.Encode())
	r := request("workflow_job", f.nextDelivery(), body, []byte(webhookSecret))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if rec := f.serve(r); rec.Code != http.StatusOK {
		t.Fatalf("status %d (%s)", rec.Code, rec.Body)
	}
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
}

func TestWebhookMethodNotAllowed(t *testing.T) {
	f := newWebhookFixture(t)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodHead} {
		r := request("workflow_job", f.nextDelivery(), workflowJob("queued", 1001), []byte(webhookSecret))
		r.Method = m
		rec := f.serve(r)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
			t.Errorf("%s: status %d, Allow %q", m, rec.Code, rec.Header().Get("Allow"))
		}
	}
	f.wantCounts("linux-x64", queue.Counts{})
}

func TestWebhookPing(t *testing.T) {
	f := newWebhookFixture(t)
	f.send("ping", []byte(pingBody), http.StatusOK)
	f.wantErrors(nil)
	if rec := f.serve(request("ping", f.nextDelivery(), []byte(pingBody), nil)); rec.Code != http.StatusUnauthorized {
		t.Errorf("unsigned ping: status %d, want 401", rec.Code)
	}
}

func TestWebhookOtherEventsIgnored(t *testing.T) {
	f := newWebhookFixture(t)
	f.send("workflow_run", []byte(`{"action":"requested","workflow_run":{"id":13000000100}}`), http.StatusAccepted)
	f.send("push", []byte(`{"ref":"refs/heads/main"}`), http.StatusAccepted)
	// An action GitHub may add later.
	f.send("workflow_job", workflowJob("requeued", 1001), http.StatusAccepted)
	f.wantCounts("linux-x64", queue.Counts{})
	f.wantErrors(nil)
}

func TestWebhookUnknownLabels(t *testing.T) {
	f := newWebhookFixture(t)
	f.send("workflow_job", workflowJob("queued", 1001, "self-hosted", "windows", "x64"), http.StatusAccepted)
	f.send("workflow_job", workflowJob("queued", 1002, "ubuntu-latest"), http.StatusAccepted)
	f.send("workflow_job", workflowJob("queued", 1003, "self-hosted", "linux"), http.StatusAccepted) // too few labels
	f.wantCounts("linux-x64", queue.Counts{})
	f.wantCounts("linux-arm64", queue.Counts{})
	f.wantErrors(map[string]int{"githubWebhook/unknown_pool": 3})
}

func TestWebhookRoutesByLabels(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001, x64...)
	f.job("queued", 1002, arm64...) // mixed case, an extra label
	f.job("queued", 1003, "SELF-HOSTED", "linux", "x64", "large")
	f.job("in_progress", 1002, arm64...)
	f.wantCounts("linux-x64", queue.Counts{Queued: 2})
	f.wantCounts("linux-arm64", queue.Counts{Running: 1})

	// The first matching route wins.
	f.hook.SetRoutes([]queue.WebhookRoute{
		{Pool: "linux-arm64", Source: "githubWebhook", Labels: []string{"gpu"}},
		{Pool: "linux-x64", Source: "githubWebhook", Labels: []string{"self-hosted", "linux"}},
	})
	f.job("queued", 1004, "self-hosted", "linux", "x64", "gpu")
	f.job("queued", 1005, "self-hosted", "linux", "arm64")
	f.wantCounts("linux-arm64", queue.Counts{Queued: 1, Running: 1})
	f.wantCounts("linux-x64", queue.Counts{Queued: 3})
}

func TestWebhookSetRoutesDropsJobs(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001, x64...)
	f.job("queued", 1002, arm64...)
	f.hook.SetRoutes(testRoutes[:1])
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
	f.hook.SetRoutes(testRoutes)
	f.wantCounts("linux-arm64", queue.Counts{})
}

var (
	x64Key   = queue.Key{Pool: "linux-x64", Source: "githubWebhook"}
	arm64Key = queue.Key{Pool: "linux-arm64", Source: "githubWebhook"}
)

func TestWebhookResync(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1)
	f.job("queued", 2)
	f.job("in_progress", 2)
	f.job("queued", 3)
	f.job("in_progress", 7) // REST still lists it queued: it stays running
	f.job("completed", 4)
	f.job("queued", 9, arm64...)
	f.wantCounts("linux-x64", queue.Counts{Queued: 2, Running: 2})
	f.clk.Step(queue.ResyncGrace + time.Second)

	// The REST listing: 2's completion was missed; 5 and 6 were never delivered; 1 started;
	// 4 is listed from a snapshot older than its completion; 9 belongs to the other pool.
	c := f.hook.Resync(x64Key, f.clk.Now(), []int64{3, 4, 5, 7, 9}, []int64{1, 6})
	if want := (queue.Counts{Queued: 2, Running: 3}); c != want { // queued 3,5; running 1,6,7
		t.Errorf("Resync returned %+v, want %+v", c, want)
	}
	f.wantCounts("linux-x64", queue.Counts{Queued: 2, Running: 3})
	f.wantCounts("linux-arm64", queue.Counts{Queued: 1})

	// Later deliveries apply on top of the resynced set.
	f.job("completed", 6)
	f.job("in_progress", 5)
	f.wantCounts("linux-x64", queue.Counts{Queued: 1, Running: 3})
	f.clk.Step(queue.ResyncGrace + time.Second)
	f.hook.Resync(x64Key, f.clk.Now(), nil, nil)
	f.wantCounts("linux-x64", queue.Counts{})
	f.hook.Resync(queue.Key{Pool: "no-such-pool", Source: "githubWebhook"}, f.clk.Now(), []int64{11}, nil) // no route: nothing to do
	f.wantCounts("linux-arm64", queue.Counts{Queued: 1})
}

// TestWebhookResyncKeepsDeliveriesNewerThanTheListing: a job delivered while the listing ran
// (or just before it, within ResyncGrace) is not dropped for being absent from it.
func TestWebhookResyncKeepsDeliveriesNewerThanTheListing(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1)
	f.clk.Step(2 * queue.ResyncGrace)
	f.job("queued", 2) // within the grace before the listing starts
	listedAt := f.clk.Now().Add(queue.ResyncGrace / 2)
	f.clk.Step(queue.ResyncGrace)
	f.job("queued", 3) // while the listing runs
	f.hook.Resync(x64Key, listedAt, nil, nil)
	f.wantCounts("linux-x64", queue.Counts{Queued: 2}) // 1 dropped; 2 and 3 kept
}

func TestWebhookQueuedJobExpires(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001)
	f.clk.Step(5 * time.Hour)
	f.job("queued", 1002)
	f.job("in_progress", 1003)
	f.clk.Step(time.Hour) // 1001 queued exactly 6h: kept
	f.hook.Sweep()
	f.wantCounts("linux-x64", queue.Counts{Queued: 2, Running: 1})
	f.clk.Step(time.Minute) // 1001 queued over 6h: its later deliveries were lost
	f.job("queued", 1004)   // a delivery sweeps too
	f.wantCounts("linux-x64", queue.Counts{Queued: 2, Running: 1})
	// A job running over a day never completed as far as we know.
	f.clk.Step(20 * time.Hour)
	f.hook.Sweep()
	f.wantCounts("linux-x64", queue.Counts{Running: 1}) // 1002 and 1004 expired queued
	f.clk.Step(4 * time.Hour)                           // 1003 running 25h
	f.hook.Sweep()
	f.wantCounts("linux-x64", queue.Counts{})

	// The ages are settings.
	f.hook.MaxQueuedAge = 10 * time.Minute
	f.job("queued", 2001)
	f.clk.Step(11 * time.Minute)
	f.hook.Sweep()
	f.wantCounts("linux-x64", queue.Counts{})
}

func TestWebhookTombstonesExpire(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("completed", 1001)
	f.clk.Step(23 * time.Hour)
	f.job("queued", 1001) // a day-late redelivery within the tombstone's life: ignored
	f.wantCounts("linux-x64", queue.Counts{})
	f.clk.Step(time.Hour + time.Second)
	f.hook.Sweep()
	// The tombstone is gone (bounded memory): the same ID counts again.
	f.job("queued", 1001)
	f.wantCounts("linux-x64", queue.Counts{Queued: 1})
}

func TestWebhookSweepKeepsSourcesFresh(t *testing.T) {
	f := newWebhookFixture(t)
	f.job("queued", 1001)
	for range 4 {
		f.clk.Step(2 * time.Minute)
		f.hook.Sweep()
	}
	if c, known := f.tracker.Pool("linux-x64"); !known || c != (queue.Counts{Queued: 1}) {
		t.Errorf("after sweeps: Pool = %+v, %v; want known with 1 queued", c, known)
	}
	f.clk.Step(queue.DefaultMaxStaleness + time.Second)
	if _, known := f.tracker.Pool("linux-x64"); known {
		t.Error("a webhook source never swept stayed known past MaxStaleness")
	}
}

// queueJobs reads warmpool_queue_jobs{pool,source,state} from the registry the manager serves.
func queueJobs(t *testing.T, k queue.Key, state string) (float64, bool) {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"pool": k.Pool, "source": k.Source, "state": state}
	for _, f := range families {
		if f.GetName() != "warmpool_queue_jobs" {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// wantQueueJobs asserts the queued and running gauges of a webhook source.
func wantQueueJobs(t *testing.T, k queue.Key, queued, running float64) {
	t.Helper()
	for state, want := range map[string]float64{"queued": queued, "running": running} {
		got, ok := queueJobs(t, k, state)
		if !ok || got != want {
			t.Errorf("warmpool_queue_jobs{pool=%q,source=%q,state=%q} = %v (exported: %t), want %v", k.Pool, k.Source, state, got, ok, want)
		}
	}
}

// TestWebhookQueueJobsFollowEachDelivery: warmpool_queue_jobs moves with every accepted
// delivery, with no Sweep in between (the clock never moves, so nothing else could set it),
// and a source whose route is removed loses its series.
func TestWebhookQueueJobsFollowEachDelivery(t *testing.T) {
	f := newWebhookFixture(t)
	// SetRoutes exports every route at zero: known and empty.
	wantQueueJobs(t, x64Key, 0, 0)
	f.job("queued", 5001)
	wantQueueJobs(t, x64Key, 1, 0)
	f.job("queued", 5002)
	f.job("in_progress", 5001)
	wantQueueJobs(t, x64Key, 1, 1)
	f.job("completed", 5001)
	f.job("completed", 5002)
	wantQueueJobs(t, x64Key, 0, 0)
	f.job("in_progress", 5003, arm64...)
	wantQueueJobs(t, arm64Key, 0, 1)
	f.hook.Resync(arm64Key, f.clk.Now(), []int64{5004}, []int64{5003})
	wantQueueJobs(t, arm64Key, 1, 1)

	f.hook.SetRoutes(testRoutes[:1])
	for _, state := range []string{"queued", "running"} {
		if v, ok := queueJobs(t, arm64Key, state); ok {
			t.Errorf("warmpool_queue_jobs of the removed route %v still exported (%s = %v)", arm64Key, state, v)
		}
	}
	wantQueueJobs(t, x64Key, 0, 0)
}

// TestWebhookConcurrentDeliveries serves deliveries from several goroutines, as net/http
// does; run with -race.
func TestWebhookConcurrentDeliveries(t *testing.T) {
	f := newWebhookFixture(t)
	var wg sync.WaitGroup
	codes := make(chan int, 4*3*50)
	for g := range 4 {
		wg.Go(func() {
			for j := range 50 {
				id := int64(g*1000 + j + 1)
				for _, a := range []string{"queued", "in_progress", "completed"} {
					codes <- f.serve(request("workflow_job", fmt.Sprintf("%d-%s", id, a), workflowJob(a, id), []byte(webhookSecret))).Code
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			f.hook.Sweep()
			f.hook.Resync(arm64Key, f.clk.Now(), nil, nil)
		}
	})
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("status %d", c)
		}
	}
	f.wantCounts("linux-x64", queue.Counts{})
}

// FuzzWebhook sends arbitrary signed bodies through the handler: it must never panic, answer
// only with the documented codes, and never count below zero.
func FuzzWebhook(f *testing.F) {
	for _, action := range []string{"queued", "waiting", "in_progress", "completed"} {
		f.Add(workflowJob(action, 1001), false)
	}
	f.Add(workflowJob("queued", 1002, arm64...), true)
	f.Add([]byte(`{"action":"queued","workflow_job":{"id":-1,"labels":["self-hosted","linux","x64"]}}`), false)
	f.Add([]byte(`{"action":"completed","workflow_job":{"id":9223372036854775807,"labels":null}}`), false)
	f.Add([]byte(`{"action":"queued","workflow_job":{"id":1e3,"labels":[1,2]}}`), false)
	f.Add([]byte(`payload=%7B%22action%22%3A%22queued%22%7D`), true)
	f.Add([]byte(`{"action":"in_progress","workflow_job":{"id":5,"labels":["self-hosted","linux","x64"]},"workflow_job":{"id":6}}`), false)
	f.Add([]byte("\x00\xff{"), false)
	f.Fuzz(func(t *testing.T, body []byte, form bool) {
		fx := newWebhookFixture(t)
		for i, action := range []string{"", "queued", "in_progress"} {
			b := body
			if action != "" {
				// Replay the body as a later state of the same job, if it parses as one.
				b = bytes.Replace(body, []byte(`"queued"`), []byte(`"`+action+`"`), 1)
			}
			r := request("workflow_job", fmt.Sprintf("fuzz-%d", i), b, []byte(webhookSecret))
			if form {
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			rec := fx.serve(r)
			switch rec.Code {
			case http.StatusOK, http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("status %d for %q", rec.Code, b)
			}
		}
		fx.hook.Resync(x64Key, fx.clk.Now(), []int64{1001}, nil)
		fx.hook.Sweep()
		for _, pool := range []string{"linux-x64", "linux-arm64"} {
			if c := fx.counts(pool); c.Queued < 0 || c.Running < 0 {
				t.Fatalf("pool %s: negative counts %+v", pool, c)
			}
		}
	})
}

// BenchmarkWebhook drives signed deliveries through the handler on one goroutine: each job is
// queued, started and completed (three deliveries), as GitHub sends them.
func BenchmarkWebhook(b *testing.B) {
	f := newWebhookFixture(b)
	type delivery struct {
		id, sig string
		body    []byte
	}
	const chunkJobs = 1000
	actions := []string{"queued", "in_progress", "completed"}
	chunk := make([]delivery, 0, 3*chunkJobs)
	next, job := 0, int64(3000000000)
	// Payload templates whose job ID (10 digits, in the IDs and URLs) is substituted.
	const placeholder = "1999999999"
	templates := make([][]byte, len(actions))
	for i, a := range actions {
		templates[i] = workflowJob(a, 1999999999)
	}
	refill := func() {
		chunk = chunk[:0]
		for range chunkJobs {
			job++
			id := []byte(fmt.Sprint(job))
			for i, a := range actions {
				body := bytes.ReplaceAll(templates[i], []byte(placeholder), id)
				chunk = append(chunk, delivery{id: fmt.Sprintf("%d-%s", job, a), sig: sign([]byte(webhookSecret), body), body: body})
			}
		}
		next = 0
	}
	refill()
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk[0].body)))
	b.ResetTimer()
	for range b.N {
		if next == len(chunk) {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		d := chunk[next]
		next++
		r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(d.body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-GitHub-Event", "workflow_job")
		r.Header.Set("X-GitHub-Delivery", d.id)
		r.Header.Set("X-Hub-Signature-256", d.sig)
		rec := httptest.NewRecorder()
		f.hook.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if c := f.counts("linux-x64"); c.Total() > 3 {
		b.Fatalf("counts %+v after complete lifecycles", c)
	}
}
