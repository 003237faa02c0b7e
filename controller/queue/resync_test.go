package queue

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

const resyncTestSecret = "It's a Secret to Everybody"

// resyncDeliver sends one signed workflow_job delivery through the webhook's HTTP handler.
func resyncDeliver(t *testing.T, w *Webhook, action string, id int64) {
	t.Helper()
	body := fmt.Appendf(nil, `{"action":%q,"workflow_job":{"id":%d,"run_id":%d,"status":%q,"labels":["self-hosted","linux","nvme"]}}`, action, id, id+1000, action)
	mac := hmac.New(sha256.New, []byte(resyncTestSecret))
	mac.Write(body)
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-GitHub-Delivery", fmt.Sprintf("delivery-%s-%d", action, id))
	r.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rec := httptest.NewRecorder()
	w.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("delivery %s %d: status %d %s", action, id, rec.Code, rec.Body)
	}
}

// TestWebhookResyncFromGitHubREST runs a webhook source's resync in the Runner against the
// GitHub REST fake: a job whose deliveries were all lost (queued only in REST) is counted, one
// whose completion was lost (completed in REST, running as far as deliveries said) is dropped,
// and one whose in_progress was lost moves to running. A failed listing changes no count.
func TestWebhookResyncFromGitHubREST(t *testing.T) {
	gh := newGitHubFake(t)
	match := gitHubTestLabels
	gh.repos = []*gitHubFakeRepo{{ID: 101, Name: "alpha", Runs: []*gitHubFakeRun{
		{ID: 5001, Status: "queued", Jobs: []gitHubFakeJob{{ID: 1, Status: "queued", Labels: match}}},
		{ID: 5002, Status: "in_progress", Jobs: []gitHubFakeJob{
			{ID: 2, Status: "in_progress", Labels: match},
			{ID: 4, Status: "queued", Labels: []string{"windows"}}, // another pool's job
		}},
		{ID: 5003, Status: "completed", Jobs: []gitHubFakeJob{{ID: 3, Status: "completed", Labels: match}}},
	}}}

	h := wrNewHarness(t, 5*time.Minute)
	k := Key{Pool: "rs-pool", Source: "github-webhook"}
	h.tr.SetSources(wrSources(k))
	hook := NewWebhook(func() []byte { return []byte(resyncTestSecret) }, h.tr, h.clk, testr.New(t))
	hook.SetRoutes([]WebhookRoute{{Pool: k.Pool, Source: k.Source, Labels: match}})

	resyncDeliver(t, hook, "queued", 2)      // its in_progress delivery is lost
	resyncDeliver(t, hook, "queued", 3)      // its completed delivery is lost
	resyncDeliver(t, hook, "in_progress", 3) //
	if c, known := h.tr.Pool(k.Pool); !known || c != (Counts{Queued: 1, Running: 1}) {
		t.Fatalf("before resync: Pool = %+v, %v", c, known)
	}
	// Deliveries older than the grace are what a listing may overrule.
	h.clk.Step(ResyncGrace + time.Second)

	spec := PollSpec{
		Key: k, Poller: NewWebhookResync(hook, k, gh.poller(t, []string{"alpha"}, match), h.clk),
		Interval: DefaultResyncInterval, Fingerprint: "v1", SelfRecording: true,
	}
	h.r.Set([]PollSpec{spec})
	h.start()
	h.wantSleep(k, DefaultResyncInterval) // the first resync ran (no jitter) and was recorded

	if c, known := h.tr.Pool(k.Pool); !known || c != (Counts{Queued: 1, Running: 1}) {
		t.Errorf("after resync: Pool = %+v, %v; want job 1 queued, job 2 running, job 3 gone", c, known)
	}
	if n := len(gh.requests("/actions/runs/5002/jobs")); n != 1 {
		t.Errorf("run 5002's jobs listed %d times, want 1", n)
	}
	src := SourceLabel(k)
	wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": src, "result": "success"}, 1)
	wrWantMetric(t, "warmpool_queue_jobs", map[string]string{"pool": k.Pool, "source": k.Source, "state": "queued"}, 1)

	// Job 3's late completion changes nothing; job 1 starts.
	resyncDeliver(t, hook, "completed", 3)
	resyncDeliver(t, hook, "in_progress", 1)
	if c, _ := h.tr.Pool(k.Pool); c != (Counts{Running: 2}) {
		t.Errorf("after deliveries: Pool = %+v, want 2 running", c)
	}

	// GitHub fails the next listing: the counts stand, the failure is counted against the
	// webhook source, and the tracker holds no error for it (its deliveries still count).
	gh.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		gitHubWriteError(w, http.StatusBadGateway, `{"message":"Server Error"}`)
		return true
	})
	h.clk.Step(DefaultResyncInterval)
	h.nextSleep(k) // backing off
	if c, known := h.tr.Pool(k.Pool); !known || c != (Counts{Running: 2}) {
		t.Errorf("after a failed resync: Pool = %+v, %v; want 2 running, known", c, known)
	}
	if _, _, err := h.tr.Source(k); err != nil {
		t.Errorf("tracker holds the resync's error for the webhook source: %v", err)
	}
	wrWantMetric(t, "warmpool_source_polls_total", map[string]string{"source": src, "result": "error"}, 1)
	wrWantMetric(t, "warmpool_source_errors_total", map[string]string{"source": src, "reason": ReasonHTTP}, 1)
}
