package arcsuite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"warmpool.io/warmpool/controller/queue"
	"warmpool.io/warmpool/e2e/cluster"
)

// The ARC source's tests against a real etcd + kube-apiserver (envtest, binaries in <repo>/bin
// from `make tools`) serving ARC's two CRDs, started on first use and stopped by TestMain.
// They live apart from the queue package's own tests so those need no control plane (make
// test-unit); the shapes the API server would refuse are tested there, with a stub reader.
//
// ARC's Go module is not served by the module proxy this project can reach, so its generated
// CRDs cannot be read from the module cache. These are written from ARC's CRDs
// (config/crd/bases/actions.github.com_{autoscalingrunnersets,ephemeralrunnersets}.yaml, v0.x):
// the same group, version, names, scope, status subresource, and the same types and
// validation for every field warmpool reads or the tests write; the pod templates, which ARC
// validates as full PodTemplateSpecs, are kept unpruned instead.
const arcAutoscalingRunnerSetCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: autoscalingrunnersets.actions.github.com
spec:
  group: actions.github.com
  names:
    kind: AutoscalingRunnerSet
    listKind: AutoscalingRunnerSetList
    plural: autoscalingrunnersets
    singular: autoscalingrunnerset
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - {jsonPath: .spec.minRunners, name: Minimum Runners, type: integer}
    - {jsonPath: .spec.maxRunners, name: Maximum Runners, type: integer}
    - {jsonPath: .status.currentRunners, name: Current Runners, type: integer}
    - {jsonPath: .status.state, name: State, type: string}
    - {jsonPath: .status.pendingEphemeralRunners, name: Pending Runners, type: integer}
    - {jsonPath: .status.runningEphemeralRunners, name: Running Runners, type: integer}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            properties:
              githubConfigSecret: {type: string}
              githubConfigUrl: {type: string}
              runnerGroup: {type: string}
              runnerScaleSetName: {type: string}
              maxRunners: {type: integer, minimum: 0}
              minRunners: {type: integer, minimum: 0}
              template: {type: object, x-kubernetes-preserve-unknown-fields: true}
              listenerTemplate: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            properties:
              currentRunners: {type: integer}
              failedEphemeralRunners: {type: integer}
              pendingEphemeralRunners: {type: integer}
              runningEphemeralRunners: {type: integer}
              state: {type: string}
`

const arcEphemeralRunnerSetCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ephemeralrunnersets.actions.github.com
spec:
  group: actions.github.com
  names:
    kind: EphemeralRunnerSet
    listKind: EphemeralRunnerSetList
    plural: ephemeralrunnersets
    singular: ephemeralrunnerset
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - {jsonPath: .spec.replicas, name: DesiredReplicas, type: integer}
    - {jsonPath: .status.currentReplicas, name: CurrentReplicas, type: integer}
    - {jsonPath: .status.pendingEphemeralRunners, name: Pending Runners, type: integer}
    - {jsonPath: .status.runningEphemeralRunners, name: Running Runners, type: integer}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [patchID]
            properties:
              patchID: {type: integer}
              replicas: {type: integer}
              ephemeralRunnerSpec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            required: [currentReplicas]
            properties:
              currentReplicas: {type: integer}
              failedEphemeralRunners: {type: integer}
              pendingEphemeralRunners: {type: integer}
              runningEphemeralRunners: {type: integer}
`

// arcCluster starts the API server once, for the tests that need it.
var arcCluster = sync.OnceValues(func() (client.Client, error) {
	crlog.SetLogger(logr.Discard())
	root, err := cluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, doc := range []string{arcAutoscalingRunnerSetCRD, arcEphemeralRunnerSetCRD} {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict([]byte(doc), crd); err != nil {
			return nil, fmt.Errorf("ARC CRD: %w", err)
		}
		crds = append(crds, crd)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: filepath.Join(root, "bin"), CRDs: crds}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("starting envtest (run `make tools` first): %w", err)
	}
	atExit(env.Stop)
	return client.New(cfg, client.Options{})
})

func arcClient(t *testing.T) client.Client {
	t.Helper()
	c, err := arcCluster()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func arcNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "arc-runners-"}}
	if err := c.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// createScaleSet creates an AutoscalingRunnerSet as the gha-runner-scale-set Helm chart
