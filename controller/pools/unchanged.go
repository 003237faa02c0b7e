package pools

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Skipping applies that would change nothing. A server-side apply of an unchanged object
// still costs a round trip and the API server's merge; with four objects per pool, each
// reconcile of a 100-pool config (one per busy-state change) cost some 400 of them.
//
// An apply is skipped when two things hold: the object in the cache already has every field
// the rendered one sets, with the same values (so a hand edit of one of them is put back), and
// this process last applied exactly this rendering (so a field the previous rendering set and
// this one drops is still removed by the apply, as server-side apply removes the fields its
// manager stops sending). A new process applies everything once.

// appliedRenderings remembers, per object, a digest of the rendering this process last applied.
type appliedRenderings struct {
	mu      sync.Mutex
	digests map[string]string
}

func objectID(u *unstructured.Unstructured) string {
	return u.GroupVersionKind().String() + "/" + u.GetNamespace() + "/" + u.GetName()
}

// digest is a stable digest of u (encoding/json sorts map keys).
func digest(u *unstructured.Unstructured) (string, error) {
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// same reports whether d is the digest last applied for the object.
func (a *appliedRenderings) same(id, d string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.digests[id] == d
}

func (a *appliedRenderings) record(id, d string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.digests == nil {
		a.digests = map[string]string{}
	}
	a.digests[id] = d
}

// forget drops an object that was pruned or failed to apply.
func (a *appliedRenderings) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.digests, id)
}

// covers reports whether existing holds every field rendered sets, with an equal value.
// Objects are compared member by member, so what the API server or other managers add
// (defaults, status, annotations) does not count; lists element by element and only at equal
// length, so an element added by hand (a blanket toleration) counts as a change. An empty map
// or list rendered matches an absent one: the API server drops those. Numbers compare by
// value, whatever their Go type. The comparison errs towards "changed": a false "changed" costs
// one apply, a false "covered" would leave an object wrong.
func covers(existing, rendered any) bool {
	switch r := rendered.(type) {
	case map[string]any:
		e, ok := existing.(map[string]any)
		if !ok {
			return len(r) == 0 && existing == nil
		}
		for k, rv := range r {
			ev, found := e[k]
			if !found {
				if empty(rv) {
					continue
				}
				return false
			}
			if !covers(ev, rv) {
				return false
			}
		}
		return true
	case []any:
		e, ok := existing.([]any)
		if !ok {
			return len(r) == 0 && existing == nil
		}
		if len(e) != len(r) {
			return false
		}
		for i := range r {
			if !covers(e[i], r[i]) {
				return false
			}
		}
		return true
	case nil:
		return true
	}
	if rn, ok := number(rendered); ok {
		en, ok := number(existing)
		return ok && en == rn
	}
	return existing == rendered
}

func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}

// number reads the JSON number types unstructured objects hold (float64 from encoding/json,
// int64 from the API machinery's decoder).
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	}
	return 0, false
}
