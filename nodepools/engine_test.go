package nodepools_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/volumes"
)

var nsOpts = nodepools.Options{NodeClass: nodepools.EC2NodeClass, Namespace: "warmpool-system"}

// engineObjects renders cfg and returns its engine ConfigMaps and DaemonSets by pool.
func engineObjects(t *testing.T, cfg *config.Config, opts nodepools.Options) (map[string]*corev1.ConfigMap, map[string]*appsv1.DaemonSet) {
	t.Helper()
	cms, dss := map[string]*corev1.ConfigMap{}, map[string]*appsv1.DaemonSet{}
	for _, o := range nodepools.Render(cfg, opts) {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			cms[o.Labels[nodepools.LabelPool]] = o
		case *appsv1.DaemonSet:
			if pool := o.Labels[nodepools.LabelPool]; o.Name == nodepools.EngineName(pool) {
				dss[pool] = o
			}
		}
	}
	return cms, dss
}

// enginePool is a minimal valid pool body named name whose engine section is engine.
func enginePool(name, engine, extra string) string {
	return fmt.Sprintf("name: %s\nnvme: {minSizeGB: 100}\nengine: %s\n", name, engine) + extra
}

func engineDaemonSet(t *testing.T, poolExtra string) (*config.Pool, *appsv1.DaemonSet) {
	t.Helper()
	cfg := mustParse(t, configYAML("", pool("p", poolExtra)))
	_, dss := engineObjects(t, cfg, nsOpts)
	if dss["p"] == nil {
		t.Fatal("no engine DaemonSet rendered for pool p")
	}
	return &cfg.Pools[0], dss["p"]
}