// renders it; minRunners < 0 leaves the field out (ARC's default, 0).
func createScaleSet(t *testing.T, c client.Client, ns, name string, minRunners, maxRunners int64) *unstructured.Unstructured {
	t.Helper()
	spec := map[string]any{
		"githubConfigUrl":    "https://github.com/octo-org",
		"githubConfigSecret": "gha-runner-scale-set-secret",
		"runnerScaleSetName": name,
		"maxRunners":         maxRunners,
		"template": map[string]any{
			"spec": map[string]any{
				"restartPolicy": "Never",
				"containers": []any{map[string]any{
					"name":    "runner",
					"image":   "ghcr.io/actions/actions-runner:latest",
					"command": []any{"/home/runner/run.sh"},
				}},
			},
		},
	}
	if minRunners >= 0 {
		spec["minRunners"] = minRunners
	}
	ars := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "actions.github.com/v1alpha1",
		"kind":       "AutoscalingRunnerSet",
		"metadata": map[string]any{
			"name":      name,
			"namespace": ns,
			"labels": map[string]any{
				"app.kubernetes.io/component":            "autoscaling-runner-set",
				"app.kubernetes.io/name":                 name,
				"app.kubernetes.io/part-of":              "gha-rs",
				"app.kubernetes.io/managed-by":           "Helm",
				"actions.github.com/scale-set-name":      name,
				"actions.github.com/scale-set-namespace": ns,
			},
			"annotations": map[string]any{
				"actions.github.com/values-hash": "6b3b0c2c7fa0b6f0f4a4a1d4e1c1b4b9d1a7c2f0",
				"runner-scale-set-id":            "7",
			},
		},
		"spec": spec,
	}}
	if err := c.Create(t.Context(), ars); err != nil {
		t.Fatal(err)
	}
	return ars
}

// runnerSet is an EphemeralRunnerSet's state as ARC writes it: the listener patches
// spec.replicas (omitted when 0, as ARC's omitempty does), the controller writes status.
type runnerSet struct {
	replicas                 int64
	pending, running, failed int64
	noStatus                 bool // the controller has not reconciled it yet
	finalizer                bool
}

// createRunnerSet creates an EphemeralRunnerSet owned by ars, named and labelled as ARC's
// controller does, then writes its status through the status subresource.
func createRunnerSet(t *testing.T, c client.Client, ars *unstructured.Unstructured, rs runnerSet) *unstructured.Unstructured {
	t.Helper()
	spec := map[string]any{
		"patchID": int64(3),
		"ephemeralRunnerSpec": map[string]any{
			"githubConfigUrl":    "https://github.com/octo-org",
			"githubConfigSecret": "gha-runner-scale-set-secret",
			"runnerScaleSetId":   int64(7),
			"spec": map[string]any{
				"restartPolicy": "Never",
				"containers": []any{map[string]any{
					"name":    "runner",
					"image":   "ghcr.io/actions/actions-runner:latest",
					"command": []any{"/home/runner/run.sh"},
				}},
			},
		},
	}
	if rs.replicas != 0 {
		spec["replicas"] = rs.replicas
	}
	md := map[string]any{
		"generateName": ars.GetName() + "-",
		"namespace":    ars.GetNamespace(),
		"labels": map[string]any{
			"app.kubernetes.io/component":            "runner-set",
			"app.kubernetes.io/part-of":              "gha-runner-scale-set",
			"app.kubernetes.io/version":              "0.13.0",
			"actions.github.com/scale-set-name":      ars.GetName(),
			"actions.github.com/scale-set-namespace": ars.GetNamespace(),
		},
		"annotations": map[string]any{
			"actions.github.com/runner-spec-hash": "7d9f6c4b8",
			"runner-scale-set-id":                 "7",
		},
		"ownerReferences": []any{map[string]any{
			"apiVersion":         "actions.github.com/v1alpha1",
			"kind":               "AutoscalingRunnerSet",
			"name":               ars.GetName(),
			"uid":                string(ars.GetUID()),
			"controller":         true,
			"blockOwnerDeletion": true,
		}},
	}
	if rs.finalizer {
		md["finalizers"] = []any{"ephemeralrunner.actions.github.com/finalizer"}
	}
	ers := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "actions.github.com/v1alpha1",
		"kind":       "EphemeralRunnerSet",
		"metadata":   md,
		"spec":       spec,
	}}
	if err := c.Create(t.Context(), ers); err != nil {
		t.Fatal(err)
	}
	if rs.finalizer {
		t.Cleanup(func() {
			patch := []byte(`{"metadata":{"finalizers":null}}`)
			if err := c.Patch(context.Background(), ers, client.RawPatch("application/merge-patch+json", patch)); client.IgnoreNotFound(err) != nil {
				t.Errorf("removing finalizer: %v", err)
			}
		})
	}
	if rs.noStatus {
		return ers
	}
	ers.Object["status"] = map[string]any{
		"currentReplicas":         rs.pending + rs.running,
		"pendingEphemeralRunners": rs.pending,
		"runningEphemeralRunners": rs.running,
		"failedEphemeralRunners":  rs.failed,
	}
	if err := c.Status().Update(t.Context(), ers); err != nil {
		t.Fatal(err)
	}
	return ers
}

