package nodepools

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes"
)

// The engine pod's side of the cache contract (see volumes/protocol.go for the labels).
const (
	// EngineDataPath is where the engine keeps its cache, mounted from the pool's hostPath.
	EngineDataPath = "/var/lib/dagger"
	// EngineRunPath holds the engine's socket (engine.sock, the image's default address), mounted
	// from the pool's runPath so runner pods can reach it through the same host dir.
	EngineRunPath = "/run/dagger"
	// EngineConfigKey is the engine.json key of the engine ConfigMap, mounted at EngineConfigPath.
	EngineConfigKey  = "engine.json"
	EngineConfigPath = "/etc/dagger/" + EngineConfigKey
	// AnnotationEngineConfig carries a checksum of engine.json on the pod template, so a config
	// change makes a new template (a subPath mount never sees ConfigMap updates).
	AnnotationEngineConfig = "warmpool.io/engine-config-checksum"
	// AnnotationEngineTemplate on the NodePool's node template is EngineTemplateHash: a change
	// of the engine drifts the pool's nodes, and Karpenter replaces them gracefully.
	AnnotationEngineTemplate = "warmpool.io/engine-template"
	// EngineMetricsEnv makes the engine serve Prometheus metrics, among them
	// dagger_connected_clients, which the preStop hook polls. Loopback only: nothing else
	// needs them, and the pod is not on the host network.
	EngineMetricsEnv  = "_EXPERIMENTAL_DAGGER_METRICS_ADDR"
	EngineMetricsAddr = "127.0.0.1:9090"
	// engineGroup is the chart's runAsGroup: the engine creates its socket with this group, so
	// runner pods may reach it with a supplemental group instead of root.
	engineGroup = 1001
)

// The engine pod's drain hook. Engine images from v0.19.8 on are Wolfi, with busybox sh but no
// wget, curl or nc (build/builder.go in dagger/dagger), so the hook cannot read the engine's
// metrics with what the image holds. An init container running warmpool's own image
// (distroless: no sh, no cp) copies warmpool's static binary into an emptyDir with
// `warmpool engine install`; the engine container mounts it and its preStop runs
// `warmpool engine drain` from there, needing nothing from the engine image.
const (
	// EngineToolsVolume is the emptyDir, EngineToolsPath where both containers mount it and
	// EngineToolsBinary the binary's name in it.
	EngineToolsVolume = "warmpool-tools"
	EngineToolsPath   = "/opt/warmpool"
	EngineToolsBinary = "warmpool"
	// EngineToolsContainer is the init container's name.
	EngineToolsContainer = "warmpool-tools"
	// DefaultToolsImage is warmpool's image when the caller names none (Options.ToolsImage).
	DefaultToolsImage = "ghcr.io/warmpool/warmpool:latest"
	// toolsImageBinary is warmpool's binary in its image (Dockerfile).
	toolsImageBinary = "/warmpool"
	// toolsUser is the distroless :nonroot user the image declares (Dockerfile). The copy needs
	// no privilege: the kubelet creates an emptyDir world-writable.
	toolsUser = 65532
)

// EngineToolsInstallCommand is the init container's command: copy warmpool's binary into the
// emptyDir.
func EngineToolsInstallCommand() []string {
	return []string{toolsImageBinary, "engine", "install", "--to", EngineToolsPath}
}

// EngineDrainCommand is the engine container's preStop hook, run directly (no shell): wait up
// to maxWait seconds for the engine's clients to leave.
func EngineDrainCommand(maxWait int64) []string {
	return []string{EngineToolsPath + "/" + EngineToolsBinary, "engine", "drain", "--max-wait", strconv.FormatInt(maxWait, 10)}
}

// EngineName names a pool's engine DaemonSet and its ConfigMap.
func EngineName(pool string) string { return NamePrefix + "engine-" + pool }

// EngineSelector selects a pool's engine pods; the cache controller finds a node's engine pod
// by these labels. The DaemonSet selector is immutable, so the engine version stays out of it.
func EngineSelector(pool string) map[string]string {
	return map[string]string{volumes.LabelEngineName: volumes.EngineName, LabelPool: pool}
}

// engineLabels mark the engine DaemonSet and ConfigMap: owned by warmpool, and told apart from
// other objects warmpool owns in its namespace, which pruning must never touch.
func engineLabels(pool string) map[string]string {
	l := OwnedLabels(pool)
	l[volumes.LabelEngineName] = volumes.EngineName
	return l
}

