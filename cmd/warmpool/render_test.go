package main

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kwokv1alpha1 "sigs.k8s.io/karpenter/kwok/apis/v1alpha1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/yaml"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

var exampleConfig = filepath.Join("..", "..", "deploy", "examples", "config.yaml")

// run executes the root command in-process, as main does, with stdin, and returns what it
// printed on stdout and stderr.
func run(t *testing.T, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := rootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd.SetIn(stdin)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// docs splits a multi-document YAML stream as `kubectl apply -f -` would.
func docs(t *testing.T, stream string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for i, doc := range strings.Split(stream, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("document %d does not parse: %v\n%s", i, err, doc)
		}
		out = append(out, m)
	}
	return out
}

func kindsAndNames(ds []map[string]any) []string {
	var out []string
	for _, d := range ds {
		name, _ := d["metadata"].(map[string]any)["name"].(string)
		out = append(out, d["kind"].(string)+"/"+name)
	}
	return out
}

func TestRenderExample(t *testing.T) {
	stdout, stderr, err := run(t, nil, "render", "-f", exampleConfig)
	if err != nil {
		t.Fatalf("render: %v\nstderr: %s", err, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr not empty: %q", stderr)
	}
	ds := docs(t, stdout)
	want := []string{
		"EC2NodeClass/warmpool-dagger-amd64", "NodePool/warmpool-dagger-amd64",
		"ConfigMap/warmpool-engine-dagger-amd64", "DaemonSet/warmpool-engine-dagger-amd64",
		// The example's pools save their cache: each has a hold DaemonSet.
		"DaemonSet/warmpool-hold-dagger-amd64",
		"EC2NodeClass/warmpool-dagger-arm64", "NodePool/warmpool-dagger-arm64",
		"ConfigMap/warmpool-engine-dagger-arm64", "DaemonSet/warmpool-engine-dagger-arm64",
		"DaemonSet/warmpool-hold-dagger-arm64",
	}
	if got := kindsAndNames(ds); !reflect.DeepEqual(got, want) {
		t.Fatalf("documents %v, want %v", got, want)
	}
	for _, d := range ds[2:5] {
		if ns := d["metadata"].(map[string]any)["namespace"]; ns != "warmpool" {
			t.Errorf("%s in namespace %v, want the default warmpool", d["kind"], ns)
		}
	}

	// Each document reads back strictly into its type.
	parts := strings.Split(stdout, "\n---\n")
	for i, target := range []any{&awsv1.EC2NodeClass{}, &karpv1.NodePool{}, &corev1.ConfigMap{}, &appsv1.DaemonSet{}, &appsv1.DaemonSet{},
		&awsv1.EC2NodeClass{}, &karpv1.NodePool{}, &corev1.ConfigMap{}, &appsv1.DaemonSet{}, &appsv1.DaemonSet{}} {
		if err := yaml.UnmarshalStrict([]byte(parts[i]), target); err != nil {
			t.Errorf("document %d: %v", i, err)
		}
	}
	np := &karpv1.NodePool{}
	if err := yaml.UnmarshalStrict([]byte(parts[1]), np); err != nil {
		t.Fatal(err)
	}
	if np.Spec.Template.Spec.NodeClassRef.Kind != "EC2NodeClass" || np.Spec.Template.Spec.Requirements[0].Key != "karpenter.k8s.aws/instance-local-nvme" {
		t.Errorf("NodePool read back: nodeClassRef %+v, first requirement %+v", np.Spec.Template.Spec.NodeClassRef, np.Spec.Template.Spec.Requirements[0])
	}

	// The command prints exactly what the library renders, which the controller applies.
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := nodepools.YAML(nodepools.Render(cfg, nodepools.Options{NodeClass: nodepools.EC2NodeClass, Namespace: "warmpool"}))
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(lib) {
		t.Errorf("render output differs from nodepools.YAML(Render(...))")
	}
	// And the golden file of the nodepools package.
	golden, err := os.ReadFile(filepath.Join("..", "..", "nodepools", "testdata", "config.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(golden) {
		t.Errorf("render output differs from nodepools/testdata/config.golden.yaml")
	}
}

func TestRenderKWOK(t *testing.T) {
	for _, file := range []string{exampleConfig, filepath.Join("..", "..", "deploy", "examples", "local.yaml")} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			stdout, stderr, err := run(t, nil, "render", "-f", file, "--node-class", "kwok")
			if err != nil {
				t.Fatalf("render: %v\nstderr: %s", err, stderr)
			}
			ds := docs(t, stdout)
			parts := strings.Split(stdout, "\n---\n")
			// Drop the engine documents: what is left are node class + NodePool pairs.
			for i := len(ds) - 1; i >= 0; i-- {
				if k := ds[i]["kind"]; k == "ConfigMap" || k == "DaemonSet" {
					ds, parts = slices.Delete(ds, i, i+1), slices.Delete(parts, i, i+1)
				}
			}
			if len(ds)%2 != 0 || len(ds) == 0 {
				t.Fatalf("%d documents, want node class + NodePool pairs", len(ds))
			}
			for i := 0; i < len(ds); i += 2 {
				if ds[i]["kind"] != "KWOKNodeClass" || ds[i]["apiVersion"] != "karpenter.kwok.sh/v1alpha1" {
					t.Errorf("document %d is %v %v, want KWOKNodeClass", i, ds[i]["apiVersion"], ds[i]["kind"])
				}
				if err := yaml.UnmarshalStrict([]byte(parts[i]), &kwokv1alpha1.KWOKNodeClass{}); err != nil {
					t.Errorf("document %d: %v", i, err)
				}
				np := &karpv1.NodePool{}
				if err := yaml.UnmarshalStrict([]byte(parts[i+1]), np); err != nil {
					t.Fatalf("document %d: %v", i+1, err)
				}
				ref := np.Spec.Template.Spec.NodeClassRef
				if ref.Group != "karpenter.kwok.sh" || ref.Kind != "KWOKNodeClass" || ref.Name != ds[i]["metadata"].(map[string]any)["name"] {
					t.Errorf("NodePool %s nodeClassRef %+v", np.Name, ref)
				}
			}
			if strings.Contains(stdout, "EC2NodeClass") {
				t.Error("kwok output mentions EC2NodeClass")
			}
		})
	}
}

