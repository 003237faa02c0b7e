// Package unchanged tells when a server-side apply would change nothing, so it can be skipped.
// A server-side apply of an unchanged object still costs a round trip and the API server's
// merge; with four objects per pool and a placeholder Deployment, each reconcile of a 100-pool
// config (one per busy-state change) cost some 500 of them, and so did every start of the
// controller (an upgrade, a rescheduled pod, a new leader).
//
// An apply is skipped when two things hold: the object in the cache already has every field
// the rendered one sets, with the same values (so a hand edit of one of them is put back), and
// it was last applied from exactly this rendering (so a field the previous rendering set and
// this one drops is still removed by the apply, as server-side apply removes the fields its
// manager stops sending). The second is recorded on the object itself: every apply sends a
// digest of its rendering in AnnotationRendering (stamp), so the rendered object carries it and
// Covers checks it with every other field. It survives a restart: a new process applies only
// what changed while it was away.
package unchanged

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// AnnotationRendering is a digest of the rendering an object warmpool generates was last
// applied from.
const AnnotationRendering = "warmpool.io/rendering"

// Stamp records the digest of the rendering u on u, in AnnotationRendering, so that it is
// applied with it, and returns it. Call it on the object about to be applied, then compare
// with Covers.
func Stamp(u *unstructured.Unstructured) (string, error) {
	d, err := digest(u)
	if err != nil {
		return "", fmt.Errorf("digesting %s %s, %w", u.GetKind(), u.GetName(), err)
	}
	stamp(u, d)
	return d, nil
}

// digest is a stable digest of u (encoding/json sorts map keys). Taken before stamp.
func digest(u *unstructured.Unstructured) (string, error) {
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// stamp records the rendering's digest d on u, so that it is applied with it.
func stamp(u *unstructured.Unstructured, d string) {
	a := u.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[AnnotationRendering] = d
	u.SetAnnotations(a)
}

// Covers reports whether existing holds every field rendered sets, with an equal value.
// Objects are compared member by member, so what the API server or other managers add
// (defaults, status, annotations) does not count; lists element by element and only at equal
// length, so an element added by hand (a blanket toleration) counts as a change. An empty map
// or list rendered matches an absent one: the API server drops those. Numbers compare by
// value, whatever their Go type. The comparison errs towards "changed": a false "changed" costs
// one apply, a false "covered" would leave an object wrong.
func Covers(existing, rendered any) bool {
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
			if !Covers(ev, rv) {
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
			if !Covers(e[i], r[i]) {
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
