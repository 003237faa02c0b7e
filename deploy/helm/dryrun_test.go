package helm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"warmpool.io/warmpool/e2e/cluster"
)

// Every object the chart renders, for the default and the full values, is accepted by a real
// kube-apiserver (server-side dry-run) that serves the Karpenter and VolumeSnapshot CRDs.
func TestRenderedObjectsPassServerDryRun(t *testing.T) {
	api := cluster.StartTestAPIServer(t)
	// The Prometheus Operator's CRDs are not in this module's dependencies, so the
	// ServiceMonitor is checked against a stand-in CRD: the apiserver checks its kind, group,
	// version and metadata; its spec is checked by TestRenderFullValues.
	if _, err := envtest.InstallCRDs(api.Config, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{serviceMonitorStandIn()}}); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range []string{namespace, "monitoring"} {
		if err := api.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for name, vals := range map[string]map[string]any{"defaults": nil, "full": fullValues(t)} {
		t.Run(name, func(t *testing.T) {
			_, objs := render(t, vals)
			for _, o := range objs {
				if err := api.Client.Create(ctx, o, client.DryRunAll); err != nil {
					t.Errorf("%s %s/%s rejected by the apiserver: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
			}
		})
	}
}

func serviceMonitorStandIn() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com",
			Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", XPreserveUnknownFields: ptr.To(true)},
					},
					Required: []string{"spec"},
				}},
			}},
		},
	}
}
