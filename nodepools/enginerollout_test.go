package nodepools_test

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/nodepools"
)

// A changed engine reaches running nodes through Karpenter's drift, never by a rolling update
// that would restart engines in place on nodes still taking jobs.
func TestEngineRolloutGoesThroughDrift(t *testing.T) {
	parse := func(engine string) *config.Pool {
		body := fmt.Sprintf("name: p\nnvme: {minSizeGB: 100}\nengine: {%s}\n", engine)
		return &mustParse(t, configYAML("", body)).Pools[0]
	}
	const base = "version: v0.19.7"
	hash := func(p *config.Pool) string {
		return nodepools.NodePool(p, ec2Opts).Spec.Template.Annotations[nodepools.AnnotationEngineTemplate]
	}
	if ds := nodepools.EngineDaemonSet(parse(base), "warmpool", ""); ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
		t.Fatalf("engine DaemonSet update strategy %q, want OnDelete", ds.Spec.UpdateStrategy.Type)
	}
	want := hash(parse(base))
	if want == "" || want != nodepools.EngineTemplateHash(parse(base)) {
		t.Fatalf("NodePool template annotation %q, want the engine template hash %q", want, nodepools.EngineTemplateHash(parse(base)))
	}
	if again := hash(parse(base)); again != want {
		t.Fatalf("the hash of one config changed between renders: %s then %s", want, again)
	}

	for _, engine := range []string{
		"version: v0.21.8",
		base + ", image: registry.example.com/dagger/engine:v0.19.7",
		base + ", gc: {maxUsedSpace: 10GB}",
		base + ", terminationGracePeriodSeconds: 4000",
		base + ", resources: {requests: {cpu: '3'}}",
		base + ", hostPath: /mnt/k8s-disks/0/other",
	} {
		if got := hash(parse(engine)); got == want {
			t.Errorf("engine {%s}: the node template hash stayed %s, so running nodes would keep the old engine", engine, got)
		}
	}

	// Upgrading warmpool changes only the tools image: no node is replaced for it.
	cfg := mustParse(t, configYAML("", "name: p\nnvme: {minSizeGB: 100}\nengine: {"+base+"}\n"))
	v1 := nodepools.Render(cfg, nodepools.Options{NodeClass: nodepools.EC2NodeClass, ToolsImage: "ghcr.io/warmpool/warmpool:v1"})
	v2 := nodepools.Render(cfg, nodepools.Options{NodeClass: nodepools.EC2NodeClass, ToolsImage: "ghcr.io/warmpool/warmpool:v2"})
	if h1, h2 := v1[1].(*karpv1.NodePool).Spec.Template.Annotations, v2[1].(*karpv1.NodePool).Spec.Template.Annotations; h1[nodepools.AnnotationEngineTemplate] != h2[nodepools.AnnotationEngineTemplate] {
		t.Errorf("a new tools image drifts the nodes: %v -> %v", h1, h2)
	}

	// A pool running the user's own engine DaemonSet: warmpool renders no engine, and no hash.
	p := parse(base)
	p.Engine.ExistingDaemonSet = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dagger"}}
	if got := hash(p); got != "" {
		t.Errorf("a pool with an existing engine DaemonSet carries engine hash %q", got)
	}
}
