package echo

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func at(rv string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "engine", ResourceVersion: rv}}
}

// TestWritesTellEchoesFromOtherWrites walks the orders in which an apply's response and watch
// events can arrive, and checks which events wake the controller, at once or when held.
func TestWritesTellEchoesFromOtherWrites(t *testing.T) {
	wakes := 0
	w := New(func(client.Object) { wakes++ })
	p := w.NotOurs("ConfigMap")
	update := func(rv string) bool { return p.Update(event.UpdateEvent{ObjectOld: at("0"), ObjectNew: at(rv)}) }

	if !p.Create(event.CreateEvent{Object: at("1")}) {
		t.Error("an object warmpool never applied was filtered")
	}

	// The response first, then its echo; then someone else's write.
	w.applying("ConfigMap", at(""))
	w.done("ConfigMap", at("5"), nil)
	if update("5") {
		t.Error("the echo of our own apply passed")
	}
	if !update("6") {
		t.Error("a later write by someone else was filtered")
	}

	// The echo first, while the apply is in flight: held, and dropped once the response
	// says it was ours.
	w.applying("ConfigMap", at(""))
	if update("7") {
		t.Error("an event during our apply passed before its response")
	}
	w.done("ConfigMap", at("7"), nil)
	if wakes != 0 {
		t.Errorf("the held echo of our own apply woke the controller %d times", wakes)
	}

	// Someone else's write lands while our apply is in flight: held, then it wakes the
	// controller when the response shows another resourceVersion.
	w.applying("ConfigMap", at(""))
	if update("8") {
		t.Error("an event during our apply passed before its response")
	}
	w.done("ConfigMap", at("9"), nil)
	if wakes != 1 {
		t.Errorf("another writer's held event woke the controller %d times, want once", wakes)
	}

	// A failed apply wakes the controller for whatever was held meanwhile.
	w.applying("ConfigMap", at(""))
	update("10")
	w.done("ConfigMap", at(""), errors.New("conflict"))
	if wakes != 2 {
		t.Errorf("an event held across a failed apply woke the controller %d times, want once more", wakes-1)
	}

	// After a deletion the same resourceVersion means nothing any more.
	w.applying("ConfigMap", at(""))
	w.done("ConfigMap", at("11"), nil)
	if !p.Delete(event.DeleteEvent{Object: at("11")}) {
		t.Error("a deletion was filtered")
	}
	if !update("11") {
		t.Error("a write after the deletion was taken for our old apply")
	}
	if got := len(w.held) + len(w.pending); got != 0 {
		t.Errorf("%d keys left held or pending after every apply answered", got)
	}
}
