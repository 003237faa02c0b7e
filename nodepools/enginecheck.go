package nodepools

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes"
	"warmpool.io/warmpool/volumes/engine"
)

// CheckEngineDaemonSet checks a DaemonSet the user runs (pools[].engine.existingDaemonSet)
// against the contract warmpool's own engine DaemonSet keeps, and returns one line per
// violation, each naming the offending field and what goes wrong; none when it conforms.
// Always: it runs on the pool's nodes, can be drained by Karpenter (so it gets SIGTERM), has a
// grace period that covers the engine's stop and fits in the node's, has a preStop hook that
// can wait for the engine's clients, and keeps its cache on NVMe. With the pool's cache on,
// also what the cache controller relies on: the pod labels it finds the engine by, the data
// dir it copies, and the engine version snapshots are keyed by.
func CheckEngineDaemonSet(p *config.Pool, ds *appsv1.DaemonSet) []string {
	var out []string
	add := func(fieldPath, format string, args ...any) {
		out = append(out, fieldPath+": "+fmt.Sprintf(format, args...))
	}
	spec := &ds.Spec.Template.Spec
	const podSpec = "spec.template.spec"

	if !selectsPoolNodes(p, spec) {
		add(podSpec, "does not select the pool's nodes (labelled %s=%s): no engine would run there", LabelPool, p.Name)
	}
	tolerates := func(t corev1.Taint) int {
		return slices.IndexFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
			return tol.ToleratesTaint(klog.Background(), &t, true)
		})
	}
	if tolerates(*p.Taint) < 0 {
		add(podSpec+".tolerations", "does not tolerate the pool's runner taint %s: no engine would run on the pool's nodes", taintString(*p.Taint))
	}
	for i, tol := range spec.Tolerations {
		if tol.Key == "" && tol.Operator == corev1.TolerationOpExists {
			add(fmt.Sprintf("%s.tolerations[%d]", podSpec, i), "tolerates every taint: Karpenter never evicts such a pod, so the engine is killed with its node instead of stopping cleanly")
		}
	}
	if i := tolerates(karpv1.DisruptedNoScheduleTaint); i >= 0 && spec.Tolerations[i].Key != "" {
		add(fmt.Sprintf("%s.tolerations[%d]", podSpec, i), "tolerates %s: Karpenter never evicts such a pod, so the engine is killed with its node instead of stopping cleanly",
			taintString(karpv1.DisruptedNoScheduleTaint))
	}
	if p.Cache.Enabled {
		if i := tolerates(StartupTaint); i >= 0 && spec.Tolerations[i].Key != "" {
			add(fmt.Sprintf("%s.tolerations[%d]", podSpec, i), "tolerates the startup taint %s: the engine would start before the cache is restored",
				taintString(StartupTaint))
		}
	}

	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	// The engine does not bound its own stop; the pool's stopSeconds is what warmpool leaves it.
	if stop := p.Engine.StopSecondsOrDefault(); grace < stop+config.EngineExitSeconds {
		add(podSpec+".terminationGracePeriodSeconds", "is %d, want >= %d (engine.stopSeconds %d + %d s to exit): the engine does not bound its own stop, so one still stopping when the grace period ends is SIGKILLed and loses its cache",
			grace, stop+config.EngineExitSeconds, stop, config.EngineExitSeconds)
	}
	if nodeGrace := p.TerminationGracePeriod.Duration; time.Duration(grace)*time.Second >= nodeGrace {
		add(podSpec+".terminationGracePeriodSeconds", "is %d, want less than the pool's terminationGracePeriod (%s): Karpenter removes the node when that runs out, engine stopped or not",
			grace, nodeGrace)
	}

	engine, dataVolume := engineContainer(spec)
	switch {
	case engine < 0:
		add(podSpec+".containers", "no container mounts the engine's data dir %s", EngineDataPath)
	case dataVolume == nil || dataVolume.HostPath == nil:
		add(fmt.Sprintf("%s.containers[%d].volumeMounts", podSpec, engine), "%s is not mounted from a hostPath: the cache would not be on the node's NVMe", EngineDataPath)
	default:
		hp := path.Clean(dataVolume.HostPath.Path)
		vp := fmt.Sprintf("%s.volumes[%s].hostPath.path", podSpec, dataVolume.Name)
		if !strings.HasPrefix(hp, config.NVMeMountPath+"/") {
			add(vp, "is %s, want a directory under the NVMe RAID0 mount %s/ (other host paths are on the EBS root volume)", hp, config.NVMeMountPath)
		} else if p.Cache.Enabled && hp != p.Engine.HostPath {
			add(vp, "is %s, but pools[].engine.hostPath is %s: the cache save would copy the wrong directory", hp, p.Engine.HostPath)
		}
	}

	if engine >= 0 {
		if field, problem := checkDrain(p, &spec.Containers[engine]); problem != "" {
			add(fmt.Sprintf("%s.containers[%d].%s", podSpec, engine, field), "%s", problem)
		}
	}

	if p.Cache.Enabled {
		labels := ds.Spec.Template.Labels
		for _, k := range []string{volumes.LabelEngineName, LabelPool} {
			if want := EngineSelector(p.Name)[k]; labels[k] != want {
				add("spec.template.metadata.labels["+k+"]", "is %q, want %q: the cache controller finds the engine pod of a node by it", labels[k], want)
			}
		}
		if engine >= 0 {
			if tag := imageTag(spec.Containers[engine].Image); tag != "" && !versionTagMatches(tag, p.Engine.Version) {
				add(fmt.Sprintf("%s.containers[%d].image", podSpec, engine), "has tag %s, but pools[].engine.version is %s: snapshots are keyed by that version, and another engine may wipe a restored cache",
					tag, p.Engine.Version)
			}
		}
	}
	return out
}

