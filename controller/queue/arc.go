package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Actions Runner Controller (gha-runner-scale-set mode) objects, read as unstructured so
// warmpool does not depend on ARC's Go module.
var (
	ARCGroupVersion              = schema.GroupVersion{Group: "actions.github.com", Version: "v1alpha1"}
	ARCAutoscalingRunnerSetGVK   = ARCGroupVersion.WithKind("AutoscalingRunnerSet")
	ARCEphemeralRunnerSetGVK     = ARCGroupVersion.WithKind("EphemeralRunnerSet")
	arcEphemeralRunnerSetListGVK = ARCGroupVersion.WithKind("EphemeralRunnerSetList")
)

// ARCScaleSetNameLabel is the label ARC puts on a scale set's EphemeralRunnerSets (and runners),
// whose value is the AutoscalingRunnerSet's name.
const ARCScaleSetNameLabel = "actions.github.com/scale-set-name"

// ARC counts one ARC runner scale set's jobs from the objects ARC keeps in the cluster; it
// makes no call outside the cluster and uses no GitHub API quota.
//
// How the counts are derived. ARC's listener long-polls GitHub for the scale set's statistics
// and writes the desired runner count to the latest EphemeralRunnerSet:
//
//	spec.replicas = min(minRunners + TotalAssignedJobs, maxRunners)
//
// where TotalAssignedJobs is every job GitHub has assigned to the scale set, queued or running,
// and minRunners (AutoscalingRunnerSet.spec.minRunners, absent = 0) is idle headroom. So
//
//	assigned = max(0, spec.replicas − minRunners)
//
// Of those jobs, at most status.runningEphemeralRunners (runner pods in phase Running, summed
// over the scale set's EphemeralRunnerSets, including old ones still draining after an
// upgrade) can be running. Running runners beyond the assigned jobs are idle headroom, so
//
//	Running = min(runningEphemeralRunners, assigned)
//	Queued  = assigned − Running   (jobs whose runner pod is not running yet)
//
// and Total is exactly the assigned jobs, the signal ARC itself scales on. Limits: demand
// above maxRunners is invisible (the listener caps replicas, and GitHub does not assign a
// backlog the scale set cannot serve), and the counts lag the listener by its patch.
//
// ARC omits zero values (spec.replicas is omitempty, minRunners optional, status unwritten on
// a new set), so absent fields read as 0; fields of the wrong type or negative are
// ReasonMalformed. A missing AutoscalingRunnerSet, no EphemeralRunnerSet, or ARC's CRDs not
// being installed are ReasonConfig.
type ARC struct {
	reader    client.Reader
	namespace string
	name      string
}

// NewARC reads the AutoscalingRunnerSet scaleSetName in namespace and its EphemeralRunnerSets.
// reader needs get on autoscalingrunnersets and list on ephemeralrunnersets
// (actions.github.com) in namespace; an uncached reader (the manager's APIReader) avoids
// starting informers for ARC's types.
func NewARC(reader client.Reader, namespace, scaleSetName string) *ARC {
	return &ARC{reader: reader, namespace: namespace, name: scaleSetName}
}