func TestRenderStdin(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	fromStdin, stderr, err := run(t, bytes.NewReader(data), "render", "-f", "-")
	if err != nil {
		t.Fatalf("render -f -: %v\nstderr: %s", err, stderr)
	}
	fromFile, _, err := run(t, nil, "render", "-f", exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if fromStdin != fromFile {
		t.Errorf("stdin output differs from file output")
	}
	if n := len(docs(t, fromStdin)); n != 10 {
		t.Errorf("%d documents, want 10", n)
	}
}

// badConfig has several independent problems; each must be reported on its own line.
const badConfig = `apiVersion: warmpool.io/v1alpha1
kind: WarmpoolConfig
nodeClass:
  subnetSelectorTerms:
    - tags: {karpenter.sh/discovery: ci}
  securityGroupSelectorTerms:
    - tags: {karpenter.sh/discovery: ci}
pools:
  - name: dagger
    architectures: [x86]
    nvme:
      minSizeGB: 0
    weight: 200
    engine: {version: v0.19.7}
`

func TestRenderBadConfig(t *testing.T) {
	wantLines := []string{
		`nodeClass.role: required: one of role or instanceProfile`,
		`pools[0].architectures[0]: supported values: "amd64", "arm64", got "x86"`,
		`pools[0].nvme.minSizeGB: must be >= 1, got 0`,
		`pools[0].weight: must be between 1 and 100, got 200`,
	}
	file := writeTemp(t, "bad.yaml", badConfig)
	for _, tc := range []struct {
		name  string
		stdin io.Reader
		args  []string
	}{
		{"file", nil, []string{"render", "-f", file}},
		{"stdin", strings.NewReader(badConfig), []string{"render", "-f", "-"}},
		{"kwok", nil, []string{"render", "-f", file, "--node-class", "kwok"}},
		{"discover", nil, []string{"render", "-f", file, "--discover", "--region", "us-east-1", "--endpoint", "http://127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := run(t, tc.stdin, tc.args...)
			if !errors.Is(err, errInvalidConfig) {
				t.Errorf("error %v, want errInvalidConfig (exit 1)", err)
			}
			if stdout != "" {
				t.Errorf("stdout not empty:\n%s", stdout)
			}
			got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if !reflect.DeepEqual(got, wantLines) {
				t.Errorf("stderr lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
			}
		})
	}
}

func TestRenderMalformedAndEmpty(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"malformed YAML", "apiVersion: [\n", "<document>: malformed YAML"},
		{"empty", "", "<document>: required: the document is empty"},
		{"unknown field", strings.Replace(badConfig, "    weight: 200\n", "    wieght: 20\n", 1), `pools[0].wieght: unknown field`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := run(t, nil, "render", "-f", writeTemp(t, "c.yaml", tc.content))
			if !errors.Is(err, errInvalidConfig) {
				t.Errorf("error %v, want errInvalidConfig", err)
			}
			if stdout != "" {
				t.Errorf("stdout not empty:\n%s", stdout)
			}
			if !strings.HasPrefix(stderr, tc.want) {
				t.Errorf("stderr %q, want it to start with %q", stderr, tc.want)
			}
		})
	}
}

func TestRenderMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	stdout, stderr, err := run(t, nil, "render", "-f", missing)
	if err == nil {
		t.Fatal("no error for a missing file")
	}
	if errors.Is(err, errInvalidConfig) {
		t.Errorf("a missing file is not an invalid config: %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "reading config") || !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q should say it could not read %s", err, missing)
	}
	if stdout != "" || stderr != "" {
		t.Errorf("printed stdout %q stderr %q; main prints the error", stdout, stderr)
	}
}

func TestRenderFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad node class", []string{"render", "-f", exampleConfig, "--node-class", "foo"}, `node class "foo": must be "ec2" or "kwok"`},
		{"no file", []string{"render"}, `required flag(s) "file" not set`},
		{"extra argument", []string{"render", "-f", exampleConfig, "extra"}, `unknown command "extra"`},
		{"unknown flag", []string{"render", "-f", exampleConfig, "--bogus"}, "unknown flag: --bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, _, err := run(t, nil, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(stdout, "apiVersion:") {
				t.Errorf("objects printed despite the error:\n%s", stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "controller", "render"}},
		{[]string{"render", "--help"}, []string{"Usage:", "warmpool render -f config.yaml", "--file", "--node-class", "--discover", "--region", "--endpoint", `("-" for stdin)`}},
		{[]string{"controller", "--help"}, []string{"Usage:", "warmpool controller [flags]", "--kubeconfig", "--namespace", "--config-map", "--node-class", "--leader-elect", "--zap-log-level"}},
		{[]string{"help", "render"}, []string{"Usage:", "--discover"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, err := run(t, nil, tc.args...)
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("help lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// fakeEC2 starts the EC2 fake on 127.0.0.1 and makes the SDK's default chain hermetic:
// static credentials from the environment, no shared files, no IMDS.
func fakeEC2(t *testing.T) *ec2fake.Server {
	t.Helper()
	srv, err := ec2fake.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIDWARMPOOLCLI",
		"AWS_SECRET_ACCESS_KEY":       "secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_DEFAULT_PROFILE":         "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_EC2":        "",
		"AWS_CA_BUNDLE":               "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "no-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "no-credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
	return srv
}

// row is one line of the --discover table.
type row struct{ pool, instanceType, nvmeGB string }

func parseTable(t *testing.T, out string) []row {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) == 0 || !reflect.DeepEqual(strings.Fields(lines[0]), []string{"POOL", "INSTANCE", "TYPE", "ARCH", "VCPU", "MEMORY", "GiB", "NVME", "GB"}) {
		t.Fatalf("no table header:\n%s", out)
	}
	var rows []row
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) == 6 {
			rows = append(rows, row{f[0], f[1], f[5]})
		} else {
			rows = append(rows, row{f[0], strings.Join(f[1:], " "), ""})
		}
	}
	return rows
}