func TestEngineDaemonSet(t *testing.T) {
	p, ds := engineDaemonSet(t, "cache: {enabled: true}\n")
	if ds.Namespace != "warmpool-system" || ds.Name != "warmpool-engine-p" {
		t.Errorf("DaemonSet %s/%s, want warmpool-system/warmpool-engine-p", ds.Namespace, ds.Name)
	}
	equalJSON(t, "TypeMeta", ds.TypeMeta, map[string]string{"apiVersion": "apps/v1", "kind": "DaemonSet"})
	equalJSON(t, "labels", ds.Labels, map[string]string{
		"app.kubernetes.io/managed-by": "warmpool", "warmpool.io/pool": "p", "app.kubernetes.io/name": "dagger-engine"})
	equalJSON(t, "selector", ds.Spec.Selector.MatchLabels, map[string]string{"app.kubernetes.io/name": "dagger-engine", "warmpool.io/pool": "p"})
	equalJSON(t, "pod labels", ds.Spec.Template.Labels, map[string]string{
		volumes.LabelEngineName: volumes.EngineName, volumes.LabelPool: "p", volumes.LabelEngineVersion: "v0.19.7",
		"app.kubernetes.io/managed-by": "warmpool"})

	spec := ds.Spec.Template.Spec
	equalJSON(t, "nodeSelector", spec.NodeSelector, map[string]string{"warmpool.io/pool": "p"})
	equalJSON(t, "tolerations", spec.Tolerations, []corev1.Toleration{
		{Key: "warmpool.io/runner", Operator: corev1.TolerationOpEqual, Value: "p", Effect: corev1.TaintEffectNoSchedule}})
	if got := ptr.Deref(spec.TerminationGracePeriodSeconds, 0); got != 900 {
		t.Errorf("terminationGracePeriodSeconds = %d, want the default 900", got)
	}
	if spec.PriorityClassName != "" {
		t.Errorf("priorityClassName %q: it would change Karpenter's drain order", spec.PriorityClassName)
	}
	equalJSON(t, "pod securityContext", spec.SecurityContext, &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0),
		RunAsGroup: ptr.To[int64](1001), FSGroup: ptr.To[int64](1001), FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch)})
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Name != volumes.EngineContainer || c.Image != "registry.dagger.io/engine:v0.19.7" {
		t.Errorf("container %s image %s, want engine registry.dagger.io/engine:v0.19.7", c.Name, c.Image)
	}
	if sc := c.SecurityContext; sc == nil || !ptr.Deref(sc.Privileged, false) {
		t.Errorf("engine container not privileged: %+v", sc)
	}
	equalJSON(t, "env", c.Env, []corev1.EnvVar{{Name: "_EXPERIMENTAL_DAGGER_METRICS_ADDR", Value: "127.0.0.1:9090"}})
	equalJSON(t, "readinessProbe", c.ReadinessProbe, &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"dagger", "core", "version"}}},
		PeriodSeconds: 15, TimeoutSeconds: 14, FailureThreshold: 10})
	if c.LivenessProbe != nil {
		t.Errorf("liveness probe set: %+v", c.LivenessProbe)
	}
	// The hook is warmpool's binary from the emptyDir, run without a shell: the engine images
	// from v0.19.8 on have no wget, curl or nc.
	equalJSON(t, "lifecycle", c.Lifecycle, &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: []string{"/opt/warmpool/warmpool", "engine", "drain", "--max-wait", fmt.Sprint(nodepools.DrainSeconds(900))}}}})
	equalJSON(t, "volumeMounts", c.VolumeMounts, []corev1.VolumeMount{
		{Name: "data", MountPath: "/var/lib/dagger"},
		{Name: "run", MountPath: "/run/dagger"},
		{Name: "config", MountPath: "/etc/dagger/engine.json", SubPath: "engine.json", ReadOnly: true},
		{Name: "warmpool-tools", MountPath: "/opt/warmpool", ReadOnly: true},
	})
	equalJSON(t, "volumes", spec.Volumes, []corev1.Volume{
		{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/mnt/k8s-disks/0/dagger-p", Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
		{Name: "run", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/dagger-p", Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "warmpool-engine-p"}, DefaultMode: ptr.To[int32](0o444)}}},
		{Name: "warmpool-tools", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	})
	// The init container installs the hook from warmpool's image (distroless: no sh, no cp) as
	// the image's non-root user, with nothing else.
	equalJSON(t, "initContainers", spec.InitContainers, []corev1.Container{{
		Name:         "warmpool-tools",
		Image:        "ghcr.io/warmpool/warmpool:latest",
		Command:      []string{"/warmpool", "engine", "install", "--to", "/opt/warmpool"},
		VolumeMounts: []corev1.VolumeMount{{Name: "warmpool-tools", MountPath: "/opt/warmpool"}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532), RunAsNonRoot: ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}})
	if got := nodepools.CheckEngineDaemonSet(p, ds); len(got) != 0 {
		t.Errorf("warmpool's own DaemonSet breaks the engine contract:\n%s", strings.Join(got, "\n"))
	}
}

func TestEngineDaemonSetFromConfig(t *testing.T) {
	cfg := mustParse(t, configYAML("", enginePool("p", `
  version: 0.20.1
  image: mirror.example.com:5000/dagger/engine
  hostPath: /mnt/k8s-disks/0/cache
  runPath: /run/engine
  terminationGracePeriodSeconds: 1200
  resources: {requests: {cpu: "2"}, limits: {memory: 8Gi}}`, "taint: {key: dedicated, effect: NoExecute}\n")))
	_, dss := engineObjects(t, cfg, nsOpts)
	ds := dss["p"]
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if c.Image != "mirror.example.com:5000/dagger/engine:v0.20.1" {
		t.Errorf("image %s", c.Image)
	}
	if ds.Spec.Template.Labels[volumes.LabelEngineVersion] != "0.20.1" {
		t.Errorf("engine-version label %q, want the version as written", ds.Spec.Template.Labels[volumes.LabelEngineVersion])
	}
	// A taint without value is tolerated by key, never by a blanket Exists.
	equalJSON(t, "tolerations", spec.Tolerations, []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}})
	if got := *spec.TerminationGracePeriodSeconds; got != 1200 {
		t.Errorf("terminationGracePeriodSeconds %d", got)
	}
	if got, want := c.Lifecycle.PreStop.Exec.Command, nodepools.EngineDrainCommand(nodepools.DrainSeconds(1200)); !slices.Equal(got, want) {
		t.Errorf("preStop %q, want %q: bounded by the grace period", got, want)
	}
	if spec.Volumes[0].HostPath.Path != "/mnt/k8s-disks/0/cache" || spec.Volumes[1].HostPath.Path != "/run/engine" {
		t.Errorf("host paths %s, %s", spec.Volumes[0].HostPath.Path, spec.Volumes[1].HostPath.Path)
	}
	equalJSON(t, "resources", c.Resources, corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}, Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi")}})
}

