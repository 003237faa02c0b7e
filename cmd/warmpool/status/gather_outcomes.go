package status

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	// The annotation keys and Event reasons are the controllers' own constants, imported so
	// that status can never disagree with what the controllers write. They live in the
	// reconciler packages today (controller/enginecache, controller/scaling).
	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/enginecache"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

// outcomes finds the pool's last save, last restore and cold starts: on the nodes that are
// still there (annotations), and in the Events of every node of the pool.
func (g *gatherer) outcomes(p *Pool, rd *reads, poolNodes []*corev1.Node, snaps []Snapshot, attributed map[string]string) {
	savedTo := func(node string) string {
		for _, s := range snaps { // newest first
			if s.SourceNode == volumes.LabelValue(node) {
				return s.Name
			}
		}
		return ""
	}
	var saves []Outcome
	restores := map[string]*Outcome{}
	for _, n := range poolNodes {
		if o := n.Annotations[enginecache.AnnotationSaveOutcome]; o != "" {
			saves = append(saves, Outcome{Node: n.Name, Result: o, Snapshot: savedTo(n.Name)})
		}
		if v := n.Annotations[enginecache.AnnotationRestore]; v != "" {
			at, _ := time.Parse(time.RFC3339, n.Annotations[enginecache.AnnotationRestoreReleased])
			restores[n.Name] = &Outcome{Node: n.Name, Result: v, Snapshot: n.Annotations[enginecache.AnnotationRestoreSnapshot], At: at}
		}
	}
	for _, e := range rd.nodeEvents {
		node := e.InvolvedObject.Name
		if attributed[node] != p.Name {
			continue
		}
		at := EventTime(&e)
		if result, ok := saveReasons[e.Reason]; ok {
			o := Outcome{Node: node, Result: result, At: at, Reason: e.Reason, Message: e.Message}
			if result == "saved" {
				o.Snapshot = savedTo(node)
			}
			// The Event replaces the annotation-only outcome of the same node.
			saves = slices.DeleteFunc(saves, func(s Outcome) bool { return s.Node == node && s.Reason == "" })
			saves = append(saves, o)
		}
		result, ok := restoreReasons[e.Reason]
		if !ok {
			continue
		}
		if e.Reason == enginecache.ReasonColdStart {
			why := coldReason(e.Message)
			p.Cache.ColdStarts = append(p.Cache.ColdStarts, Outcome{Node: node, Result: why, At: at, Reason: e.Reason, Message: e.Message})
			if why == enginecache.ColdWiped {
				result = volumes.ResultWiped
			}
		}
		o := restores[node]
		if o == nil {
			o = &Outcome{Node: node, Result: result}
			restores[node] = o
		}
		// The node's annotation is the verdict of record; the Event says it in words.
		if o.Reason == "" || at.After(o.At) {
			o.Reason, o.Message = e.Reason, e.Message
		}
		if at.After(o.At) {
			o.At = at
		}
	}
	sort.SliceStable(saves, func(i, j int) bool { return saves[i].At.After(saves[j].At) })
	if len(saves) > 0 {
		p.Cache.LastSave = &saves[0]
	}
	var rs []Outcome
	for _, o := range restores {
		rs = append(rs, *o)
	}
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].At.Equal(rs[j].At) {
			return rs[i].At.After(rs[j].At)
		}
		return rs[i].Node < rs[j].Node
	})
	if len(rs) > 0 {
		p.Cache.LastRestore = &rs[0]
	}
	sort.SliceStable(p.Cache.ColdStarts, func(i, j int) bool { return p.Cache.ColdStarts[i].At.After(p.Cache.ColdStarts[j].At) })
	p.Cache.ColdStarts = first(p.Cache.ColdStarts, maxColdStarts)
}

// coldReason reads the cold-start reason from a ColdStart Event's message ("cold" when the
// message is not in the controller's form).
func coldReason(msg string) string {
	rest, ok := strings.CutPrefix(msg, coldStartPrefix)
	if !ok {
		return "cold"
	}
	why, _, ok := strings.Cut(rest, ")")
	if !ok || why == "" {
		return "cold"
	}
	return why
}

// poolEvents are the Events about the pool's objects, newest first.
func (g *gatherer) poolEvents(rd *reads, pool string, attributed map[string]string) []Event {
	snaps := map[string]bool{}
	for _, s := range rd.snaps {
		if s.Labels[volumes.LabelPool] == pool {
			snaps[s.Name] = true
		}
	}
	claims := map[string]bool{}
	for _, c := range rd.claims {
		if c.Labels[nodepools.LabelPool] == pool {
			claims[c.Name] = true
		}
	}
	var out []Event
	for i := range rd.events {
		e := &rd.events[i]
		o := e.InvolvedObject
		var mine bool
		switch o.Kind {
		case "NodePool":
			mine = o.Name == nodepools.Name(pool)
		case "Node":
			mine = attributed[o.Name] == pool
		case "NodeClaim":
			mine = claims[o.Name]
		case "VolumeSnapshot":
			mine = o.Namespace == g.opts.Namespace && snaps[o.Name]
		case "Deployment", "CapacityBuffer":
			mine = o.Namespace == g.opts.Namespace && o.Name == nodepools.HeadroomName(pool)
		case "ConfigMap":
			// The pools controller's Events on the config (applied, apply failed, pruned)
			// name their pool first.
			mine = o.Namespace == g.opts.Namespace && o.Name == g.opts.ConfigMap &&
				(strings.HasPrefix(e.Message, "pool "+pool+":") || strings.HasPrefix(e.Message, "pool "+pool+" "))
		}
		if mine && (g.opts.AllEvents || fromWarmpool(e) || e.Type == corev1.EventTypeWarning) {
			out = append(out, event(*e))
		}
	}
	sortEvents(out)
	return out
}

// eventComponent is the component warmpool records its Events as (the manager's recorder).
const eventComponent = "warmpool"

func fromWarmpool(e *corev1.Event) bool {
	return e.Source.Component == eventComponent || e.ReportingController == eventComponent
}

func event(e corev1.Event) Event {
	count := e.Count
	if e.Series != nil {
		count = e.Series.Count
	}
	return Event{
		Type: e.Type, Reason: e.Reason, Object: e.InvolvedObject.Kind + "/" + e.InvolvedObject.Name,
		Message: e.Message, Count: count, Last: EventTime(&e).UTC(),
	}
}

// EventTime is when an Event last happened: the core API's lastTimestamp, else the events.k8s.io
// series or eventTime, else when it was created.
func EventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func sortEvents(es []Event) {
	sort.SliceStable(es, func(i, j int) bool {
		if !es[i].Last.Equal(es[j].Last) {
			return es[i].Last.After(es[j].Last)
		}
		if es[i].Object != es[j].Object {
			return es[i].Object < es[j].Object
		}
		return es[i].Reason < es[j].Reason
	})
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func hasSources(cfg *config.Config) bool {
	if cfg == nil {
		return false
	}
	for _, p := range cfg.Pools {
		if len(p.Queue.Sources) > 0 {
			return true
		}
	}
	return false
}

// sourceKind names the kind of a queue source as the config spells it.
func sourceKind(s *config.Source) string {
	switch {
	case s.GitHubWebhook != nil:
		return "githubWebhook"
	case s.GitHub != nil:
		return "github"
	case s.ARC != nil:
		return "arc"
	case s.GitLab != nil:
		return "gitlab"
	case s.Buildkite != nil:
		return "buildkite"
	case s.Prometheus != nil:
		return "prometheus"
	}
	return ""
}

func configLines(err error) []string {
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		return cfgErr.Lines()
	}
	return []string{err.Error()}
}
