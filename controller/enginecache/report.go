package enginecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Outcomes are reported from durable state. A decision (a save's outcome on its Node, a node
// released warm or cold, a restore's verdict, a snapshot marked failed) is written together
// with the report it owes (its Events and metrics, as data) in one patch of the same object;
// the report is then delivered and its record removed. A controller that dies in between finds
// the record on its next reconcile and delivers it then. Delivery is idempotent: each Event has
// a name derived from the report's ID, so creating it again finds it (AlreadyExists), and the
// metrics move only in the call that created the report's first Event. Every outcome is
// therefore counted and has its Events exactly once, whichever process delivers it.
//
// What stays best effort: a process killed between creating the first Event and moving the
// metrics (two statements) loses the count, as its in-memory counters are lost anyway; and an
// Event whose TTL (the API server's --event-ttl, 1 h by default) ran out before a redelivery
// would be created again, which cannot happen while the record is removed right after.

// report is what one decision tells, recorded as data so any process can deliver it.
type report struct {
	// ID names the decision (a node's save, a restore, a snapshot's failure) across restarts;
	// the Events' names derive from it.
	ID string `json:"id"`
	// Events: the first one's creation decides who moves the metrics.
	Events  []reportEvent  `json:"events"`
	Metrics []reportMetric `json:"metrics,omitempty"`
	// Log is logged, with LogValues, by whoever delivers the report.
	Log       string   `json:"log,omitempty"`
	LogValues []string `json:"logValues,omitempty"`
}

// reportEvent is one core/v1 Event on a Node or a VolumeSnapshot.
type reportEvent struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	UID        string `json:"uid,omitempty"`
	Type       string `json:"type"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
}

// reportMetric moves one series: a counter by one, a histogram by an observation of Value.
type reportMetric struct {
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
	Value  float64  `json:"value,omitempty"`
}

// reportCounters and reportHistograms are the metrics a report may move, by name.
var (
	reportCounters = map[string]*prometheus.CounterVec{
		"warmpool_cache_saves_total":    savesTotal,
		"warmpool_cache_lost_total":     lostTotal,
		"warmpool_cache_restores_total": restoresTotal,
		"warmpool_cold_starts_total":    coldStarts,
	}
	reportHistograms = map[string]*prometheus.HistogramVec{
		"warmpool_cache_save_duration_seconds":    saveDuration,
		"warmpool_cache_save_bytes":               saveBytes,
		"warmpool_cache_restore_duration_seconds": restoreDuration,
	}
)

func (r *report) event(ev reportEvent) { r.Events = append(r.Events, ev) }

func (r *report) count(name string, labels ...string) {
	r.Metrics = append(r.Metrics, reportMetric{Name: name, Labels: labels})
}

func (r *report) observe(name string, v float64, labels ...string) {
	r.Metrics = append(r.Metrics, reportMetric{Name: name, Labels: labels, Value: v})
}

// nodeEvent is an Event on the Node name (uid "" when unknown: the node is gone).
func nodeEvent(name string, uid types.UID, eventType, reason, message string) reportEvent {
	return reportEvent{Kind: "Node", APIVersion: "v1", Name: name, UID: string(uid), Type: eventType, Reason: reason, Message: message}
}

// objectEvent is an Event on a namespaced object of kind (apiVersion).
func objectEvent(o client.Object, apiVersion, kind, eventType, reason, message string) reportEvent {
	return reportEvent{Kind: kind, APIVersion: apiVersion, Namespace: o.GetNamespace(), Name: o.GetName(), UID: string(o.GetUID()),
		Type: eventType, Reason: reason, Message: message}
}

func (r *report) encode() string {
	// Plain strings and numbers: marshalling cannot fail.
	raw, _ := json.Marshal(r)
	return string(raw)
}

func decodeReport(s string) (*report, error) {
	r := &report{}
	if err := json.Unmarshal([]byte(s), r); err != nil {
		return nil, fmt.Errorf("decoding report %q, %w", s, err)
	}
	if r.ID == "" {
		return nil, fmt.Errorf("report %q has no id", s)
	}
	return r, nil
}

// deliver creates the report's Events and, if this call created the first one, moves its
// metrics and logs it. Calling it again for the same report changes nothing.
func (b *base) deliver(ctx context.Context, r *report) error {
	for i, ev := range r.Events {
		created, err := b.createEvent(ctx, r.ID, ev)
		if err != nil {
			return err
		}
		if i == 0 && created {
			b.move(ctx, r)
		}
	}
	if len(r.Events) == 0 {
		b.move(ctx, r)
	}
	return nil
}

func (b *base) move(ctx context.Context, r *report) {
	for _, m := range r.Metrics {
		if c := reportCounters[m.Name]; c != nil {
			c.WithLabelValues(m.Labels...).Inc()
		} else if h := reportHistograms[m.Name]; h != nil {
			h.WithLabelValues(m.Labels...).Observe(m.Value)
		} else {
			log.FromContext(ctx).Error(fmt.Errorf("unknown metric %q", m.Name), "delivering report", "id", r.ID)
		}
	}
	if r.Log != "" {
		kv := make([]any, 0, len(r.LogValues))
		for _, v := range r.LogValues {
			kv = append(kv, v)
		}
		log.FromContext(ctx).Info(r.Log, kv...)
	}
}

// eventName is the Event's name: the object's name and a hash of the report and the Event, as
// the recorder names them "<object>.<suffix>", so one report's Event is one object.
func eventName(id string, ev reportEvent) string {
	sum := sha256.Sum256([]byte(id + "\x00" + ev.Kind + "\x00" + ev.Namespace + "\x00" + ev.Name + "\x00" + ev.Reason))
	prefix := ev.Name
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return prefix + ".wp" + hex.EncodeToString(sum[:])[:16]
}

// createEvent creates ev as the core/v1 recorder would (a cluster-scoped object's Events go to
// the default namespace), under its report's name; false when it exists already.
func (b *base) createEvent(ctx context.Context, id string, ev reportEvent) (bool, error) {
	ns := ev.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	// Wall time, as the recorder's: Events are read by people, not by the protocol.
	now := metav1.Now()
	e := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: eventName(id, ev)},
		InvolvedObject: corev1.ObjectReference{
			Kind: ev.Kind, APIVersion: ev.APIVersion, Namespace: ev.Namespace, Name: ev.Name, UID: types.UID(ev.UID),
		},
		Reason: ev.Reason, Message: ev.Message, Type: ev.Type,
		Source:         corev1.EventSource{Component: eventComponent},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: eventComponent,
	}
	created, err := b.createNew(ctx, e)
	if err != nil {
		return false, fmt.Errorf("recording event %s on %s %s, %w", ev.Reason, ev.Kind, ev.Name, err)
	}
	return created, nil
}

// eventComponent is the recorder's component name (controller/operator/manager.go).
const eventComponent = "warmpool"

// setReport records r under key in annotations (the decision's patch).
func setReport(annotations map[string]string, key string, r *report) {
	annotations[key] = r.encode()
}

// flushReport delivers the report recorded under key on obj, if any, then removes the record.
// A record that cannot be read is dropped with an error logged: it must not block the object.
func (b *base) flushReport(ctx context.Context, obj client.Object, key string) error {
	raw, ok := obj.GetAnnotations()[key]
	if !ok {
		return nil
	}
	if r, err := decodeReport(raw); err != nil {
		log.FromContext(ctx).Error(err, "dropping a report that cannot be read", "object", obj.GetName(), "annotation", key)
	} else if err := b.deliver(ctx, r); err != nil {
		return err
	}
	return b.clearReport(ctx, obj, key)
}

// clearReport removes the delivered report's record (an object already gone needs none).
func (b *base) clearReport(ctx context.Context, obj client.Object, key string) error {
	if _, ok := obj.GetAnnotations()[key]; !ok {
		return nil
	}
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	a := obj.GetAnnotations()
	delete(a, key)
	obj.SetAnnotations(a)
	if err := b.kube.Patch(ctx, obj, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing the delivered report %s of %s, %w", key, obj.GetName(), err)
	}
	return nil
}
