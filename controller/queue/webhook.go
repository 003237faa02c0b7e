package queue

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// WebhookSource is the source name under which the webhook reports errors that belong to no
// pool (bad signatures, bad bodies, jobs whose labels match no route).
const WebhookSource = "githubWebhook"

// Webhook defaults.
const (
	// DefaultWebhookMaxBodyBytes caps a delivery's body. GitHub's own cap is 25 MB, but a
	// workflow_job payload is a few KiB.
	DefaultWebhookMaxBodyBytes = 1 << 20
	// DefaultWebhookMaxQueuedAge drops a queued job never seen to start: its in_progress and
	// completed deliveries were lost (GitHub itself fails a job queued for 24h; most are
	// cancelled or picked up long before 6h).
	DefaultWebhookMaxQueuedAge = 6 * time.Hour
	// DefaultWebhookMaxRunningAge drops a running job never seen to complete. A job's default
	// timeout-minutes is 360, so a day covers all but deliberately long jobs.
	DefaultWebhookMaxRunningAge = 24 * time.Hour
	// DefaultWebhookTombstoneTTL is how long a completed job's ID is remembered, so a late
	// queued or in_progress delivery cannot bring it back.
	DefaultWebhookTombstoneTTL = 24 * time.Hour
	// ResyncGrace keeps a job a resync did not list when its latest delivery is younger than
	// this at the listing's start: GitHub's REST listing trails its webhooks by seconds.
	ResyncGrace = time.Minute
)

const (
	// webhookDeliveries is how many X-GitHub-Delivery IDs are remembered to drop redeliveries.
	webhookDeliveries = 10000
	// webhookSweepEvery bounds how often a delivery scans every job for expiry.
	webhookSweepEvery = time.Minute
)

// Webhook is the http.Handler for GitHub workflow_job webhooks. It keeps the set of queued and
// running jobs per route (by workflow_job.id) and records each route's counts in the Tracker,
// and exports them as warmpool_queue_jobs, after every change.
//
// Only deliveries signed with the shared secret (X-Hub-Signature-256, HMAC-SHA256 over the raw
// body) are read; with an empty secret every delivery is rejected. Redeliveries (same
// X-GitHub-Delivery) are ignored, and a job's state never moves backwards (queued < in_progress
// < completed), so out-of-order deliveries cannot resurrect a completed job. Jobs whose final
// deliveries were lost expire (MaxQueuedAge, MaxRunningAge); Resync corrects the job set from a
// REST listing.
//
// Webhooks only report changes, so the Tracker would call a quiet pool stale: call Sweep
// periodically (well within the Tracker's MaxStaleness) to expire old jobs and re-record every
// route's counts.
//
// The Webhook records in the Tracker while holding its own lock, so a Tracker.OnChange callback
// must not call back into the Webhook (enqueueing a reconcile is fine).
type Webhook struct {
	// OnError, when set, is called with WebhookSource and a reason (ReasonSignature,
	// ReasonBadRequest, ReasonUnknownPool) for every rejected or unroutable delivery. Set it
	// before serving.
	OnError func(source, reason string)
	// MaxBodyBytes caps a delivery's body (DefaultWebhookMaxBodyBytes when 0).
	MaxBodyBytes int64
	// MaxQueuedAge and MaxRunningAge drop jobs stuck in one state that long, their later
	// deliveries presumed lost (the defaults when 0).
	MaxQueuedAge  time.Duration
	MaxRunningAge time.Duration
	// TombstoneTTL is how long completed jobs are remembered (DefaultWebhookTombstoneTTL when 0).
	TombstoneTTL time.Duration

	secret  func() []byte
	tracker *Tracker
	clk     clock.PassiveClock
	log     logr.Logger

	mu        sync.Mutex
	routes    []route
	jobs      map[int64]*webhookJob
	counts    map[Key]Counts
	tombs     map[int64]time.Time
	tombQ     []tombstone // oldest first, from tombHead on
	tombHead  int
	seen      map[string]struct{}
	seenRing  []string
	seenNext  int
	lastSweep time.Time
}

// NewWebhook returns a handler that verifies deliveries with secret() (read on every request,
// so a rotated Secret applies at once) and records counts in t.
func NewWebhook(secret func() []byte, t *Tracker, clk clock.PassiveClock, log logr.Logger) *Webhook {
	return &Webhook{
		secret:   secret,
		tracker:  t,
		clk:      clk,
		log:      log,
		jobs:     map[int64]*webhookJob{},
		counts:   map[Key]Counts{},
		tombs:    map[int64]time.Time{},
		seen:     make(map[string]struct{}, webhookDeliveries),
		seenRing: make([]string, webhookDeliveries),
	}
}

