package scaling_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"warmpool.io/warmpool/controller/operator/operatortest"
	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/controller/scaling"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/controller/state"
	"warmpool.io/warmpool/nodepools"
)

// spareProcess is one controller process of the direct harness fed by a real webhook ledger
// (signed workflow_job deliveries routed to the pool's ci source), with Events kept.
type spareProcess struct {
	hook   *queue.Webhook
	events chan string
}

const spareSecret = "spare-test-secret"

var spareLabels = []string{"self-hosted", "linux", "spare"}

// startSpare begins a new process on d: a tracker, webhook ledger and controller that know
// nothing of the previous one.
func startSpare(d *direct) *spareProcess {
	d.tracker = queue.NewTracker(d.clk, time.Hour)
	d.tracker.SetSources(map[string][]string{d.pool: {"ci"}})
	cluster := state.NewCluster(d.kc)
	cluster.SetConfig(d.t.Context(), d.cfg)
	rec := record.NewFakeRecorder(1000)
	d.c = scaling.NewController(d.kc, rec, d.clk, d.tracker, cluster, d.ns)
	d.c.SetInterval(time.Hour)
	hook := queue.NewWebhook(func() []byte { return []byte(spareSecret) }, d.tracker, d.clk, logr.Discard())
	hook.SetRoutes([]queue.WebhookRoute{{Pool: d.pool, Source: "ci", Labels: spareLabels}})
	return &spareProcess{hook: hook, events: rec.Events}
}

// deliver sends one signed workflow_job delivery, as GitHub does.
func (p *spareProcess) deliver(t testing.TB, action string, id int64) {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"action":       action,
		"workflow_job": map[string]any{"id": id, "run_id": 1, "status": action, "labels": spareLabels},
	})
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(spareSecret))
	mac.Write(body)
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-GitHub-Delivery", fmt.Sprintf("spare-%s-%d", action, id))
	r.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rw := httptest.NewRecorder()
	p.hook.ServeHTTP(rw, r)
	if rw.Code != http.StatusOK {
		t.Fatalf("delivery %s %d: %d %s", action, id, rw.Code, rw.Body.String())
	}
}