// Poll implements Poller.
func (a *ARC) Poll(ctx context.Context) (Counts, error) {
	ars := &unstructured.Unstructured{}
	ars.SetGroupVersionKind(ARCAutoscalingRunnerSetGVK)
	what := fmt.Sprintf("AutoscalingRunnerSet %s/%s", a.namespace, a.name)
	if err := a.reader.Get(ctx, client.ObjectKey{Namespace: a.namespace, Name: a.name}, ars); err != nil {
		return Counts{}, arcReadError(err, what)
	}
	minRunners, err := arcInt(ars, what, "spec", "minRunners")
	if err != nil {
		return Counts{}, err
	}

	sets := &unstructured.UnstructuredList{}
	sets.SetGroupVersionKind(arcEphemeralRunnerSetListGVK)
	what = fmt.Sprintf("EphemeralRunnerSets in %s labelled %s=%s", a.namespace, ARCScaleSetNameLabel, a.name)
	if err := a.reader.List(ctx, sets, client.InNamespace(a.namespace), client.MatchingLabels{ARCScaleSetNameLabel: a.name}); err != nil {
		return Counts{}, arcReadError(err, what)
	}
	if len(sets.Items) == 0 {
		return Counts{}, Errorf(ReasonConfig, "no EphemeralRunnerSet in namespace %s labelled %s=%s (does AutoscalingRunnerSet %s/%s have a running controller?)",
			a.namespace, ARCScaleSetNameLabel, a.name, a.namespace, a.name)
	}
	var latest *unstructured.Unstructured
	var replicas, running int64
	for i := range sets.Items {
		set := &sets.Items[i]
		name := fmt.Sprintf("EphemeralRunnerSet %s/%s", set.GetNamespace(), set.GetName())
		r, err := arcInt(set, name, "spec", "replicas")
		if err != nil {
			return Counts{}, err
		}
		n, err := arcInt(set, name, "status", "runningEphemeralRunners")
		if err != nil {
			return Counts{}, err
		}
		running += n
		if latest == nil || arcNewer(set, r, latest, replicas) {
			latest, replicas = set, r
		}
	}
	assigned := max(0, replicas-minRunners)
	runningJobs := min(running, assigned)
	return Counts{Queued: int(assigned - runningJobs), Running: int(runningJobs)}, nil
}

// arcNewer reports whether set (with replicas r) is the one the listener scales rather than
// cur: ARC's listener patches its latest EphemeralRunnerSet, and old ones are deleted after an
// upgrade. Prefer a set not being deleted, then the newest; on a creation-second tie, the
// larger replicas (over- rather than under-counting).
func arcNewer(set *unstructured.Unstructured, r int64, cur *unstructured.Unstructured, curR int64) bool {
	setLive, curLive := set.GetDeletionTimestamp() == nil, cur.GetDeletionTimestamp() == nil
	if setLive != curLive {
		return setLive
	}
	st, ct := set.GetCreationTimestamp(), cur.GetCreationTimestamp()
	if !st.Equal(&ct) {
		return ct.Before(&st)
	}
	return r > curR
}

// arcInt reads a non-negative integer field; absent means 0 (ARC omits zero values).
func arcInt(obj *unstructured.Unstructured, what string, path ...string) (int64, error) {
	v, found, err := unstructured.NestedFieldNoCopy(obj.Object, path...)
	if err != nil {
		return 0, Errorf(ReasonMalformed, "%s: %v", what, err)
	}
	if !found || v == nil {
		return 0, nil
	}
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case int32:
		n = int64(x)
	case int:
		n = int64(x)
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, Errorf(ReasonMalformed, "%s: .%s is %v, not an integer", what, strings.Join(path, "."), x)
		}
		n = int64(x)
	default:
		return 0, Errorf(ReasonMalformed, "%s: .%s is a %T (%v), not an integer", what, strings.Join(path, "."), v, v)
	}
	if n < 0 {
		return 0, Errorf(ReasonMalformed, "%s: .%s is negative (%d)", what, strings.Join(path, "."), n)
	}
	return n, nil
}

// arcReadError gives a read failure its reason, naming the object.
func arcReadError(err error, what string) error {
	reason := ""
	switch {
	case apierrors.IsNotFound(err):
		return Errorf(ReasonConfig, "%s not found", what)
	case meta.IsNoMatchError(err):
		return Errorf(ReasonConfig, "reading %s: ARC's CRDs (%s) are not installed: %v", what, ARCGroupVersion, err)
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		reason = ReasonAuth
	case apierrors.IsTooManyRequests(err):
		reason = ReasonRateLimited
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), errors.Is(err, context.DeadlineExceeded):
		reason = ReasonTimeout
	default:
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			reason = ReasonHTTP
		} else {
			reason = ReasonNetwork
		}
	}
	return &Error{Reason: reason, Err: fmt.Errorf("reading %s: %w", what, err)}
}
