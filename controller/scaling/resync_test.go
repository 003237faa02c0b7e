package scaling_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"warmpool.io/warmpool/controller/queue"
)

// gitHubRuns serves GitHub's REST listing of one repository's queued run (acme/ci, run 7001)
// and its jobs on 127.0.0.1, as go-github reads it on GitHub Enterprise (/api/v3).
func gitHubRuns(t *testing.T, token string, jobs []map[string]any) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-RateLimit-Remaining", "4999")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/v3/repos/acme/ci/actions/runs", func(w http.ResponseWriter, r *http.Request) {
		runs := []map[string]any{}
		if r.URL.Query().Get("status") == "queued" {
			runs = append(runs, map[string]any{"id": 7001, "status": "queued", "name": "CI"})
		}
		write(w, map[string]any{"total_count": len(runs), "workflow_runs": runs})
	})
	mux.HandleFunc("GET /api/v3/repos/acme/ci/actions/runs/7001/jobs", func(w http.ResponseWriter, r *http.Request) {
		write(w, map[string]any{"total_count": len(jobs), "jobs": jobs})
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestWebhookResyncWired: a githubWebhook source with a resync block counts jobs no delivery
// ever announced, once the leader's runner lists them through the REST API with the token
// from the referenced Secret; the pool scales on them.
func TestWebhookResyncWired(t *testing.T) {
	pool := poolName("resync")
	const token = "ghp_resynctoken"
	labels := []string{"self-hosted", pool}
	gh := gitHubRuns(t, token, []map[string]any{
		{"id": 1, "run_id": 7001, "status": "queued", "labels": labels},
		{"id": 2, "run_id": 7001, "status": "queued", "labels": labels},
		{"id": 3, "run_id": 7001, "status": "queued", "labels": []string{"windows"}},
	})
	cfg := configYAML(poolYAML(pool, "scaling: {jobsPerNode: 1}",
		fmt.Sprintf(`queue: {sources: [{githubWebhook: {labels: [self-hosted, %s], resync: {url: %q, owner: acme, repos: [ci], tokenSecretRef: {name: github, key: token}, interval: 1m}}}]}`, pool, gh.URL)))
	cfg = replaceOnce(t, cfg, "pools:\n", "webhook: {secretRef: {name: github, key: webhook}}\npools:\n")

	e := newEnvWith(t, cfg, nil, func(namespace string) {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "github"},
			Data: map[string][]byte{"token": []byte(token + "\n"), "webhook": []byte("hook-secret")}}
		if err := kube.Create(t.Context(), sec); err != nil {
			t.Fatal(err)
		}
	})
	e.waitReplicas(pool, 2)
	c, staleness, err := e.Mgr.Tracker.Source(queue.Key{Pool: pool, Source: "github-webhook"})
	if c != (queue.Counts{Queued: 2}) || staleness < 0 || err != nil {
		t.Errorf("webhook source = %+v, %v, %v; want 2 queued from the resync", c, staleness, err)
	}
}

// TestSecretCreatedLateStartsSource: a source whose Secret does not exist when its config is
// put in force starts once the Secret is created, without another config edit.
func TestSecretCreatedLateStartsSource(t *testing.T) {
	pool := poolName("late-secret")
	const token = "ghp_latetoken"
	labels := []string{"self-hosted", pool}
	gh := gitHubRuns(t, token, []map[string]any{
		{"id": 1, "run_id": 7001, "status": "queued", "labels": labels},
		{"id": 2, "run_id": 7001, "status": "in_progress", "labels": labels},
		{"id": 3, "run_id": 7001, "status": "queued", "labels": labels},
	})
	cfg := configYAML(poolYAML(pool, "scaling: {jobsPerNode: 1}",
		fmt.Sprintf(`queue: {sources: [{githubWebhook: {labels: [self-hosted, %s], resync: {url: %q, owner: acme, repos: [ci], tokenSecretRef: {name: github-late, key: token}, interval: 1m}}}]}`, pool, gh.URL)))
	cfg = replaceOnce(t, cfg, "pools:\n", "webhook: {secretRef: {name: github-late, key: webhook}}\npools:\n")
	e := newEnv(t, cfg)
	e.waitReplicas(pool, 0)
	key := queue.Key{Pool: pool, Source: "github-webhook"}
	if c, _, _ := e.Mgr.Tracker.Source(key); c != (queue.Counts{}) {
		t.Fatalf("webhook source counts %+v before its Secret exists", c)
	}

	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: "github-late"},
		Data: map[string][]byte{"token": []byte(token), "webhook": []byte("hook-secret")}}
	if err := kube.Create(t.Context(), sec); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(pool, 3) // 2 queued + 1 running, listed with the new token
}