// drain returns the Events recorded so far.
func (p *spareProcess) drain() []string {
	var out []string
	for {
		select {
		case e := <-p.events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func spareGauge(t testing.TB, pool string) int {
	t.Helper()
	v, ok := poolMetric(t, "warmpool_spare_nodes", pool)
	if !ok {
		t.Fatalf("warmpool_spare_nodes{pool=%q} not exported", pool)
	}
	return int(v)
}

// TestSpareFromWebhookArrivals: a steady stream of queued webhook deliveries (one job every 10s,
// each completed 20s later, so 2 jobs are queued at any time) makes the headroom exceed
// ceil(jobs/jobsPerNode) by a spare sized from the arrival rate; the spare metric and an Event
// say so; a restarted process resumes the estimate from the headroom object's recorded state and
// keeps the spare; once arrivals stop for longer than the window the spare goes back to 0 and,
// after the stabilization window, so does the headroom.
func TestSpareFromWebhookArrivals(t *testing.T) {
	pool := poolName("spare")
	d := newDirect(t, pool, "scaling: {burstHold: {percent: 0}, jobsPerNode: 1, scaleDownStabilization: 2m, spare: {mode: adaptive, window: 10m, bootTime: 60s, probability: 90, max: 14}}", nil)
	p := startSpare(d)
	const step = 10 * time.Second
	var id int64
	// tick delivers the next job, completes the one queued two steps before, and evaluates.
	tick := func() {
		t.Helper()
		d.clk.Step(step)
		id++
		p.deliver(t, "queued", id)
		if id > 2 {
			p.deliver(t, "completed", id-2)
		}
		d.evaluate()
	}
	wantHeadroom := func(what string) int {
		t.Helper()
		spare := spareGauge(t, pool)
		c, known := d.tracker.Pool(pool)
		if !known {
			t.Fatalf("%s: queue unknown", what)
		}
		want := int32(c.Total() + spare) // jobsPerNode 1, no node busy
		if got := d.replicas(); got != want {
			t.Fatalf("%s: headroom %d, want %d jobs + %d spare", what, got, c.Total(), spare)
		}
		return spare
	}

	d.evaluate()
	for range 3 * 6 { // 3 minutes: more than the 2 minutes of the window observed before a rate is trusted
		tick()
	}
	spare := wantHeadroom("after 3 minutes of arrivals")
	if spare <= 0 {
		t.Fatalf("spare %d after 3 minutes of 6 arrivals a minute, want > 0", spare)
	}
	rate, ok := poolMetric(t, "warmpool_arrival_rate_per_minute", pool)
	if !ok || !(rate >= 4 && rate <= 8) {
		t.Errorf("warmpool_arrival_rate_per_minute = %v (exported %t), want about 6", rate, ok)
	}
	if v, _ := metric(t, "warmpool_spare_from", map[string]string{"pool": pool, "from": string(policy.SpareArrivalRate)}); v != 1 {
		t.Errorf("warmpool_spare_from{from=ArrivalRate} = %v, want 1", v)
	}
	var changed []string
	for _, e := range p.drain() {
		if strings.Contains(e, scaling.ReasonSpareChanged) {
			changed = append(changed, e)
		}
	}
	if len(changed) == 0 || !operatortest.ContainsAll(changed[len(changed)-1], "ArrivalRate", "jobs/min", "limit 14") {
		t.Errorf("SpareChanged Events %q, want one naming ArrivalRate, the rate and the limit", changed)
	}
	// No flapping: a steady stream keeps the spare where it is.
	for range 2 * 6 {
		tick()
		if got := spareGauge(t, pool); got != spare {
			t.Fatalf("spare moved %d -> %d on a steady stream", spare, got)
		}
	}
	wantHeadroom("5 minutes of a steady stream")

	// The recorded state carries the estimate.
	dep := &appsv1.Deployment{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: d.ns, Name: nodepools.HeadroomName(pool)}, dep); err != nil {
		t.Fatal(err)
	}
	var recorded policy.State
	if err := json.Unmarshal([]byte(dep.Annotations[scaling.AnnotationState]), &recorded); err != nil {
		t.Fatalf("reading %s: %v", scaling.AnnotationState, err)
	}
	if recorded.SpareSlots <= 0 || len(recorded.Arrivals.Buckets) == 0 {
		t.Fatalf("recorded state %s keeps no arrivals or spare", dep.Annotations[scaling.AnnotationState])
	}
	// warmpool status reads the spare in force from the recorded state.
	if recorded.Spare != spare {
		t.Errorf("recorded state's spare %d, want the gauge's %d", recorded.Spare, spare)
	}

	// A restart: a new process whose webhook ledger knows no job resumes the spare.
	p = startSpare(d)
	d.clk.Step(step)
	d.evaluate()
	if got := spareGauge(t, pool); got != spare {
		t.Fatalf("spare after a restart %d, want %d as before it", got, spare)
	}
	for range 6 {
		tick()
	}
	if got := wantHeadroom("a minute after the restart"); got != spare {
		t.Fatalf("spare a minute after the restart %d, want %d", got, spare)
	}

	// The stream stops: its jobs complete, no new one is queued.
	p.deliver(t, "completed", id-1)
	p.deliver(t, "completed", id)
	for range 11 * 6 { // longer than the 10 minute window
		d.clk.Step(step)
		d.evaluate()
	}
	if got := spareGauge(t, pool); got != 0 {
		t.Fatalf("spare %d 11 minutes after the last arrival, want 0", got)
	}
	if rate, _ := poolMetric(t, "warmpool_arrival_rate_per_minute", pool); rate != 0 || math.IsNaN(rate) {
		t.Errorf("arrival rate %v after the stream stopped, want 0", rate)
	}
	d.clk.Step(3 * time.Minute) // past the stabilization window
	d.wantReplicas("idle past the stabilization window", 0)
}