func TestEngineImage(t *testing.T) {
	for _, tc := range []struct{ image, version, want string }{
		{"registry.dagger.io/engine", "v0.19.7", "registry.dagger.io/engine:v0.19.7"},
		{"registry.dagger.io/engine", "0.19.7", "registry.dagger.io/engine:v0.19.7"},
		{"registry.dagger.io/engine", "v0.19.7-rc.1", "registry.dagger.io/engine:v0.19.7-rc.1"},
		{"localhost:5000/engine", "v0.19.7", "localhost:5000/engine:v0.19.7"},
		{"registry.dagger.io/engine:v0.19.7-gpu", "v0.19.7", "registry.dagger.io/engine:v0.19.7-gpu"},
		{"registry.dagger.io/engine@sha256:abcd", "v0.19.7", "registry.dagger.io/engine@sha256:abcd"},
	} {
		if got := nodepools.EngineImage(&config.Engine{Image: tc.image, Version: tc.version}); got != tc.want {
			t.Errorf("EngineImage(%s, %s) = %s, want %s", tc.image, tc.version, got, tc.want)
		}
	}
}

func TestEngineConfigMap(t *testing.T) {
	cfg := mustParse(t, configYAML("",
		enginePool("gc", "{version: v0.19.7, gc: {maxUsedSpace: 75%, reservedSpace: 100GB, minFreeSpace: 20%}}", ""),
		pool("plain", "")))
	cms, dss := engineObjects(t, cfg, nsOpts)
	cm := cms["gc"]
	if cm == nil || cm.Namespace != "warmpool-system" || cm.Name != "warmpool-engine-gc" {
		t.Fatalf("engine ConfigMap %+v", cm)
	}
	want := "{\n  \"gc\": {\n    \"maxUsedSpace\": \"75%\",\n    \"reservedSpace\": \"100GB\",\n    \"minFreeSpace\": \"20%\"\n  }\n}\n"
	if got := cm.Data["engine.json"]; got != want {
		t.Errorf("engine.json:\n%s\nwant:\n%s", got, want)
	}
	if got := cms["plain"].Data["engine.json"]; got != "{}\n" {
		t.Errorf("engine.json without gc = %q, want {} (the engine's defaults)", got)
	}
	for pool, cm := range cms {
		sum := sha256.Sum256([]byte(cm.Data["engine.json"]))
		if got := dss[pool].Spec.Template.Annotations[nodepools.AnnotationEngineConfig]; got != hex.EncodeToString(sum[:]) {
			t.Errorf("pool %s: checksum annotation %q is not engine.json's sha256", pool, got)
		}
	}
	if dss["gc"].Spec.Template.Annotations[nodepools.AnnotationEngineConfig] == dss["plain"].Spec.Template.Annotations[nodepools.AnnotationEngineConfig] {
		t.Error("different engine.json, same checksum: a config change would not roll the pods")
	}
}

