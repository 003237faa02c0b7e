package nodepools_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/nodepools"
)

// TestCheckEngineDaemonSet starts each case from warmpool's own DaemonSet for the pool (which
// conforms) and breaks one part of the contract.
func TestCheckEngineDaemonSet(t *testing.T) {
	const podSpec = "spec.template.spec"
	evict := "Karpenter never evicts such a pod, so the engine is killed with its node instead of stopping cleanly"
	noDrain := "is not set: the kubelet sends SIGTERM with clients attached, and a client still attached when the grace period ends means SIGKILL and a wiped cache; " + drainFix
	for _, tc := range []struct {
		name  string
		cache bool
		edit  func(ds *appsv1.DaemonSet)
		want  []string
	}{
		{name: "own DaemonSet conforms", cache: true, edit: func(*appsv1.DaemonSet) {}},
		{name: "own DaemonSet conforms without cache", edit: func(*appsv1.DaemonSet) {}},
		{name: "another pool's nodes", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeSelector["warmpool.io/pool"] = "other" },
			want: []string{podSpec + ": does not select the pool's nodes (labelled warmpool.io/pool=p): no engine would run there"}},
		{name: "other architecture", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/arch": "arm64"}
		}, want: []string{podSpec + ": does not select the pool's nodes (labelled warmpool.io/pool=p): no engine would run there"}},
		{name: "a label we cannot know is assumed to match", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.NodeSelector = map[string]string{"node.kubernetes.io/instance-type": "c6id.4xlarge"}
		}},
		{name: "selected by NodePool label", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.NodeSelector = map[string]string{"karpenter.sh/nodepool": "warmpool-p"}
		}},
		{name: "affinity excludes the pool", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.NodeSelector = nil
			ds.Spec.Template.Spec.Affinity = requiredAffinity(
				corev1.NodeSelectorRequirement{Key: "warmpool.io/pool", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"p"}})
		}, want: []string{podSpec + ": does not select the pool's nodes (labelled warmpool.io/pool=p): no engine would run there"}},
		{name: "affinity on the pool's extra label", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.NodeSelector = nil
			ds.Spec.Template.Spec.Affinity = requiredAffinity(
				corev1.NodeSelectorRequirement{Key: "tier", Operator: corev1.NodeSelectorOpIn, Values: []string{"builder"}},
				corev1.NodeSelectorRequirement{Key: "zone-hint", Operator: corev1.NodeSelectorOpExists})
		}},
		{name: "affinity requires the absence of a label the pool's nodes carry", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Affinity = requiredAffinity(
				corev1.NodeSelectorRequirement{Key: "tier", Operator: corev1.NodeSelectorOpDoesNotExist})
		}, want: []string{podSpec + ": does not select the pool's nodes (labelled warmpool.io/pool=p): no engine would run there"}},
		{name: "runner taint not tolerated", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: "warmpool.io/runner", Value: "q", Effect: corev1.TaintEffectNoSchedule}}
		}, want: []string{podSpec + ".tolerations: does not tolerate the pool's runner taint warmpool.io/runner=p:NoSchedule: no engine would run on the pool's nodes"}},
		{name: "blanket toleration", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}, want: []string{podSpec + ".tolerations[0]: tolerates every taint: " + evict}},
		{name: "disrupted taint tolerated", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Tolerations = append(ds.Spec.Template.Spec.Tolerations,
				corev1.Toleration{Key: "karpenter.sh/disrupted", Operator: corev1.TolerationOpExists})
		}, want: []string{podSpec + ".tolerations[1]: tolerates karpenter.sh/disrupted:NoSchedule: " + evict}},
		{name: "startup taint tolerated with the cache on", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Tolerations = append(ds.Spec.Template.Spec.Tolerations,
				corev1.Toleration{Key: "warmpool.io/cache-restore", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
		}, want: []string{podSpec + ".tolerations[1]: tolerates the startup taint warmpool.io/cache-restore:NoSchedule: the engine would start before the cache is restored"}},
		{name: "startup taint tolerated without cache (no such taint)", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Tolerations = append(ds.Spec.Template.Spec.Tolerations,
				corev1.Toleration{Key: "warmpool.io/cache-restore", Operator: corev1.TolerationOpExists})
		}},
		{name: "default grace period", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.TerminationGracePeriodSeconds = nil },
			want: []string{podSpec + ".terminationGracePeriodSeconds: is 30, want >= 330 (engine.stopSeconds 300 + 30 s to exit): the engine does not bound its own stop, so one still stopping when the grace period ends is SIGKILLed and loses its cache"}},
		{name: "the chart's grace period", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](300) },
			want: []string{podSpec + ".terminationGracePeriodSeconds: is 300, want >= 330 (engine.stopSeconds 300 + 30 s to exit): the engine does not bound its own stop, so one still stopping when the grace period ends is SIGKILLed and loses its cache"}},
		{name: "grace period at the minimum", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](330) }},
		{name: "grace period as long as the node's", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](3600) },
			want: []string{podSpec + ".terminationGracePeriodSeconds: is 3600, want less than the pool's terminationGracePeriod (1h0m0s): Karpenter removes the node when that runs out, engine stopped or not"}},
		{name: "cache on the EBS root volume", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Volumes[0].HostPath.Path = "/var/lib/dagger-helm" },
			want: []string{podSpec + ".volumes[data].hostPath.path: is /var/lib/dagger-helm, want a directory under the NVMe RAID0 mount /mnt/k8s-disks/0/ (other host paths are on the EBS root volume)"}},
		{name: "another NVMe dir than the config's, cache on", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Volumes[0].HostPath.Path = "/mnt/k8s-disks/0/dagger"
		}, want: []string{podSpec + ".volumes[data].hostPath.path: is /mnt/k8s-disks/0/dagger, but pools[].engine.hostPath is /mnt/k8s-disks/0/dagger-p: the cache save would copy the wrong directory"}},
		{name: "another NVMe dir than the config's, cache off", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Volumes[0].HostPath.Path = "/mnt/k8s-disks/0/dagger"
		}},
		{name: "data dir on an emptyDir", edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}, want: []string{podSpec + ".containers[0].volumeMounts: /var/lib/dagger is not mounted from a hostPath: the cache would not be on the node's NVMe"}},
		{name: "no data dir", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].VolumeMounts = nil },
			want: []string{podSpec + ".containers: no container mounts the engine's data dir /var/lib/dagger"}},
		{name: "pod labels the cache controller needs", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Labels = map[string]string{"name": "dagger-engine"}
		}, want: []string{
			`spec.template.metadata.labels[app.kubernetes.io/name]: is "", want "dagger-engine": the cache controller finds the engine pod of a node by it`,
			`spec.template.metadata.labels[warmpool.io/pool]: is "", want "p": the cache controller finds the engine pod of a node by it`,
		}},
		{name: "pod labels without cache", edit: func(ds *appsv1.DaemonSet) { ds.Spec.Template.Labels = map[string]string{"name": "x"} }},
		{name: "another engine version", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Containers[0].Image = "registry.dagger.io/engine:v0.19.8"
		}, want: []string{podSpec + ".containers[0].image: has tag v0.19.8, but pools[].engine.version is v0.19.7: snapshots are keyed by that version, and another engine may wipe a restored cache"}},
		{name: "a variant of the same version", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Containers[0].Image = "localhost:5000/engine:v0.19.7-gpu"
		}},
		{name: "a digest", cache: true, edit: func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Containers[0].Image = "registry.dagger.io/engine@sha256:" + strings.Repeat("ab", 32)
		}},
		{name: "the Dagger chart with a blanket toleration", cache: true, edit: func(ds *appsv1.DaemonSet) { *ds = *chartDaemonSet() }, want: []string{
			podSpec + ": does not select the pool's nodes (labelled warmpool.io/pool=p): no engine would run there",
			podSpec + ".tolerations[0]: tolerates every taint: " + evict,
			podSpec + ".terminationGracePeriodSeconds: is 300, want >= 330 (engine.stopSeconds 300 + 30 s to exit): the engine does not bound its own stop, so one still stopping when the grace period ends is SIGKILLed and loses its cache",
			podSpec + ".volumes[varlibdagger].hostPath.path: is /var/lib/dagger-dagger-dagger-helm, want a directory under the NVMe RAID0 mount /mnt/k8s-disks/0/ (other host paths are on the EBS root volume)",
			podSpec + ".containers[0].lifecycle.preStop: " + noDrain,
			`spec.template.metadata.labels[app.kubernetes.io/name]: is "dagger-helm", want "dagger-engine": the cache controller finds the engine pod of a node by it`,
			`spec.template.metadata.labels[warmpool.io/pool]: is "", want "p": the cache controller finds the engine pod of a node by it`,
			podSpec + ".containers[0].image: has tag v0.18.1, but pools[].engine.version is v0.19.7: snapshots are keyed by that version, and another engine may wipe a restored cache",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := "labels: {tier: builder}\n"
			if tc.cache {
				extra += "cache: {enabled: true}\n"
			}
			cfg := mustParse(t, configYAML("", pool("p", extra)))
			p := &cfg.Pools[0]
			ds := nodepools.EngineDaemonSet(p, "dagger", "")
			tc.edit(ds)
			got := nodepools.CheckEngineDaemonSet(p, ds)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

const drainFix = "run warmpool's drain instead (the init container and preStop hook of the engine DaemonSet warmpool renders, see `warmpool render`)"

// TestCheckEngineDrain: the engine container's preStop hook must be able to wait for the
// engine's clients with what the engine image holds. Images from v0.19.8 on are Wolfi, without
// wget, curl or nc; up to v0.19.7 the Alpine image has busybox wget.
func TestCheckEngineDrain(t *testing.T) {
	const field = "spec.template.spec.containers[0].lifecycle.preStop"
	wolfi := func(tool string) string {
		return field + ".exec.command: runs " + tool + ", which engine images from v0.19.8 on (Wolfi) do not have: the hook fails at once and the kubelet sends SIGTERM with clients attached; " + drainFix
	}
	// warmpool's own hook before it ran its own binary: wget, else curl.
	oldScript := `url="http://${_EXPERIMENTAL_DAGGER_METRICS_ADDR}/metrics"
if command -v wget >/dev/null 2>&1; then get() { wget -q -T 5 -O - "$1"; }; else get() { curl -fsS -m 5 "$1"; }; fi
n=$(get "$url" | awk '/^dagger_connected_clients[ {]/ { s += $NF } END { print s }')`
	exec := func(cmd ...string) *corev1.LifecycleHandler {
		return &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: cmd}}
	}
	for _, tc := range []struct {
		name, version string
		preStop       *corev1.LifecycleHandler // nil: no lifecycle at all
		want          []string
	}{
		{name: "warmpool's drain", version: "v0.21.8", preStop: exec(nodepools.EngineDrainCommand(570)...)},
		{name: "no hook", version: "v0.21.8", want: []string{field + ": is not set: the kubelet sends SIGTERM with clients attached, and a client still attached when the grace period ends means SIGKILL and a wiped cache; " + drainFix}},
		{name: "no hook on an old engine either", version: "v0.19.7", want: []string{field + ": is not set: the kubelet sends SIGTERM with clients attached, and a client still attached when the grace period ends means SIGKILL and a wiped cache; " + drainFix}},
		{name: "a sleep drains nothing", version: "v0.21.8", preStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 300}},
			want: []string{field + ".sleep: waits 300s whatever the clients do: it does not drain them; " + drainFix}},
		{name: "the wget script on Wolfi", version: "v0.21.8", preStop: exec("sh", "-c", oldScript), want: []string{wolfi("wget")}},
		{name: "the wget script on the first Wolfi release", version: "v0.19.8", preStop: exec("sh", "-c", oldScript), want: []string{wolfi("wget")}},
		{name: "the wget script on Alpine", version: "v0.19.7", preStop: exec("sh", "-c", oldScript)},
		{name: "curl by path", version: "v0.20.1", preStop: exec("/usr/bin/curl", "-fsS", "http://127.0.0.1:9090/metrics"), want: []string{wolfi("curl")}},
		{name: "nc in a script", version: "v0.21.8", preStop: exec("/bin/sh", "-c", "while echo x | nc -w1 127.0.0.1 9090; do sleep 2; done"), want: []string{wolfi("nc")}},
		{name: "a version outside the table is taken for Wolfi", version: "v9.0.0", preStop: exec("wget", "-qO-", "http://127.0.0.1:9090/metrics"), want: []string{wolfi("wget")}},
		{name: "a shell hook without an HTTP client", version: "v0.21.8", preStop: exec("sh", "-c", "until dagger core version >/dev/null; do sleep 1; done")},
		{name: "words that only contain a tool's name", version: "v0.21.8", preStop: exec("sh", "-c", "sync; /opt/sync-wgetless --ncores 2")},
		{name: "an HTTP hook is not second-guessed", version: "v0.21.8", preStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/drain"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, configYAML("", enginePool("p", "{version: v0.21.8}", "")))
			p := &cfg.Pools[0]
			// Set after parsing: the check must hold for a version validation would refuse.
			p.Engine.Version = tc.version
			ds := nodepools.EngineDaemonSet(p, "dagger", "")
			c := &ds.Spec.Template.Spec.Containers[0]
			c.Lifecycle = nil
			if tc.preStop != nil {
				c.Lifecycle = &corev1.Lifecycle{PreStop: tc.preStop}
			}
			got := nodepools.CheckEngineDaemonSet(p, ds)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// TestCheckEngineDaemonSetArchitectures: a pool of two architectures is selected when either
// architecture's nodes are.
func TestCheckEngineDaemonSetArchitectures(t *testing.T) {
	cfg := mustParse(t, configYAML("", pool("p", "architectures: [amd64, arm64]\n")))
	p := &cfg.Pools[0]
	ds := nodepools.EngineDaemonSet(p, "dagger", "")
	ds.Spec.Template.Spec.NodeSelector["kubernetes.io/arch"] = "arm64"
	if got := nodepools.CheckEngineDaemonSet(p, ds); len(got) != 0 {
		t.Errorf("arm64-only engine of an amd64+arm64 pool reported: %q", got)
	}
}

func requiredAffinity(reqs ...corev1.NodeSelectorRequirement) *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: reqs}},
	}}}
}

// chartDaemonSet is what the Dagger Helm chart renders for release "dagger" with a blanket
// toleration and a nodeSelector for other nodes, as commonly installed.
func chartDaemonSet() *appsv1.DaemonSet {
	hostPath := func(name, path string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}
	}
	return &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"name": "dagger-dagger-helm-engine", "app.kubernetes.io/name": "dagger-helm"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"dagger-node": "true", "warmpool.io/pool": "builders"},
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			TerminationGracePeriodSeconds: ptr.To[int64](300),
			Containers: []corev1.Container{{
				Name:  "dagger-engine",
				Image: "registry.dagger.io/engine:v0.18.1",
				VolumeMounts: []corev1.VolumeMount{
					{Name: "varlibdagger", MountPath: "/var/lib/dagger"},
					{Name: "varrundagger", MountPath: "/var/run/dagger"},
				},
			}},
			Volumes: []corev1.Volume{
				hostPath("varlibdagger", "/var/lib/dagger-dagger-dagger-helm"),
				hostPath("varrundagger", "/var/run/dagger-dagger-dagger-helm"),
			},
		},
	}}}
}