func TestRenderDiscover(t *testing.T) {
	srv := fakeEC2(t)
	stdout, stderr, err := run(t, nil, "render", "-f", exampleConfig, "--discover", "--endpoint", srv.URL, "--region", "us-east-1")
	if err != nil {
		t.Fatalf("render --discover: %v\nstderr: %s", err, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr not empty: %q", stderr)
	}
	// From ec2fake.DefaultCatalogue: dagger-amd64 is categories c,m, generation >= 6, amd64,
	// NVMe > 200 GB; dagger-arm64 is families c7gd,m7gd, arm64, NVMe > 100 GB. Sorted by name.
	want := []row{
		{"dagger-amd64", "c6id.2xlarge", "474"},
		{"dagger-amd64", "c6id.4xlarge", "950"},
		{"dagger-amd64", "c6id.8xlarge", "1900"},
		{"dagger-amd64", "c6id.metal", "7600"},
		{"dagger-amd64", "c6id.xlarge", "237"},
		{"dagger-amd64", "m6id.2xlarge", "474"},
		{"dagger-amd64", "m6id.4xlarge", "950"},
		{"dagger-amd64", "m6id.xlarge", "237"},
		{"dagger-arm64", "c7gd.2xlarge", "474"},
		{"dagger-arm64", "c7gd.4xlarge", "950"},
		{"dagger-arm64", "c7gd.large", "118"},
		{"dagger-arm64", "c7gd.xlarge", "237"},
		{"dagger-arm64", "m7gd.2xlarge", "474"},
		{"dagger-arm64", "m7gd.large", "118"},
		{"dagger-arm64", "m7gd.metal", "3800"},
		{"dagger-arm64", "m7gd.xlarge", "237"},
	}
	if got := parseTable(t, stdout); !reflect.DeepEqual(got, want) {
		t.Errorf("discover table rows\n got %v\nwant %v\noutput:\n%s", got, want, stdout)
	}
	if want := "dagger-amd64 c6id.2xlarge amd64 8 16.0 474"; strings.Join(strings.Fields(strings.Split(stdout, "\n")[1]), " ") != want {
		t.Errorf("first row is not %q:\n%s", want, stdout)
	}
	reqs := srv.Requests()
	if len(reqs) == 0 {
		t.Fatal("the fake saw no request")
	}
	for _, r := range reqs {
		if r.AccessKeyID != "AKIDWARMPOOLCLI" || r.Action != "DescribeInstanceTypes" {
			t.Errorf("request %+v: want DescribeInstanceTypes signed with the environment's key", r)
		}
	}
	if strings.Contains(stdout, "apiVersion:") {
		t.Error("--discover printed objects too")
	}
}

func TestRenderDiscoverNoneAdmitted(t *testing.T) {
	srv := fakeEC2(t)
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	// dagger-arm64 asks for more NVMe than any c7gd/m7gd has; dagger-amd64 still admits types.
	doc := strings.Replace(string(data), "      minSizeGB: 100\n", "      minSizeGB: 5000\n", 1)
	if doc == string(data) {
		t.Fatal("test premise: the example's arm64 pool no longer has minSizeGB: 100")
	}
	stdout, stderr, err := run(t, nil, "render", "-f", writeTemp(t, "none.yaml", doc), "--discover", "--endpoint", srv.URL, "--region", "us-east-1")
	if !errors.Is(err, errInvalidConfig) {
		t.Errorf("error %v, want errInvalidConfig (exit 1)", err)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], `pools[1]: no instance type in the region meets this pool's requirements`) || !strings.Contains(lines[0], `"dagger-arm64"`) {
		t.Errorf("stderr %q, want one pools[1] line naming dagger-arm64", stderr)
	}
	rows := parseTable(t, stdout)
	var none bool
	for _, r := range rows {
		if r.pool == "dagger-arm64" {
			none = r.nvmeGB == "" && strings.HasPrefix(r.instanceType, "(none")
		}
	}
	if !none || len(rows) != 9 {
		t.Errorf("table should list 8 dagger-amd64 types and a (none) row for dagger-arm64:\n%s", stdout)
	}
}

func TestRenderDiscoverEndpointFromConfig(t *testing.T) {
	srv := fakeEC2(t)
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data) + "discovery:\n  region: eu-west-1\n  endpoint: " + srv.URL + "\n"
	stdout, stderr, err := run(t, nil, "render", "-f", writeTemp(t, "c.yaml", doc), "--discover")
	if err != nil {
		t.Fatalf("render --discover: %v\nstderr: %s", err, stderr)
	}
	if rows := parseTable(t, stdout); len(rows) != 16 {
		t.Errorf("%d rows, want 16:\n%s", len(rows), stdout)
	}
	if len(srv.Requests()) == 0 {
		t.Error("discovery.endpoint from the config was not used")
	}
}

// TestRenderNamespace: the engine objects go in the namespace given, by default the one the
// controller runs in, so `render | kubectl apply` matches what the controller applies.
func TestRenderNamespace(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	if def := controllerCommand().Flags().Lookup("namespace").DefValue; def != defaultNamespace {
		t.Errorf("controller --namespace default %q, render's %q", def, defaultNamespace)
	}
	stdout, stderr, err := run(t, nil, "render", "-f", exampleConfig, "--namespace", "ci-system")
	if err != nil {
		t.Fatalf("render: %v\nstderr: %s", err, stderr)
	}
	engines := 0
	for _, d := range docs(t, stdout) {
		ns, hasNS := d["metadata"].(map[string]any)["namespace"]
		switch d["kind"] {
		case "ConfigMap", "DaemonSet":
			engines++
			if ns != "ci-system" {
				t.Errorf("%s in namespace %v, want ci-system", d["kind"], ns)
			}
		default:
			if hasNS {
				t.Errorf("cluster-scoped %s has namespace %v", d["kind"], ns)
			}
		}
	}
	if engines != 6 {
		t.Errorf("%d engine documents, want a ConfigMap, an engine and a hold DaemonSet per pool (6)", engines)
	}
}