// TestEngineTolerationsEveryPool: every engine DaemonSet warmpool renders, whatever the pool's
// taint, tolerates that taint and nothing that keeps an engine from a clean, timely stop.
func TestEngineTolerationsEveryPool(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("..", "deploy", "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := []string{string(example), threePools(), configYAML("",
		pool("noexec", "taint: {key: ci, value: heavy, effect: NoExecute}\ncache: {enabled: true}\n"),
		pool("novalue", "taint: {key: example.com/runners, effect: NoSchedule}\n"),
		enginePool("longgrace", "{version: v0.19.7, terminationGracePeriodSeconds: 7200}", "terminationGracePeriod: 3h\n"))}
	forbidden := []corev1.Taint{nodepools.StartupTaint, karpv1.DisruptedNoScheduleTaint,
		{Key: "unrelated.example.com/taint", Value: "x", Effect: corev1.TaintEffectNoSchedule}}
	seen := 0
	for _, doc := range docs {
		cfg := mustParse(t, doc)
		_, dss := engineObjects(t, cfg, nsOpts)
		for i := range cfg.Pools {
			p := &cfg.Pools[i]
			ds := dss[p.Name]
			if ds == nil {
				t.Errorf("pool %s: no engine DaemonSet", p.Name)
				continue
			}
			seen++
			tols := ds.Spec.Template.Spec.Tolerations
			tolerates := func(taint corev1.Taint) bool {
				return slices.ContainsFunc(tols, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(klog.Background(), &taint, true) })
			}
			if !tolerates(*p.Taint) {
				t.Errorf("pool %s: engine does not tolerate its runner taint %v: %v", p.Name, *p.Taint, tols)
			}
			for _, taint := range forbidden {
				if tolerates(taint) {
					t.Errorf("pool %s: engine tolerates %v: %v", p.Name, taint, tols)
				}
			}
			for _, tol := range tols {
				if tol.Key == "" {
					t.Errorf("pool %s: blanket toleration %+v", p.Name, tol)
				}
			}
			if len(tols) != 1 {
				t.Errorf("pool %s: %d tolerations, want the runner taint's only: %v", p.Name, len(tols), tols)
			}
			grace := *ds.Spec.Template.Spec.TerminationGracePeriodSeconds
			if grace < 330 || time.Duration(grace)*time.Second >= p.TerminationGracePeriod.Duration {
				t.Errorf("pool %s: engine grace %ds not within [330s, node grace %s)", p.Name, grace, p.TerminationGracePeriod.Duration)
			}
			if v := nodepools.CheckEngineDaemonSet(p, ds); len(v) > 0 {
				t.Errorf("pool %s: own DaemonSet violates the contract: %q", p.Name, v)
			}
		}
	}
	if seen < 7 {
		t.Errorf("checked %d pools, want every pool of every config (7)", seen)
	}
}

func TestExistingDaemonSetIsNotGenerated(t *testing.T) {
	cfg := mustParse(t, configYAML("",
		enginePool("own", "{version: v0.19.7, existingDaemonSet: {matchLabels: {app: dagger}}}", ""),
		pool("gen", "")))
	var names []string
	for _, o := range nodepools.Render(cfg, nsOpts) {
		names = append(names, fmt.Sprintf("%s/%s", o.GetObjectKind().GroupVersionKind().Kind, o.GetName()))
	}
	want := []string{"EC2NodeClass/warmpool-own", "NodePool/warmpool-own",
		"EC2NodeClass/warmpool-gen", "NodePool/warmpool-gen", "ConfigMap/warmpool-engine-gen", "DaemonSet/warmpool-engine-gen"}
	if !slices.Equal(names, want) {
		t.Errorf("rendered %v, want %v", names, want)
	}
}

func TestEngineObjectsAreRecognised(t *testing.T) {
	cms, dss := engineObjects(t, mustParse(t, threePools()), nsOpts)
	for pool := range dss {
		if !nodepools.IsEngineObject(dss[pool].Labels) || !nodepools.IsEngineObject(cms[pool].Labels) {
			t.Errorf("pool %s: engine objects not recognised by their labels", pool)
		}
	}
	// A NodePool is warmpool's, but not an engine object: pruning engine objects skips it.
	if nodepools.IsEngineObject(nodepools.OwnedLabels("p")) {
		t.Error("owned labels alone taken for an engine object")
	}
	if nodepools.IsEngineObject(map[string]string{"app.kubernetes.io/name": "dagger-engine"}) {
		t.Error("an engine object someone else made taken for warmpool's")
	}
}

func TestDrainSeconds(t *testing.T) {
	for grace, want := range map[int64]int64{900: 570, 330: 0, 331: 1, 30: 0} {
		if got := nodepools.DrainSeconds(grace); got != want {
			t.Errorf("DrainSeconds(%d) = %d, want %d", grace, got, want)
		}
	}
}

// TestEngineToolsImage: the init container runs the image the caller names (the controller's
// --copier-image, warmpool's own), and warmpool's default otherwise.
func TestEngineToolsImage(t *testing.T) {
	cfg := mustParse(t, configYAML("", pool("p", "")))
	opts := nsOpts
	opts.ToolsImage = "registry.example.com/warmpool:v1.2.3"
	_, dss := engineObjects(t, cfg, opts)
	if got := dss["p"].Spec.Template.Spec.InitContainers[0].Image; got != opts.ToolsImage {
		t.Errorf("init container image %s, want %s", got, opts.ToolsImage)
	}
	if got := nodepools.EngineDaemonSet(&cfg.Pools[0], "ns", "").Spec.Template.Spec.InitContainers[0].Image; got != nodepools.DefaultToolsImage {
		t.Errorf("init container image %s without one named, want %s", got, nodepools.DefaultToolsImage)
	}
}