// httpTools are the programs a shell preStop hook reads the engine's metrics with.
var httpTools = []string{"wget", "curl", "nc", "ncat", "netcat"}

// checkDrain checks the engine container's preStop hook, which must keep SIGTERM from the engine
// until its clients are gone: no engine release bounds its graceful stop while clients stay
// attached, so a client still there at the end of the grace period means SIGKILL and a wiped
// cache. It returns the offending field below the container and the problem, or "" when the
// hook may drain. A hook it cannot see into (an HTTP call, a program it does not know) is
// assumed to work: only a certain failure is reported.
func checkDrain(p *config.Pool, c *corev1.Container) (field, problem string) {
	const fix = "run warmpool's drain instead (the init container and preStop hook of the engine DaemonSet warmpool renders, see `warmpool render`)"
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return "lifecycle.preStop", "is not set: the kubelet sends SIGTERM with clients attached, and a client still attached when the grace period ends means SIGKILL and a wiped cache; " + fix
	}
	pre := c.Lifecycle.PreStop
	switch {
	case pre.Sleep != nil:
		return "lifecycle.preStop.sleep", fmt.Sprintf("waits %ds whatever the clients do: it does not drain them; %s", pre.Sleep.Seconds, fix)
	case pre.Exec != nil:
		tool := commandUses(pre.Exec.Command, httpTools)
		if tool == "" {
			return "", ""
		}
		// Up to v0.19.7 the Alpine image has busybox wget (and the Ubuntu -gpu image curl):
		// such a hook may work there. From v0.19.8 every image is Wolfi, without any of them.
		if contract, err := engine.ForVersion(p.Engine.Version); err == nil && contract.HTTPClient != "" {
			return "", ""
		}
		return "lifecycle.preStop.exec.command", fmt.Sprintf("runs %s, which engine images from v0.19.8 on (Wolfi) do not have: the hook fails at once and the kubelet sends SIGTERM with clients attached; %s", tool, fix)
	}
	return "", ""
}

// commandUses returns the first of programs that the command (or a shell script in it) names
// as a word, by itself or as the last element of a path; "" when it names none.
func commandUses(command, programs []string) string {
	words := strings.FieldsFunc(strings.Join(command, " "), func(r rune) bool {
		return !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-' || r == '.')
	})
	for _, w := range words {
		if slices.Contains(programs, w) {
			return w
		}
	}
	return ""
}

// selectsPoolNodes reports whether the pod's nodeSelector and required node affinity admit a
// node of the pool. Only labels every node of the pool carries are known (the pool label, its
// extra labels, its NodePool, architecture and OS); a term on any other label is assumed to
// match, so only a certain mismatch is reported.
func selectsPoolNodes(p *config.Pool, spec *corev1.PodSpec) bool {
	for _, arch := range p.Architectures {
		known := map[string]string{
			LabelPool:               p.Name,
			karpv1.NodePoolLabelKey: Name(p.Name),
			corev1.LabelArchStable:  arch,
			corev1.LabelOSStable:    string(corev1.Linux),
		}
		for k, v := range p.Labels {
			known[k] = v
		}
		if nodeMatches(known, spec) {
			return true
		}
	}
	return false
}

func nodeMatches(known map[string]string, spec *corev1.PodSpec) bool {
	for k, v := range spec.NodeSelector {
		if have, ok := known[k]; ok && have != v {
			return false
		}
	}
	aff := spec.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return true
	}
	// Terms are ORed, the expressions of a term ANDed.
	for _, term := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if termMatches(known, term) {
			return true
		}
	}
	return false
}

func termMatches(known map[string]string, term corev1.NodeSelectorTerm) bool {
	for _, r := range term.MatchExpressions {
		v, ok := known[r.Key]
		if !ok {
			continue
		}
		switch r.Operator {
		case corev1.NodeSelectorOpIn:
			if !slices.Contains(r.Values, v) {
				return false
			}
		case corev1.NodeSelectorOpNotIn:
			if slices.Contains(r.Values, v) {
				return false
			}
		case corev1.NodeSelectorOpDoesNotExist:
			return false
		}
	}
	return true
}

// engineContainer finds the container that mounts the engine's data dir, and that mount's volume.
func engineContainer(spec *corev1.PodSpec) (int, *corev1.Volume) {
	for i, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) != EngineDataPath {
				continue
			}
			for j := range spec.Volumes {
				if spec.Volumes[j].Name == m.Name {
					return i, &spec.Volumes[j]
				}
			}
			return i, nil
		}
	}
	return -1, nil
}

// imageTag is the tag of an image reference, "" when it has none (or only a digest).
func imageTag(image string) string {
	image, _, _ = strings.Cut(image, "@")
	name := image[strings.LastIndex(image, "/")+1:]
	_, tag, _ := strings.Cut(name, ":")
	return tag
}

// versionTagMatches accepts the version's tag and its variants ("v0.19.7", "v0.19.7-gpu").
func versionTagMatches(tag, version string) bool {
	v := "v" + strings.TrimPrefix(version, "v")
	tag = "v" + strings.TrimPrefix(tag, "v")
	return tag == v || strings.HasPrefix(tag, v+"-")
}

func taintString(t corev1.Taint) string {
	s := t.Key
	if t.Value != "" {
		s += "=" + t.Value
	}
	return s + ":" + string(t.Effect)
}
