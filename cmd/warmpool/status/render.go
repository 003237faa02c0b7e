package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Output formats.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

// ParseFormat reads an -o value ("" is the table).
func ParseFormat(s string) (string, error) {
	switch s {
	case "", "table", "wide":
		return FormatTable, nil
	case FormatJSON, FormatYAML:
		return s, nil
	}
	return "", fmt.Errorf("output format %q: must be table, json or yaml", s)
}

// Encode writes v (a Report, or a snapshot list) as JSON or YAML.
func Encode(w io.Writer, format string, v any) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case FormatYAML:
		out, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding YAML, %w", err)
		}
		_, err = w.Write(out)
		return err
	}
	return fmt.Errorf("encode: format %q is not json or yaml", format)
}

// Render writes the report as text: one block per pool, then what could not be read.
func Render(w io.Writer, rep *Report) error {
	now := rep.GatheredAt
	b := &strings.Builder{}
	cfg := rep.Config
	switch {
	case !cfg.Found:
		fmt.Fprintf(b, "Config:  ConfigMap %s not found or not readable; pools are taken from the NodePools warmpool made\n", cfg.ConfigMap)
	case cfg.Error != "":
		fmt.Fprintf(b, "Config:  ConfigMap %s is INVALID (the controller keeps its last good config): %s\n", cfg.ConfigMap, cfg.Error)
	default:
		fmt.Fprintf(b, "Config:  ConfigMap %s, %d pool(s)\n", cfg.ConfigMap, countInConfig(rep.Pools))
	}
	if len(rep.Pools) == 0 {
		b.WriteString("\nNo pools.\n")
	}
	for i := range rep.Pools {
		b.WriteString("\n")
		renderPool(b, &rep.Pools[i], now, rep.Metrics)
	}
	if len(rep.UnattributedEvents) > 0 {
		b.WriteString("\nCache Events of nodes that are gone, whose pool nothing names any more:\n")
		renderEvents(b, rep.UnattributedEvents, now)
	}
	if len(rep.Unknown) > 0 {
		b.WriteString("\nNOT READ (this report is partial; what depends on these is shown as unknown):\n")
		for _, u := range rep.Unknown {
			where := ""
			if u.Namespace != "" {
				where = " in namespace " + u.Namespace
			}
			fmt.Fprintf(b, "  %s%s: %s\n", plural(u.What), where, u.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func countInConfig(pools []Pool) int {
	n := 0
	for _, p := range pools {
		if p.InConfig {
			n++
		}
	}
	return n
}

func renderPool(b *strings.Builder, p *Pool, now time.Time, metrics string) {
	unknown := func(section string) bool {
		for _, s := range p.Unknown {
			if s == section {
				return true
			}
		}
		return false
	}
	title := "Pool " + p.Name
	if !p.InConfig {
		title += " (not in the config in force: a NodePool warmpool left behind)"
	}
	b.WriteString(title + "\n")
	// Fixed-width labels, so the rows line up across the pool's sub-tables.
	row := func(label, value string) { fmt.Fprintf(b, "  %-14s%s\n", label+":", value) }

	switch np := p.NodePool; {
	case np != nil:
		class := np.NodeClass
		switch {
		case class == "":
			class = "no node class"
		case !np.NodeClassFound:
			class += " (not found or not readable)"
		case np.NodeClassReady != "":
			class += " (Ready=" + np.NodeClassReady + ")"
		}
		v := np.Name + ", node class " + class
		if np.LimitNodes != "" {
			v += ", limit " + np.LimitNodes + " nodes"
		}
		if np.Consolidation != "" {
			v += ", consolidation " + np.Consolidation
		}
		row("NodePool", v)
	case unknown("nodePool"):
		row("NodePool", "unknown")
	default:
		row("NodePool", "none (not applied yet, or the config is invalid)")
	}

	nodes := "unknown"
	if !unknown("nodes") {
		nodes = fmt.Sprintf("%d current (%d Ready", p.Nodes.Current, p.Nodes.Ready)
		if p.Nodes.Deleting > 0 {
			nodes += fmt.Sprintf(", %d deleting", p.Nodes.Deleting)
		}
		switch {
		case unknown("nodeClaims"):
			nodes += ", launching unknown"
		case p.Nodes.Launching > 0:
			nodes += fmt.Sprintf(", %d launching", p.Nodes.Launching)
		}
		nodes += ")"
	}
	held := ""
	if h := p.Scaling.BurstHold; h != nil && *h > 0 {
		held = fmt.Sprintf(", at least %d held after a burst", *h)
	}
	nodes += ", " + optInt(p.Scaling.Desired, unknown("scaling")) + " desired (" + optInt(p.Scaling.Spare, unknown("scaling")) + " spare" + held + "), headroom " +
		optInt(p.Scaling.HeadroomReplicas, unknown("scaling"))
	row("Nodes", nodes)
	switch {
	case unknown("scaling"):
		row("Scaling", "unknown (the headroom object could not be read)")
	case p.Scaling.Headroom == "":
		row("Scaling", "never actuated (no headroom object)")
	case p.Scaling.StateError != "":
		row("Scaling", p.Scaling.StateError)
	case p.Scaling.RecordedAt != nil:
		row("Scaling", fmt.Sprintf("desired recorded %s ago on %s", age(now, *p.Scaling.RecordedAt), p.Scaling.Headroom))
	default:
		row("Scaling", "recorded on "+p.Scaling.Headroom)
	}
	row("Busy", busy(p))

	if len(p.Sources) > 0 {
		b.WriteString("  Queue sources:\n")
		tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "    NAME\tKIND\tQUEUED\tRUNNING\tLAST READING")
		for _, s := range p.Sources {
			last := "unknown"
			if s.StalenessSeconds != nil {
				if *s.StalenessSeconds < 0 {
					last = "never answered"
				} else {
					last = age(now, now.Add(-time.Duration(*s.StalenessSeconds*float64(time.Second)))) + " ago"
				}
			}
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\n", s.Name, s.Kind, optInt(s.Queued, false), optInt(s.Running, false), last)
		}
		tw.Flush()
		if metrics == "" {
			b.WriteString("    (readings are kept in the leading controller's memory only: give its metrics endpoint to see them)\n")
		}
	}

	c := &p.Cache
	switch {
	case unknown("snapshots"):
		row("Cache", "unknown (snapshots could not be read)")
	case !c.Enabled && c.Total == 0:
		row("Cache", "off")
	default:
		state := "enabled"
		if !c.Enabled {
			state = "off"
		}
		row("Cache", fmt.Sprintf("%s, %d snapshot(s)", state, c.Total))
	}
	if len(c.Snapshots) > 0 {
		RenderSnapshots(b, c.Snapshots, now, "    ", false)
	}
	if c.Enabled || c.LastSave != nil || c.LastRestore != nil {
		unknownEvents := unknown("events") || unknown("nodes")
		row("Last save", outcome(c.LastSave, now, unknownEvents))
		row("Last restore", outcome(c.LastRestore, now, unknownEvents))
		if len(c.ColdStarts) > 0 {
			var cs []string
			for _, o := range c.ColdStarts {
				cs = append(cs, fmt.Sprintf("%s (%s) %s ago", o.Node, o.Result, age(now, o.At)))
			}
			row("Cold starts", strings.Join(cs, "; "))
		}
	}

	switch {
	case unknown("events"):
		row("Events", "unknown")
	case len(p.Events) == 0:
		row("Events", "none")
	default:
		b.WriteString("  Events:\n")
		renderEvents(b, p.Events, now)
	}
}

func busy(p *Pool) string {
	np := p.NodePool
	if np == nil {
		return "unknown (no NodePool)"
	}
	var budgets []string
	for _, bd := range np.Budgets {
		s := "nodes=" + bd.Nodes
		if len(bd.Reasons) > 0 {
			s += " for " + strings.Join(bd.Reasons, ",")
		}
		if bd.Schedule != "" {
			s += " at " + bd.Schedule + " for " + bd.Duration
		}
		budgets = append(budgets, s)
	}
	in := "Karpenter's default budget (10%)"
	if len(budgets) > 0 {
		in = strings.Join(budgets, "; ")
	}
	switch np.Busy {
	case "true":
		return "yes: work is queued or running (or a warm window is open); budgets in force: " + in
	case "false":
		return "no: budgets in force: " + in
	}
	return "never decided by the scaling controller; budgets in force: " + in
}

func outcome(o *Outcome, now time.Time, unknown bool) string {
	if o == nil {
		if unknown {
			return "unknown"
		}
		return "none seen"
	}
	s := o.Result + " on node " + o.Node
	if !o.At.IsZero() {
		s += ", " + age(now, o.At) + " ago"
	}
	// The Event's message names the snapshot already.
	if o.Message != "" {
		return s + ": " + o.Message
	}
	if o.Snapshot != "" {
		s += ", snapshot " + o.Snapshot
	}
	return s
}

func renderEvents(b *strings.Builder, es []Event, now time.Time) {
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    AGE\tTYPE\tREASON\tOBJECT\tMESSAGE")
	for _, e := range es {
		a := age(now, e.Last)
		if e.Count > 1 {
			a += fmt.Sprintf(" (x%d)", e.Count)
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\n", a, e.Type, e.Reason, e.Object, e.Message)
	}
	tw.Flush()
}

// RenderSnapshots writes a snapshot table; withPool adds the POOL column.
func RenderSnapshots(w io.Writer, snaps []Snapshot, now time.Time, indent string, withPool bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	pool := ""
	if withPool {
		pool = "POOL\t"
	}
	fmt.Fprintln(tw, indent+"NAME\t"+pool+"ARCH\tENGINE\tAGE\tSIZE\tREADY\tQUARANTINED\tBASE")
	for _, s := range snaps {
		p := ""
		if withPool {
			p = s.Pool + "\t"
		}
		fmt.Fprintf(tw, "%s%s\t%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", indent, s.Name, p, dash(s.Arch), dash(s.EngineVersion),
			age(now, s.Created), size(s), ready(s), quarantined(s), dash(s.Base))
	}
	tw.Flush()
}

func size(s Snapshot) string {
	if s.Bytes != nil {
		return units.BytesSize(float64(*s.Bytes))
	}
	return dash(s.RestoreSize)
}

func ready(s Snapshot) string {
	switch {
	case s.Deleting:
		return "deleting"
	case s.Failed != "":
		return "failed"
	case s.Ready:
		return "yes"
	case s.Error != "":
		return "error"
	}
	return "no"
}

func quarantined(s Snapshot) string {
	if !s.Quarantined {
		return "no"
	}
	if s.QuarantineReason == "" {
		return "yes"
	}
	return "yes: " + s.QuarantineReason
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func optInt(v *int, unknown bool) string {
	if v == nil || unknown {
		return "unknown"
	}
	return strconv.Itoa(*v)
}

// age is how long before now t was, as kubectl prints it ("0s" for the future).
func age(now, t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return duration.HumanDuration(d)
}