func TestHoldDaemonSet(t *testing.T) {
	cfg := mustParse(t, configYAML("", pool("p", "cache: {enabled: true}\nterminationGracePeriod: 45m\n"), pool("nocache", "")))
	var hold *appsv1.DaemonSet
	for _, o := range nodepools.Render(cfg, nsOpts) {
		if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == nodepools.HoldName(ds.Labels[nodepools.LabelPool]) {
			if ds.Labels[nodepools.LabelPool] == "nocache" {
				t.Errorf("pool without the cache got hold DaemonSet %s: it would hold disruptions for nothing", ds.Name)
			}
			hold = ds
		}
	}
	if hold == nil {
		t.Fatal("no hold DaemonSet rendered for the cache-enabled pool")
	}
	if hold.Name != "warmpool-hold-p" || hold.Namespace != "warmpool-system" {
		t.Errorf("hold DaemonSet %s/%s", hold.Namespace, hold.Name)
	}
	// Pruned with the engine objects when the cache is turned off.
	if !nodepools.IsEngineObject(hold.Labels) {
		t.Errorf("hold DaemonSet labels %v not recognised as warmpool's engine objects, so never pruned", hold.Labels)
	}
	pod := hold.Spec.Template
	// Its pods must never be taken for engine pods (the save evicts and waits for those).
	if sel := nodepools.EngineSelector("p"); pod.Labels[volumes.LabelEngineName] == sel[volumes.LabelEngineName] {
		t.Errorf("hold pod labels %v match the engine selector %v", pod.Labels, sel)
	}
	if !reflect.DeepEqual(hold.Spec.Selector.MatchLabels, nodepools.HoldSelector("p")) {
		t.Errorf("selector %v, want %v", hold.Spec.Selector.MatchLabels, nodepools.HoldSelector("p"))
	}
	spec := pod.Spec
	if got := *spec.TerminationGracePeriodSeconds; got != 2700 {
		t.Errorf("terminationGracePeriodSeconds %d, want the pool's 45m (2700)", got)
	}
	if spec.PriorityClassName != "" {
		t.Errorf("priorityClassName %q: a critical pod is drained after the engine's group, not with it", spec.PriorityClassName)
	}
	if spec.ServiceAccountName != nodepools.HoldServiceAccount {
		t.Errorf("serviceAccountName %q, want %q (the chart's, with get on nodes)", spec.ServiceAccountName, nodepools.HoldServiceAccount)
	}
	for _, tol := range spec.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" || tol.Key == karpv1.DisruptedTaintKey {
			t.Errorf("toleration %+v: Karpenter neither evicts nor waits for a pod tolerating its disrupted taint", tol)
		}
		if tol.Key == nodepools.StartupTaintKey {
			t.Errorf("toleration %+v: a node still restoring runs no engine and has nothing to hold for", tol)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != nodepools.DefaultToolsImage || !reflect.DeepEqual(c.Command, nodepools.HoldCommand()) {
		t.Errorf("container %s %v, want warmpool's image running %v", c.Image, c.Command, nodepools.HoldCommand())
	}
	if want := nodepools.HoldWaitCommand(2700); c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil ||
		!reflect.DeepEqual(c.Lifecycle.PreStop.Exec.Command, want) {
		t.Errorf("preStop %+v, want exec %v", c.Lifecycle, want)
	}
	if len(c.Env) != 1 || c.Env[0].Name != nodepools.HoldNodeEnv || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env %+v, want %s from spec.nodeName", c.Env, nodepools.HoldNodeEnv)
	}
	if sc := c.SecurityContext; sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.Privileged, false) {
		t.Errorf("securityContext %+v, want non-root, read-only, unprivileged", sc)
	}
	if len(c.VolumeMounts) != 0 {
		t.Errorf("mounts %v: the hold reads only the API server", c.VolumeMounts)
	}
}