// IsEngineObject reports whether obj is an engine DaemonSet or ConfigMap warmpool generated.
func IsEngineObject(labels map[string]string) bool {
	return labels[LabelManagedBy] == ManagedBy && labels[volumes.LabelEngineName] == volumes.EngineName
}

// EngineImage is the pool's engine image: as written when it names a tag or digest, otherwise
// tagged with the engine version (Dagger tags its releases "v0.19.7").
func EngineImage(e *config.Engine) string {
	if imageHasTagOrDigest(e.Image) {
		return e.Image
	}
	tag := e.Version
	if !strings.HasPrefix(tag, "v") {
		tag = "v" + tag
	}
	return e.Image + ":" + tag
}

// imageHasTagOrDigest: a ":" after the last "/" is a tag ("host:5000/engine" is a port).
func imageHasTagOrDigest(image string) bool {
	return strings.Contains(image, "@") || strings.Contains(image[strings.LastIndex(image, "/")+1:], ":")
}

// EngineConfigJSON is the pool's engine.json: the GC settings, nothing else, so every other
// setting keeps the engine's own default.
func EngineConfigJSON(p *config.Pool) string {
	type gc struct {
		MaxUsedSpace  string `json:"maxUsedSpace,omitempty"`
		ReservedSpace string `json:"reservedSpace,omitempty"`
		MinFreeSpace  string `json:"minFreeSpace,omitempty"`
	}
	var doc struct {
		GC *gc `json:"gc,omitempty"`
	}
	if g := p.Engine.GC; g != nil && *g != (config.EngineGC{}) {
		doc.GC = &gc{MaxUsedSpace: g.MaxUsedSpace, ReservedSpace: g.ReservedSpace, MinFreeSpace: g.MinFreeSpace}
	}
	// Strings and a fixed struct: marshalling cannot fail.
	raw, _ := json.MarshalIndent(doc, "", "  ")
	return string(raw) + "\n"
}

// EngineConfigMap renders the ConfigMap holding the pool's engine.json.
func EngineConfigMap(p *config.Pool, namespace string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: EngineName(p.Name), Labels: engineLabels(p.Name)},
		Data:       map[string]string{EngineConfigKey: EngineConfigJSON(p)},
	}
}

// RunnerToleration tolerates exactly the pool's runner taint.
func RunnerToleration(t *corev1.Taint) corev1.Toleration {
	if t.Value == "" {
		return corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpExists, Effect: t.Effect}
	}
	return corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpEqual, Value: t.Value, Effect: t.Effect}
}

