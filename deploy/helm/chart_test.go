package helm

// The chart renders as `helm install` would for default and full values, lints, rejects bad
// values by its schema, and carries what the controller expects.

import (
	"bytes"
	"errors"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/operator"
)

const leaderLabel = operator.LeaderLabel

// checkConfigParses asserts the controller's own parser accepts the rendered config.yaml.
func checkConfigParses(t *testing.T, rendered string) {
	t.Helper()
	cfg, err := config.Parse([]byte(rendered))
	if err != nil {
		t.Fatalf("the controller rejects the rendered config.yaml: %v\n%s", err, rendered)
	}
	if len(cfg.Pools) == 0 {
		t.Fatalf("rendered config.yaml has no pools:\n%s", rendered)
	}
}

const (
	releaseName = "warmpool"
	namespace   = "warmpool"
)

func TestMain(m *testing.M) {
	// The chart's dashboard is a symlink to deploy/dashboards/warmpool.json; Helm's loader
	// logs that on every load through the standard logger.
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// repoRoot is the repository root, found from this file's location.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "deploy", "helm", "warmpool") }

func kubeVersionOf(t testing.TB) *chartutil.KubeVersion {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// install renders the chart as `helm install --dry-run` does; only its error is of interest.
func install(t testing.TB, vals map[string]any) (*release.Release, error) {
	t.Helper()
	rel, _, err := Render(releaseName, namespace, vals)
	return rel, err
}

// render renders the chart and fails the test if it cannot.
func render(t testing.TB, vals map[string]any) (*release.Release, []*unstructured.Unstructured) {
	t.Helper()
	rel, objs, err := Render(releaseName, namespace, vals)
	if err != nil {
		t.Fatal(err)
	}
	return rel, objs
}

// fullValues is testdata/full-values.yaml with deploy/examples/config.yaml as its config.
func fullValues(t testing.TB) map[string]any {
	t.Helper()
	vals, err := chartutil.ReadValuesFile(filepath.Join(repoRoot(t), "deploy", "helm", "testdata", "full-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	vals["config"] = cfg
	return vals
}

// find returns the one object of that kind and name, failing the test if there is none.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	var have []string
	for _, o := range objs {
		have = append(have, o.GetKind()+"/"+o.GetName())
	}
	t.Fatalf("no %s %s rendered; have %v", kind, name, have)
	return nil
}

func kinds(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func nested[T any](t testing.TB, o *unstructured.Unstructured, path ...string) T {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	if err != nil || !ok {
		t.Fatalf("%s %s: no field %s (%v)", o.GetKind(), o.GetName(), strings.Join(path, "."), err)
	}
	out, ok := v.(T)
	if !ok {
		t.Fatalf("%s %s: field %s is %T", o.GetKind(), o.GetName(), strings.Join(path, "."), v)
	}
	return out
}

// container returns the controller container of the rendered Deployment.
func container(t testing.TB, deploy *unstructured.Unstructured) map[string]any {
	t.Helper()
	cs := nested[[]any](t, deploy, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("want 1 container, got %d", len(cs))
	}
	return cs[0].(map[string]any)
}

func args(t testing.TB, deploy *unstructured.Unstructured) []string {
	t.Helper()
	var out []string
	for _, a := range container(t, deploy)["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

func TestRenderDefaults(t *testing.T) {
	rel, objs := render(t, nil)
	objs = withoutPeopleRoles(objs) // viewer_test.go checks those
	want := []string{
		"ClusterRole/warmpool", "ClusterRole/warmpool-hold", "ClusterRoleBinding/warmpool", "ClusterRoleBinding/warmpool-hold",
		"ConfigMap/warmpool", "ConfigMap/warmpool-dashboard",
		"Deployment/warmpool", "PodDisruptionBudget/warmpool", "PriorityClass/warmpool-headroom", "Role/warmpool",
		"RoleBinding/warmpool", "Service/warmpool-metrics", "Service/warmpool-webhook", "ServiceAccount/warmpool",
		"ServiceAccount/warmpool-hold",
	}
	if got := kinds(objs); !slices.Equal(got, want) {
		t.Fatalf("rendered objects:\n got %v\nwant %v", got, want)
	}

	d := find(t, objs, "Deployment", "warmpool")
	if r := nested[int64](t, d, "spec", "replicas"); r != 2 {
		t.Errorf("replicas = %d, want 2", r)
	}
	image := "ghcr.io/warmpool/warmpool:" + rel.Chart.Metadata.AppVersion
	if got := container(t, d)["image"]; got != image {
		t.Errorf("image = %v, want %s", got, image)
	}
	for _, a := range []string{
		"controller", "--namespace=warmpool", "--config-map=warmpool", "--node-class=ec2", "--leader-elect=true",
		"--metrics-bind-address=:8080", "--health-probe-bind-address=:8081", "--webhook-bind-address=:8082",
		"--pod-name=$(POD_NAME)", "--copier-image=" + image,
	} {
		if !slices.Contains(args(t, d), a) {
			t.Errorf("controller args %v lack %s", args(t, d), a)
		}
	}
	checkRestricted(t, d)
	if sa := nested[string](t, d, "spec", "template", "spec", "serviceAccountName"); sa != "warmpool" {
		t.Errorf("serviceAccountName = %s", sa)
	}

	cm := find(t, objs, "ConfigMap", "warmpool")
	if data := nested[map[string]any](t, cm, "data"); strings.TrimSpace(data["config.yaml"].(string)) != "" {
		t.Errorf("default config.yaml = %q, want empty", data["config.yaml"])
	}
	if p := find(t, objs, "PodDisruptionBudget", "warmpool"); nested[int64](t, p, "spec", "maxUnavailable") != 1 {
		t.Errorf("PDB maxUnavailable != 1")
	}
	sa := find(t, objs, "ServiceAccount", "warmpool")
	if _, ok := sa.GetAnnotations()["eks.amazonaws.com/role-arn"]; ok {
		t.Error("IRSA annotation rendered without irsaRoleArn (Pod Identity needs none)")
	}
	if !strings.Contains(rel.Info.Notes, "What to check next") || !strings.Contains(rel.Info.Notes, "Pod Identity") {
		t.Errorf("NOTES.txt:\n%s", rel.Info.Notes)
	}
}

// checkRestricted asserts the pod meets the "restricted" Pod Security Standard.
func checkRestricted(t *testing.T, d *unstructured.Unstructured) {
	t.Helper()
	pod := nested[map[string]any](t, d, "spec", "template", "spec", "securityContext")
	if pod["runAsNonRoot"] != true || nestedMap(pod, "seccompProfile")["type"] != "RuntimeDefault" {
		t.Errorf("pod securityContext %v", pod)
	}
	sc := container(t, d)["securityContext"].(map[string]any)
	if sc["runAsNonRoot"] != true || sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false ||
		nestedMap(sc, "seccompProfile")["type"] != "RuntimeDefault" || !slices.Equal(nestedMap(sc, "capabilities")["drop"].([]any), []any{"ALL"}) {
		t.Errorf("container securityContext %v", sc)
	}
	res := container(t, d)["resources"].(map[string]any)
	if nestedMap(res, "requests")["cpu"] == nil || nestedMap(res, "limits")["memory"] == nil {
		t.Errorf("resources %v", res)
	}
}

func nestedMap(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

func TestRenderFullValues(t *testing.T) {
	_, objs := render(t, fullValues(t))
	d := find(t, objs, "Deployment", "warmpool-ci")
	if r := nested[int64](t, d, "spec", "replicas"); r != 3 {
		t.Errorf("replicas = %d", r)
	}
	image := "123456789012.dkr.ecr.eu-west-1.amazonaws.com/warmpool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if got := container(t, d)["image"]; got != image {
		t.Errorf("image = %v, want the digest", got)
	}
	for _, a := range []string{
		"--config-map=warmpool-config", "--metrics-bind-address=:9090", "--health-probe-bind-address=:9091",
		"--webhook-bind-address=:9092", "--leader-elect-lease-duration=30s", "--copier-image=123456789012.dkr.ecr.eu-west-1.amazonaws.com/warmpool:v0.1.0",
		"--zap-log-level=debug", "--zap-encoder=json", "--source-staleness=10m",
	} {
		if !slices.Contains(args(t, d), a) {
			t.Errorf("controller args %v lack %s", args(t, d), a)
		}
	}
	checkRestricted(t, d)

	sa := find(t, objs, "ServiceAccount", "warmpool-controller")
	if got := sa.GetAnnotations()["eks.amazonaws.com/role-arn"]; got != "arn:aws:iam::123456789012:role/warmpool-controller" {
		t.Errorf("IRSA annotation = %q", got)
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		subj := nested[[]any](t, find(t, objs, kind, "warmpool-ci"), "subjects")[0].(map[string]any)
		if subj["name"] != "warmpool-controller" || subj["namespace"] != namespace {
			t.Errorf("%s subject %v", kind, subj)
		}
	}

	// The rendered config is the example, and the controller's own parser accepts it.
	cm := find(t, objs, "ConfigMap", "warmpool-config")
	rendered := nested[map[string]any](t, cm, "data")["config.yaml"].(string)
	checkConfigParses(t, rendered)

	ing := find(t, objs, "Ingress", "warmpool-ci-webhook")
	backend := nested[[]any](t, ing, "spec", "rules")[0].(map[string]any)["http"].(map[string]any)["paths"].([]any)[0].(map[string]any)["backend"].(map[string]any)["service"].(map[string]any)
	if backend["name"] != "warmpool-ci-webhook" || backend["port"].(map[string]any)["number"] != int64(8080) {
		t.Errorf("ingress backend %v", backend)
	}
	sm := find(t, objs, "ServiceMonitor", "warmpool-ci")
	if sm.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
	}
	ms := find(t, objs, "Service", "warmpool-ci-metrics")
	if !selects(nested[map[string]any](t, sm, "spec", "selector", "matchLabels"), ms.GetLabels()) {
		t.Errorf("ServiceMonitor selector does not match the metrics Service labels %v", ms.GetLabels())
	}
	dash := find(t, objs, "ConfigMap", "warmpool-ci-dashboard")
	if dash.GetNamespace() != "monitoring" || dash.GetAnnotations()["grafana_folder"] != "CI" {
		t.Errorf("dashboard ConfigMap %s/%s %v", dash.GetNamespace(), dash.GetName(), dash.GetAnnotations())
	}
}

func selects(selector map[string]any, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// The dashboard ConfigMap carries deploy/dashboards/warmpool.json byte for byte, labelled for
// the Grafana sidecar.
func TestDashboardIsPackaged(t *testing.T) {
	_, objs := render(t, nil)
	cm := find(t, objs, "ConfigMap", "warmpool-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("labels %v lack grafana_dashboard: \"1\"", cm.GetLabels())
	}
	want, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "dashboards", "warmpool.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := nested[map[string]any](t, cm, "data")["warmpool.json"].(string)
	if got != strings.TrimSuffix(string(want), "\n") {
		t.Errorf("packaged dashboard differs from deploy/dashboards/warmpool.json")
	}
}

// The webhook server runs on the leader only: the Service must select the leader's label (the
// one the controller sets) on top of the pods' own labels.
func TestWebhookServiceSelectsLeaderOnly(t *testing.T) {
	_, objs := render(t, nil)
	svc := find(t, objs, "Service", "warmpool-webhook")
	sel := nested[map[string]any](t, svc, "spec", "selector")
	if sel[leaderLabel] != "true" {
		t.Fatalf("webhook Service selector %v lacks %s=true", sel, leaderLabel)
	}
	pod := nested[map[string]any](t, find(t, objs, "Deployment", "warmpool"), "spec", "template", "metadata", "labels")
	podLabels := map[string]string{leaderLabel: "true"}
	for k, v := range pod {
		podLabels[k] = v.(string)
	}
	if !selects(sel, podLabels) {
		t.Errorf("webhook Service selector %v does not match a leader pod %v", sel, podLabels)
	}
	delete(podLabels, leaderLabel)
	if selects(sel, podLabels) {
		t.Errorf("webhook Service selector %v matches a standby pod %v", sel, podLabels)
	}
	if port := nested[[]any](t, svc, "spec", "ports")[0].(map[string]any)["targetPort"]; port != "webhook" {
		t.Errorf("targetPort %v", port)
	}
	metrics := nested[map[string]any](t, find(t, objs, "Service", "warmpool-metrics"), "spec", "selector")
	if _, ok := metrics[leaderLabel]; ok {
		t.Errorf("metrics Service selects the leader only; both replicas should be scraped")
	}
}

func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": nil, "full": fullValues(t)} {
		t.Run(name, func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace, l.KubeVersion = namespace, kubeVersionOf(t)
			res := l.Run([]string{chartDir(t)}, vals)
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if len(res.Errors) > 0 {
				t.Errorf("helm lint --strict: %v", errors.Join(res.Errors...))
			}
		})
	}
}

// Bad values fail `helm install` on the schema, with a message that names the key.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		key  string
	}{
		{"replicas as a word", map[string]any{"replicaCount": "two"}, "/replicaCount"},
		{"zero replicas", map[string]any{"replicaCount": 0}, "/replicaCount"},
		{"unknown top-level key", map[string]any{"replicas": 2}, "'replicas'"},
		{"unknown nested key", map[string]any{"webhook": map[string]any{"ingres": map[string]any{}}}, "'ingres'"},
		{"image.repository removed", map[string]any{"image": map[string]any{"repository": nil}}, "repository"},
		{"image.repository empty", map[string]any{"image": map[string]any{"repository": ""}}, "/image/repository"},
		{"unknown node class", map[string]any{"nodeClass": "gce"}, "/nodeClass"},
		{"duration in words", map[string]any{"leaderElection": map[string]any{"leaseDuration": "15 seconds"}}, "/leaderElection/leaseDuration"},
		{"not an IAM role ARN", map[string]any{"serviceAccount": map[string]any{"irsaRoleArn": "warmpool-role"}}, "/serviceAccount/irsaRoleArn"},
		{"port out of range", map[string]any{"metrics": map[string]any{"port": 70000}}, "/metrics/port"},
		{"config not a mapping", map[string]any{"config": "pools: []"}, "/config"},
		{"label value not a string", map[string]any{"dashboard": map[string]any{"labels": map[string]any{"grafana_dashboard": 1}}}, "/dashboard/labels/grafana_dashboard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := install(t, tc.vals)
			if err == nil {
				t.Fatalf("values %v accepted", tc.vals)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error does not name %s:\n%v", tc.key, err)
			}
		})
	}
}

// Every flag the chart passes exists in the binary: a renamed flag would crash-loop the pods.
func TestArgsAreControllerFlags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "warmpool")
	build := exec.Command("go", "build", "-o", bin, "./cmd/warmpool")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	help, err := exec.Command(bin, "controller", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("warmpool controller --help: %v\n%s", err, help)
	}
	for name, vals := range map[string]map[string]any{"defaults": nil, "full": fullValues(t)} {
		_, objs := render(t, vals)
		var d *unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() == "Deployment" {
				d = o
			}
		}
		a := args(t, d)
		if a[0] != "controller" {
			t.Errorf("%s: first arg %q, want the controller subcommand", name, a[0])
		}
		for _, arg := range a[1:] {
			flag, _, _ := strings.Cut(arg, "=")
			if !bytes.Contains(help, []byte("  "+flag+" ")) && !bytes.Contains(help, []byte(", "+flag+" ")) {
				t.Errorf("%s: the chart passes %s, which `warmpool controller` does not have", name, flag)
			}
		}
	}
}
