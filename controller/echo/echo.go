// Package echo keeps the watch events of a controller's own writes from waking it again. An
// apply that changes an object (a new generation) sends its watch event back to the controller
// that made it, which a predicate on spec changes passes like a hand edit; without this filter
// a config change to 100 pools ran the pools controller's whole reconcile two to four times, and
// every change of a pool's headroom evaluated the pool twice.
package echo

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"warmpool.io/warmpool/controller/config"
)

// Writes remembers the resourceVersion each of a controller's own applies returned. An event is
// an echo when the object carries that resourceVersion; any later write by anyone else has
// another and still wakes the controller.
//
// The watch event can be handled before the apply's response: an event for an object with an
// apply in flight is held until the response says whose it was, and if it was not ours (or the
// apply failed) wake is called with the object then. So no write is missed, and no echo slips
// through.
type Writes struct {
	mu      sync.Mutex
	last    map[string]string   // key -> resourceVersion our last apply returned
	pending map[string]int      // key -> applies in flight
	held    map[string][]string // key -> resourceVersions of events that came in meanwhile
	wake    func(client.Object)
}

// New returns an empty record; wake is called for an object whose held event turned out not to
// be an echo.
func New(wake func(client.Object)) *Writes {
	return &Writes{last: map[string]string{}, pending: map[string]int{}, held: map[string][]string{}, wake: wake}
}

// Typed objects from the informers carry no kind, so each watch names its own.
func writeKey(kind string, o client.Object) string {
	return kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

// Apply server-side-applies u as warmpool's field manager, taking over conflicting fields,
// and records the write, so its watch event is known for an echo. u is updated to what the
// server stored.
func (w *Writes) Apply(ctx context.Context, c client.Writer, u *unstructured.Unstructured) error {
	kind := u.GetKind()
	w.applying(kind, u)
	err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(config.FieldManager), client.ForceOwnership)
	w.done(kind, u, err)
	if err != nil {
		return fmt.Errorf("applying %s %s, %w", kind, u.GetName(), err)
	}
	return nil
}

// applying is called before an apply of o; done after it, with o as the server returned it
// (err nil) or the apply's error.
func (w *Writes) applying(kind string, o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending[writeKey(kind, o)]++
}

func (w *Writes) done(kind string, o client.Object, err error) {
	key := writeKey(kind, o)
	w.mu.Lock()
	if w.pending[key]--; w.pending[key] <= 0 {
		delete(w.pending, key)
	}
	rv := ""
	if err == nil {
		rv = o.GetResourceVersion()
		w.last[key] = rv
	}
	wake := false
	for _, h := range w.held[key] {
		wake = wake || h != rv
	}
	if _, inFlight := w.pending[key]; !inFlight {
		delete(w.held, key)
	}
	w.mu.Unlock()
	if wake {
		w.wake(o)
	}
}

// pass decides one create or update event: false for an echo of our own apply, and for an
// event held until the apply in flight answers.
func (w *Writes) pass(kind string, o client.Object) bool {
	key := writeKey(kind, o)
	w.mu.Lock()
	defer w.mu.Unlock()
	rv := o.GetResourceVersion()
	if last, ok := w.last[key]; ok && last == rv {
		return false
	}
	if w.pending[key] > 0 {
		w.held[key] = append(w.held[key], rv)
		return false
	}
	return true
}

// NotOurs passes every event of the watched kind but the echoes of the controller's own applies.
func (w *Writes) NotOurs(kind string) predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return w.pass(kind, e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return w.pass(kind, e.ObjectNew) },
		DeleteFunc: func(e event.DeleteEvent) bool {
			w.mu.Lock()
			delete(w.last, writeKey(kind, e.Object))
			w.mu.Unlock()
			return true
		},
		GenericFunc: func(event.GenericEvent) bool { return true },
	}
}
