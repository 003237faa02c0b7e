package scaling

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/controller/scaling/policy"
)

// TestResumeState: a new process starts from the recorded state, else from the replicas plus
// the nodes busy now (the headroom unchanged), else from 0; never from the nodes that exist.
func TestResumeState(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	held := policy.State{Desired: 4, History: []policy.Recommendation{{At: now.Add(-time.Minute), Target: 4}, {At: now.Add(-30 * time.Second), Target: 1}}, LastEvaluation: now.Add(-30 * time.Second)}
	raw, err := json.Marshal(held)
	if err != nil {
		t.Fatal(err)
	}
	const obj = "Deployment ns/warmpool-headroom-p"
	for _, tc := range []struct {
		name    string
		a       actuated
		busy    int
		want    policy.State
		from    string
		wantErr bool
	}{
		{name: "recorded state, as it was", a: actuated{object: obj, state: string(raw), replicas: ptr.To[int32](2)}, busy: 2,
			want: held, from: "the state recorded on " + obj},
		{name: "recorded without an evaluation time", a: actuated{object: obj, state: `{"desired":2}`}, want: policy.State{Desired: 2, LastEvaluation: now}, from: "the state recorded"},
		{name: "replicas and busy nodes", a: actuated{object: obj, replicas: ptr.To[int32](3)}, busy: 2,
			want: policy.State{Desired: 5, LastEvaluation: now}, from: "the replicas of " + obj},
		{name: "no headroom, idle", a: actuated{object: obj, replicas: ptr.To[int32](0)},
			want: policy.State{LastEvaluation: now}, from: "the replicas of"},
		{name: "unreadable state: the replicas", a: actuated{object: obj, state: "{not json", replicas: ptr.To[int32](1)}, busy: 1,
			want: policy.State{Desired: 2, LastEvaluation: now}, from: "unreadable", wantErr: true},
		{name: "negative desired: the replicas", a: actuated{object: obj, state: `{"desired":-3}`, replicas: ptr.To[int32](1)},
			want: policy.State{Desired: 1, LastEvaluation: now}, from: "unreadable", wantErr: true},
		{name: "unreadable state and no replicas", a: actuated{object: obj, state: "[]"},
			want: policy.State{LastEvaluation: now}, from: "nothing", wantErr: true},
		{name: "never actuated, busy nodes do not count", busy: 3, want: policy.State{LastEvaluation: now}, from: "nothing actuated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, from, err := resumeState(tc.a, tc.busy, now)
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, want error: %t", err, tc.wantErr)
			}
			// As recorded: times compare by instant, not by their in-memory form.
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tc.want)
			if string(g) != string(w) {
				t.Errorf("state = %s, want %s", g, w)
			}
			if !strings.Contains(from, tc.from) {
				t.Errorf("from = %q, want it to say %q", from, tc.from)
			}
		})
	}
}