func TestARCCounts(t *testing.T) {
	c := arcClient(t)
	ns := arcNamespace(t, c)
	other := arcNamespace(t, c)

	t.Run("queued and running jobs", func(t *testing.T) {
		// minRunners 1, four jobs assigned: replicas 1+4. Three runners run, two are pending.
		ars := createScaleSet(t, c, ns, "arc-runner-set", 1, 10)
		createRunnerSet(t, c, ars, runnerSet{replicas: 5, pending: 2, running: 3})
		// Another scale set in the namespace, and one of the same name elsewhere: not counted.
		noise := createScaleSet(t, c, ns, "arc-runner-set-gpu", 0, 4)
		createRunnerSet(t, c, noise, runnerSet{replicas: 4, pending: 4})
		elsewhere := createScaleSet(t, c, other, "arc-runner-set", 0, 10)
		createRunnerSet(t, c, elsewhere, runnerSet{replicas: 9, running: 9})

		assertARC(t, queue.NewARC(c, ns, "arc-runner-set"), queue.Counts{Queued: 1, Running: 3})
	})
	t.Run("idle headroom is not jobs", func(t *testing.T) {
		// minRunners 2 idle runners, running but with no job: replicas = 2 + 0.
		ars := createScaleSet(t, c, ns, "idle", 2, 10)
		createRunnerSet(t, c, ars, runnerSet{replicas: 2, running: 2})
		assertARC(t, queue.NewARC(c, ns, "idle"), queue.Counts{})
	})
	t.Run("runners waiting for nodes", func(t *testing.T) {
		// No minRunners (ARC's default 0); three jobs, their runner pods all pending.
		ars := createScaleSet(t, c, ns, "cold", -1, 10)
		createRunnerSet(t, c, ars, runnerSet{replicas: 3, pending: 3})
		assertARC(t, queue.NewARC(c, ns, "cold"), queue.Counts{Queued: 3})
	})
	t.Run("warm runners take jobs first", func(t *testing.T) {
		// Two idle runners took two of three new jobs; ARC asks for 2+3 and the third job
		// waits for a new pod.
		ars := createScaleSet(t, c, ns, "warm", 2, 10)
		createRunnerSet(t, c, ars, runnerSet{replicas: 5, pending: 3, running: 2})
		assertARC(t, queue.NewARC(c, ns, "warm"), queue.Counts{Queued: 1, Running: 2})
	})
	t.Run("capped at maxRunners", func(t *testing.T) {
		ars := createScaleSet(t, c, ns, "capped", 1, 4)
		createRunnerSet(t, c, ars, runnerSet{replicas: 4, running: 4})
		assertARC(t, queue.NewARC(c, ns, "capped"), queue.Counts{Running: 3})
	})
	t.Run("new set not yet reconciled", func(t *testing.T) {
		// replicas 0 is omitted by ARC and no status is written yet: zero jobs, no error.
		ars := createScaleSet(t, c, ns, "fresh", 0, 10)
		createRunnerSet(t, c, ars, runnerSet{noStatus: true})
		assertARC(t, queue.NewARC(c, ns, "fresh"), queue.Counts{})
	})
	t.Run("upgrade with an old set draining", func(t *testing.T) {
		// After a runner spec change ARC creates a new set, which the new listener scales,
		// and deletes the old one, whose busy runners finish first. The old set's replicas
		// are stale; its running runners still run jobs of the scale set.
		ars := createScaleSet(t, c, ns, "upgrade", 1, 10)
		old := createRunnerSet(t, c, ars, runnerSet{replicas: 6, running: 2, finalizer: true})
		createRunnerSet(t, c, ars, runnerSet{replicas: 4, pending: 1, running: 1})
		if err := c.Delete(t.Context(), old); err != nil {
			t.Fatal(err)
		}
		// Assigned 4-1 = 3 jobs; 2+1 runners run.
		assertARC(t, queue.NewARC(c, ns, "upgrade"), queue.Counts{Running: 3})
	})
}

func assertARC(t *testing.T, arc *queue.ARC, want queue.Counts) {
	t.Helper()
	got, err := arc.Poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
}

func TestARCMissingScaleSet(t *testing.T) {
	c := arcClient(t)
	ns := arcNamespace(t, c)
	_, err := queue.NewARC(c, ns, "missing").Poll(t.Context())
	assertReason(t, err, queue.ReasonConfig, "AutoscalingRunnerSet "+ns+"/missing not found")
}

func TestARCNoRunnerSet(t *testing.T) {
	c := arcClient(t)
	ns := arcNamespace(t, c)
	createScaleSet(t, c, ns, "lonely", 1, 10)
	_, err := queue.NewARC(c, ns, "lonely").Poll(t.Context())
	assertReason(t, err, queue.ReasonConfig, "no EphemeralRunnerSet in namespace "+ns+" labelled actions.github.com/scale-set-name=lonely")
}

func assertReason(t *testing.T, err error, reason, fragment string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", reason)
	}
	if got := queue.ReasonOf(err); got != reason {
		t.Errorf("reason = %q, want %q (%v)", got, reason, err)
	}
	if !strings.Contains(err.Error(), fragment) {
		t.Errorf("error %q does not contain %q", err, fragment)
	}
}
