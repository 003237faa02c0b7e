package scenario

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WebhookSecret is the HMAC secret the scenarios sign GitHub deliveries with.
const WebhookSecret = "warmpool-e2e-webhook-secret"

// EnsureWebhookSecret stores WebhookSecret in the Secret warmpool-github, key webhook-secret.
func EnsureWebhookSecret(ctx context.Context, kube client.Client) error {
	if err := ensureNamespace(ctx, kube); err != nil {
		return err
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "warmpool-github"}}
	_, err := ctrl.CreateOrUpdate(ctx, kube, s, func() error {
		s.Data = map[string][]byte{"webhook-secret": []byte(WebhookSecret)}
		return nil
	})
	return err
}

// GitHub plays github.com delivering workflow_job webhooks, signed as GitHub signs them.
type GitHub struct {
	URL    string // http://127.0.0.1:port/webhooks/github
	Secret string
	n      int
}

// Job sends one workflow_job delivery: action is queued, in_progress or completed.
func (g *GitHub) Job(ctx context.Context, id int64, action string, labels ...string) error {
	g.n++
	status := action
	var runner any
	if action != "queued" {
		runner = fmt.Sprintf("runner-%d", id)
	}
	body, err := json.Marshal(map[string]any{
		"action": action,
		"workflow_job": map[string]any{
			"id": id, "run_id": 1000 + id, "status": status, "labels": labels,
			"name": "build", "workflow_name": "ci", "head_branch": "main",
			"runner_name": runner,
		},
		"repository":   map[string]any{"id": 1, "full_name": "acme/app"},
		"organization": map[string]any{"login": "acme"},
		"sender":       map[string]any{"login": "dev"},
	})
	if err != nil {
		return err
	}
	return g.send(ctx, "workflow_job", fmt.Sprintf("delivery-%d-%s-%d", id, action, g.n), body)
}

// Ping sends GitHub's ping event, as GitHub does when a webhook is created. A 2xx answer means
// the endpoint is up and verifies signatures with this secret.
func (g *GitHub) Ping(ctx context.Context) error {
	g.n++
	return g.send(ctx, "ping", fmt.Sprintf("ping-%d", g.n), []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`))
}

func (g *GitHub) send(ctx context.Context, event, delivery string, body []byte) error {
	mac := hmac.New(sha256.New, []byte(g.Secret))
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
