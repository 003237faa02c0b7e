// Package helm renders the warmpool chart (deploy/helm/warmpool) with the Helm Go SDK, as
// `helm install` would, and sets up its ServiceAccount and RBAC in a cluster, so tests (and the
// e2e tier) can run the controller with exactly the permissions the chart grants.
package helm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// KubeVersion is the Kubernetes version charts are rendered for: the one the local control
// plane (k8s.io/kubernetes v1.35.4) serves. The Helm SDK would otherwise assume v1.20.
const KubeVersion = "v1.35.4"

// ChartDir is the chart's directory in this repository.
func ChartDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the chart: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "warmpool"), nil
}

// Render renders the chart as `helm install --dry-run` (client only) does, values schema
// included, and returns the release (manifest, NOTES) and its objects sorted by kind and name.
func Render(releaseName, namespace string, vals map[string]any) (*release.Release, []*unstructured.Unstructured, error) {
	dir, err := ChartDir()
	if err != nil {
		return nil, nil, err
	}
	chrt, err := loader.Load(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("loading chart %s, %w", dir, err)
	}
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, nil, err
	}
	in := action.NewInstall(&action.Configuration{})
	in.ClientOnly, in.DryRun, in.Replace = true, true, true
	in.ReleaseName, in.Namespace, in.KubeVersion = releaseName, namespace, kv
	rel, err := in.Run(chrt, vals)
	if err != nil {
		return nil, nil, fmt.Errorf("rendering chart, %w", err)
	}
	var objs []*unstructured.Unstructured
	for name, doc := range releaseutil.SplitManifests(rel.Manifest) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, nil, fmt.Errorf("%s, %w", name, err)
		}
		if string(js) == "null" {
			continue
		}
		// The unstructured decoder keeps integers as int64, as the API machinery does.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, nil, fmt.Errorf("%s, %w", name, err)
		}
		objs = append(objs, u)
	}
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].GetKind() != objs[j].GetKind() {
			return objs[i].GetKind() < objs[j].GetKind()
		}
		return objs[i].GetName() < objs[j].GetName()
	})
	return rel, objs, nil
}

// identityKinds are the objects that make up the controller's identity and permissions.
var identityKinds = map[string]bool{"ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true}

// ServiceAccountConfig creates the chart's ServiceAccount, roles and bindings (from rendered
// objects) through admin, and returns admin's connection re-authenticated as that
// ServiceAccount with a TokenRequest token: a client that can do exactly what the chart grants.
func ServiceAccountConfig(ctx context.Context, admin *rest.Config, objs []*unstructured.Unstructured) (*rest.Config, error) {
	kube, err := client.New(admin, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("building client, %w", err)
	}
	// The chart has more than one ServiceAccount (the hold pods' too): the controller's is the
	// one its Deployment runs as.
	controllerSA := ""
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			if name, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName"); name != "" {
				controllerSA = name
			}
		}
	}
	var sa *unstructured.Unstructured
	for _, o := range objs {
		if !identityKinds[o.GetKind()] {
			continue
		}
		if o.GetKind() == "ServiceAccount" && o.GetName() == controllerSA {
			sa = o
		}
		if err := kube.Create(ctx, o.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating %s %s, %w", o.GetKind(), o.GetName(), err)
		}
	}
	if sa == nil {
		return nil, fmt.Errorf("the rendered chart has no ServiceAccount %q for the controller's Deployment (serviceAccount.create=false?)", controllerSA)
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("building clientset, %w", err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(sa.GetNamespace()).CreateToken(ctx, sa.GetName(), &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for ServiceAccount %s/%s, %w", sa.GetNamespace(), sa.GetName(), err)
	}
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = tr.Status.Token
	return cfg, nil
}