// EngineDaemonSet renders the pool's Dagger Engine DaemonSet, shaped like the Dagger Helm
// chart's (privileged, hostPath data and run dirs, readiness by `dagger core version`) with
// the changes the cache needs:
//   - it tolerates the runner taint only. Not the cache-restore startup taint, so the engine
//     starts after the restore; not karpenter.sh/disrupted (nor a blanket Exists), because
//     Karpenter never evicts a pod that tolerates it, and only an evicted engine stops cleanly.
//   - a grace period well above the engine's own 300 s stop, and a preStop hook that first
//     waits for connected clients to finish, so SIGTERM finds the engine idle. The hook is
//     warmpool's binary, installed by an init container from toolsImage (warmpool's image;
//     "" is DefaultToolsImage), since the engine images have no HTTP client.
//   - no priorityClassName: system-node-critical would move the engine to Karpenter's last
//     drain group and change when it stops relative to the pool's other pods.
//   - no liveness probe: a restart in the middle of a build costs more than a slow engine.
//   - updateStrategy OnDelete: a rolling update would restart every node's engine in place,
//     on a node still taking jobs, so clients keep arriving while the drain hook waits for
//     them to leave, and the grace period ends in SIGKILL and a wiped cache. A changed engine
//     reaches running nodes instead through the NodePool: its template carries
//     EngineTemplateHash, so Karpenter sees them drifted and replaces them within the pool's
//     disruption budgets (taint, drain, the cache saved and restored onto the new node).
func EngineDaemonSet(p *config.Pool, namespace, toolsImage string) *appsv1.DaemonSet {
	e := &p.Engine
	podLabels := EngineSelector(p.Name)
	podLabels[volumes.LabelEngineVersion] = e.Version
	podLabels[LabelManagedBy] = ManagedBy
	engineJSON := EngineConfigJSON(p)
	sum := sha256.Sum256([]byte(engineJSON))
	grace := *e.TerminationGracePeriodSeconds

	container := corev1.Container{
		Name:  volumes.EngineContainer,
		Image: EngineImage(e),
		Env:   []corev1.EnvVar{{Name: EngineMetricsEnv, Value: EngineMetricsAddr}},
		SecurityContext: &corev1.SecurityContext{
			Privileged:   ptr.To(true),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"ALL"}},
		},
		// The CLI in the engine image dials the engine's own socket: ready means it serves a
		// session, which a socket file alone does not prove (the hostPath keeps a stale one).
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"dagger", "core", "version"}}},
			PeriodSeconds:    15,
			TimeoutSeconds:   14,
			FailureThreshold: 10,
		},
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: EngineDrainCommand(e.DrainSeconds())},
		}},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: EngineDataPath},
			{Name: "run", MountPath: EngineRunPath},
			{Name: "config", MountPath: EngineConfigPath, SubPath: EngineConfigKey, ReadOnly: true},
			{Name: EngineToolsVolume, MountPath: EngineToolsPath, ReadOnly: true},
		},
	}
	if toolsImage == "" {
		toolsImage = DefaultToolsImage
	}
	// The init container only copies one file into the emptyDir: it runs as the image's own
	// non-root user (container settings override the pod's runAsUser 0, which is the engine's),
	// with no capability and a read-only root filesystem. It peaks at about 55 MB resident (the
	// Go runtime and the mapped binary). The pod's request is the larger of an init container's
	// and the sum of the others', so this adds nothing to the engine's.
	tools := corev1.Container{
		Name:         EngineToolsContainer,
		Image:        toolsImage,
		Command:      EngineToolsInstallCommand(),
		VolumeMounts: []corev1.VolumeMount{{Name: EngineToolsVolume, MountPath: EngineToolsPath}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](toolsUser),
			RunAsGroup:               ptr.To[int64](toolsUser),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
	}
	if e.Resources != nil {
		container.Resources = *e.Resources.DeepCopy()
	}
	hostPath := func(name, path string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptr.To(corev1.HostPathDirectoryOrCreate)},
		}}
	}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: EngineName(p.Name), Labels: engineLabels(p.Name)},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: EngineSelector(p.Name)},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: map[string]string{AnnotationEngineConfig: hex.EncodeToString(sum[:])},
				},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{LabelPool: p.Name},
					Tolerations:                   []corev1.Toleration{RunnerToleration(p.Taint)},
					TerminationGracePeriodSeconds: ptr.To(grace),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsUser:           ptr.To[int64](0),
						RunAsGroup:          ptr.To[int64](engineGroup),
						FSGroup:             ptr.To[int64](engineGroup),
						FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
					},
					InitContainers: []corev1.Container{tools},
					Containers:     []corev1.Container{container},
					Volumes: []corev1.Volume{
						hostPath("data", e.HostPath),
						hostPath("run", e.RunPath),
						{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: EngineName(p.Name)},
							DefaultMode:          ptr.To[int32](0o444),
						}}},
						// The binary is about 100 MB: on the node's disk, not in memory (medium Memory).
						{Name: EngineToolsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
		},
	}
}

// EngineTemplateHash identifies what the pool's engine pods run: a hash of the engine
// DaemonSet's pod template, with the tools image left out. The tools init container only
// installs the drain hook, whose contract stays the same across warmpool releases, so
// upgrading warmpool does not replace every node; a new engine version, image, config,
// resources or grace period does.
func EngineTemplateHash(p *config.Pool) string {
	tpl := EngineDaemonSet(p, "", "tools").Spec.Template
	data, err := json.Marshal(tpl)
	if err != nil {
		panic(fmt.Sprintf("marshalling the engine pod template: %v", err)) // plain structs: cannot fail
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// DrainSeconds is how long the preStop hook may wait for clients within a grace period of
// grace seconds, for an engine given the default engine.stopSeconds: what is left after the
// engine's own stop and the time to deliver SIGTERM (config.Engine.DrainSeconds, which a
// pool with its own stopSeconds should call directly).
func DrainSeconds(grace int64) int64 {
	return (&config.Engine{TerminationGracePeriodSeconds: &grace}).DrainSeconds()
}