// ServeHTTP handles one delivery: 405 for other methods than POST, 401 for a missing or bad
// signature, 413 for a body over MaxBodyBytes, 400 for a body that is not a workflow_job
// payload, 200 for ping and processed deliveries, 202 for events and jobs that are ignored.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	secret := w.secret()
	if len(secret) == 0 {
		w.reject(rw, r, http.StatusUnauthorized, ReasonSignature, "no webhook secret configured: every delivery is rejected")
		return
	}
	var want [sha256.Size]byte
	if !parseSignature(r.Header.Get("X-Hub-Signature-256"), &want) {
		w.reject(rw, r, http.StatusUnauthorized, ReasonSignature, "missing or malformed X-Hub-Signature-256")
		return
	}
	body, err := w.readBody(rw, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			w.reject(rw, r, http.StatusRequestEntityTooLarge, ReasonBadRequest, fmt.Sprintf("body larger than %d bytes", tooLarge.Limit))
			return
		}
		w.reject(rw, r, http.StatusBadRequest, ReasonBadRequest, "reading body: "+err.Error())
		return
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	var got [sha256.Size]byte
	if !hmac.Equal(mac.Sum(got[:0]), want[:]) {
		w.reject(rw, r, http.StatusUnauthorized, ReasonSignature, "signature does not match the body")
		return
	}

	switch event := r.Header.Get("X-GitHub-Event"); event {
	case "ping":
		w.log.V(1).Info("webhook ping", "delivery", r.Header.Get("X-GitHub-Delivery"))
		writeText(rw, http.StatusOK, "pong")
		return
	case "workflow_job":
	default:
		w.log.V(1).Info("webhook event ignored", "event", event, "delivery", r.Header.Get("X-GitHub-Delivery"))
		writeText(rw, http.StatusAccepted, "event ignored")
		return
	}
	ev, err := parseWorkflowJob(r.Header.Get("Content-Type"), body)
	if err != nil {
		w.reject(rw, r, http.StatusBadRequest, ReasonBadRequest, err.Error())
		return
	}
	code, msg := w.apply(r.Header.Get("X-GitHub-Delivery"), ev)
	writeText(rw, code, msg)
}

func (w *Webhook) readBody(rw http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := w.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultWebhookMaxBodyBytes
	}
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: ReadFrom wants room to see EOF
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(rw, r.Body, limit))
	return buf.Bytes(), err
}

func (w *Webhook) reject(rw http.ResponseWriter, r *http.Request, code int, reason, msg string) {
	w.log.V(1).Info("webhook delivery rejected", "reason", reason, "detail", msg,
		"delivery", r.Header.Get("X-GitHub-Delivery"), "remote", r.RemoteAddr)
	w.onError(WebhookSource, reason)
	http.Error(rw, msg, code)
}

func (w *Webhook) onError(source, reason string) {
	if w.OnError != nil {
		w.OnError(source, reason)
	}
}

func writeText(rw http.ResponseWriter, code int, msg string) {
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(code)
	io.WriteString(rw, msg+"\n")
}

// parseSignature reads "sha256=<64 hex digits>" into sum.
func parseSignature(h string, sum *[sha256.Size]byte) bool {
	hexSum, ok := strings.CutPrefix(h, "sha256=")
	if !ok || len(hexSum) != hex.EncodedLen(sha256.Size) {
		return false
	}
	_, err := hex.Decode(sum[:], []byte(hexSum))
	return err == nil
}

// workflowJobEvent is the part of a workflow_job payload the webhook reads.
type workflowJobEvent struct {
	Action      string `json:"action"`
	WorkflowJob *struct {
		ID     int64    `json:"id"`
		Labels []string `json:"labels"`
	} `json:"workflow_job"`
}

// parseWorkflowJob decodes a workflow_job delivery, sent as JSON or, when the hook's content
// type is application/x-www-form-urlencoded, as JSON in its payload field.
func parseWorkflowJob(contentType string, body []byte) (workflowJobEvent, error) {
	var ev workflowJobEvent
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return ev, fmt.Errorf("form body: %v", err)
		}
		body = []byte(form.Get("payload"))
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return ev, fmt.Errorf("workflow_job payload: %v", err)
	}
	if ev.WorkflowJob == nil || ev.WorkflowJob.ID == 0 {
		return ev, errors.New("workflow_job payload without workflow_job.id")
	}
	return ev, nil
}
