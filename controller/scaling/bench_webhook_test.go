package scaling_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator"
	"warmpool.io/warmpool/nodepools"
)

// benchWebhookEvents is how many signed deliveries one iteration sends.
const benchWebhookEvents = 200

// benchJobID numbers workflow jobs across iterations: a completed job's ID is remembered, so an
// ID used again would be ignored.
var benchJobID int64 = 7_000_000_000

// BenchmarkWebhookToHeadroom measures, for each signed workflow_job delivery to the manager's
// webhook endpoint, the time until the pool's headroom Deployment in the API server asks for the
// replicas that delivery implies, as seen by a watch. Deliveries alternate between a new job
// queued (desired 0 -> 1) and that job completed (1 -> 0, with a 1 ms scale-down
// stabilization), so every one of them changes the Deployment. It reports the p50 and p99
// over every delivery (benchWebhookEvents per iteration; `-benchtime 1x` gives exactly those).
func BenchmarkWebhookToHeadroom(b *testing.B) {
	const (
		label  = "bench-runner"
		secret = "bench-webhook-secret"
	)
	pool := poolName("bench-webhook")
	h := newHeadroomFollower(b, pool, label, secret, nil)
	var latencies []time.Duration
	for b.Loop() {
		for i := range benchWebhookEvents {
			start := time.Now()
			h.flip(i)
			latencies = append(latencies, time.Since(start))
		}
	}
	slices.Sort(latencies)
	b.ReportMetric(ms(percentile(latencies, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(latencies, 99)), "p99-ms")
	b.ReportMetric(float64(len(latencies)), "events")
}

// TestEveryDeliveryMovesHeadroom: with the periodic evaluation an hour apart, every delivery
// (a job queued, then completed, with a 1 ms stabilization window) still moves the headroom:
// nothing but the delivery itself can have made the change within the test.
func TestEveryDeliveryMovesHeadroom(t *testing.T) {
	h := newHeadroomFollower(t, poolName("webhook-follow"), "follow-runner", "follow-webhook-secret",
		func(o *operator.Options) { o.ScalingInterval = time.Hour })
	for i := range 60 {
		h.flip(i)
	}
}

// headroomFollower sends signed workflow_job deliveries for one pool to a running manager's
// webhook endpoint and follows the pool's headroom Deployment.
type headroomFollower struct {
	tb       testing.TB
	client   *http.Client
	url      string
	label    string
	secret   string
	replicas <-chan int32
}

// newHeadroomFollower starts a manager whose pool (jobsPerNode 1, no warm minimum, a 1 ms
// stabilization window) counts the webhook's jobs labelled label, and waits until the
// endpoint accepts signed deliveries.
func newHeadroomFollower(tb testing.TB, pool, label, secret string, options func(*operator.Options)) *headroomFollower {
	tb.Helper()
	e := newWebhookEnv(tb, secret, configYAMLWithWebhook(poolYAML(pool,
		"queue: {sources: [{name: gh, githubWebhook: {labels: [self-hosted, "+label+"]}}]}",
		"scaling: {burstHold: {percent: 0}, jobsPerNode: 1, warmMinimum: 0, scaleDownStabilization: 1ms}")), options)
	h := &headroomFollower{
		tb: tb, client: &http.Client{Timeout: 30 * time.Second}, label: label, secret: secret,
		url:      "http://" + e.Mgr.Webhook.BoundAddr + config.DefaultWebhookPath,
		replicas: watchHeadroom(tb, e.Namespace, nodepools.HeadroomName(pool)),
	}
	// The config's route records the pool at 0 jobs: the headroom exists at 0 first.
	waitFor(tb, h.replicas, 0)
	// The secret is read from its Secret after the route is set: wait until a signed ping passes.
	eventually(tb, "webhook accepts signed deliveries", func() error {
		code, msg := post(tb, h.client, h.url, secret, "ping", "ping-"+pool, []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`))
		if code != http.StatusOK {
			return fmt.Errorf("ping: %d %q", code, msg)
		}
		return nil
	})
	return h
}

// flip sends delivery i: even ones queue a new job (headroom 0 -> 1), odd ones complete it
// (1 -> 0). It returns once the headroom Deployment asks for what the delivery implies.
func (h *headroomFollower) flip(i int) {
	h.tb.Helper()
	action, want := "queued", int32(1)
	if i%2 == 1 {
		action, want = "completed", 0
	} else {
		benchJobID++
	}
	deliver(h.tb, h.client, h.url, h.secret, fmt.Sprintf("%s-%d-%s", h.label, benchJobID, action), workflowJobPayload(benchJobID, action, h.label))
	waitFor(h.tb, h.replicas, want)
}

// configYAMLWithWebhook is configYAML with the webhook's secret, which a githubWebhook source
// requires.
func configYAMLWithWebhook(pools ...string) string {
	return strings.Replace(configYAML(pools...), "\npools:\n",
		"\nwebhook: {secretRef: {name: warmpool-github, key: webhook-secret}}\npools:\n", 1)
}

// newWebhookEnv is newEnv with the webhook endpoint on 127.0.0.1 and the Secret holding its
// HMAC key: the suite's env starts its manager without the endpoint.
func newWebhookEnv(b testing.TB, secret, cfg string, options func(*operator.Options)) *env {
	b.Helper()
	e := newEnvWith(b, cfg, func(o *operator.Options) {
		o.WebhookAddr = "127.0.0.1:0"
		if options != nil {
			options(o)
		}
	}, func(namespace string) {
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "warmpool-github"},
			Data:       map[string][]byte{"webhook-secret": []byte(secret)},
		}
		if err := kube.Create(b.Context(), sec); err != nil {
			b.Fatal(err)
		}
	})
	select {
	case <-e.Mgr.Webhook.Bound:
	case <-e.Running().Exited():
		b.Fatalf("manager stopped before the webhook endpoint was up: %v", e.Running().Err())
	case <-time.After(30 * time.Second):
		b.Fatal("webhook endpoint not up after 30s")
	}
	return e
}

// watchHeadroom streams the replicas of one headroom Deployment as the API server stores them,
// from a watch that resumes where it stopped if the server closes it.
func watchHeadroom(b testing.TB, namespace, name string) <-chan int32 {
	b.Helper()
	cs, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		b.Fatal(err)
	}
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	deployments := cs.AppsV1().Deployments(namespace)
	list, err := deployments.List(b.Context(), metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		b.Fatal(err)
	}
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = selector
		return deployments.Watch(ctx, o)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(b.Context(), list.ResourceVersion, lw)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Stop)
	out := make(chan int32, 1024)
	send := func(d *appsv1.Deployment) {
		if d.Spec.Replicas != nil {
			out <- *d.Spec.Replicas
		}
	}
	for i := range list.Items {
		send(&list.Items[i])
	}
	go func() {
		for ev := range w.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				send(d)
			}
		}
	}()
	return out
}

// waitFor consumes replica readings until one equals want. Every delivery flips the desired
// count, so a reading of want is the change the last delivery caused, not an older one.
func waitFor(b testing.TB, replicas <-chan int32, want int32) {
	b.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r := <-replicas:
			if r == want {
				return
			}
		case <-timeout:
			b.Fatalf("headroom never reached %d replicas", want)
		}
	}
}

// deliver posts one workflow_job delivery and wants it processed.
func deliver(b testing.TB, client *http.Client, url, secret, delivery string, body []byte) {
	b.Helper()
	if code, msg := post(b, client, url, secret, "workflow_job", delivery, body); code != http.StatusOK || msg != "ok" {
		b.Fatalf("delivery %s: %d %q", delivery, code, msg)
	}
}

// post sends one delivery signed as GitHub signs it and returns the response.
func post(b testing.TB, client *http.Client, url, secret, event, delivery string, body []byte) (int, string) {
	b.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/bench")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(msg))
}

// workflowJobPayload is a workflow_job delivery shaped like GitHub's (the fields a real one
// carries around the ones the webhook reads), so parsing costs what it costs in production.
func workflowJobPayload(id int64, action, label string) []byte {
	status, conclusion, completedAt := action, "null", "null"
	if action == "completed" {
		conclusion, completedAt = `"success"`, `"2026-03-02T09:04:51Z"`
	}
	return fmt.Appendf(nil, `{"action":%q,"workflow_job":{"id":%d,"run_id":%d,"workflow_name":"CI",`+
		`"head_branch":"main","run_url":"https://api.github.com/repos/acme/app/actions/runs/%d",`+
		`"run_attempt":1,"node_id":"CR_kwDOBench%d","head_sha":"4f1c0ffee0ddba11c0ffee0ddba11c0ffee0ddba",`+
		`"url":"https://api.github.com/repos/acme/app/actions/jobs/%d","html_url":"https://github.com/acme/app/actions/runs/%d/job/%d",`+
		`"status":%q,"conclusion":%s,"created_at":"2026-03-02T09:00:00Z","started_at":"2026-03-02T09:00:03Z",`+
		`"completed_at":%s,"name":"build","steps":[],"check_run_url":"https://api.github.com/repos/acme/app/check-runs/%d",`+
		`"labels":["self-hosted","linux",%q],"runner_id":null,"runner_name":null,"runner_group_id":null,`+
		`"runner_group_name":null},"repository":{"id":1296269,"name":"app","full_name":"acme/app","private":true},`+
		`"organization":{"login":"acme","id":9919},"sender":{"login":"octocat","id":1,"type":"User"}}`,
		action, id, id/2, id/2, id, id, id/2, id, status, conclusion, completedAt, id, label)
}

// percentile is the nearest-rank p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
