package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
)

// MaxPoolNameLength leaves room in every object name warmpool derives from a pool
// ("warmpool-engine-<pool>-<hash>", Job names) within Kubernetes' 63-character limits.
const MaxPoolNameLength = 40

var (
	architectures = sets.New("amd64", "arm64")
	capacityTypes = sets.New(karpv1.CapacityTypeOnDemand, karpv1.CapacityTypeSpot, karpv1.CapacityTypeReserved)
	consolidation = sets.New(karpv1.ConsolidationPolicyWhenEmpty, karpv1.ConsolidationPolicyWhenEmptyOrUnderutilized, karpv1.ConsolidationPolicyBalanced)
	budgetReasons = sets.New(karpv1.DisruptionReasonEmpty, karpv1.DisruptionReasonUnderutilized, karpv1.DisruptionReasonDrifted)
	amiFamilies   = sets.New("al2", "al2023", "bottlerocket") // Linux only: every NodePool requires kubernetes.io/os=linux
	volumeTypes   = sets.New("standard", "io1", "io2", "gp2", "sc1", "st1", "gp3")
	headroomKinds = sets.New(HeadroomPods, HeadroomCapacityBuffer)
	busyBudgets   = sets.New(BusyBudgetBlock, BusyBudgetSurplus)
	sourceStates  = sets.New(SourceStateQueued, SourceStateRunning)
	taintEffects  = sets.New(corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute)
	budgetNodesRE = regexp.MustCompile(`^((100|[0-9]{1,2})%|[0-9]+)$`)
	categoryRE    = regexp.MustCompile(`^[a-z]+$`)
	familyRE      = regexp.MustCompile(`^[a-z0-9-]+$`)
	// An image reference: repository (a registry host may carry a port), then an optional tag
	// and an optional digest.
	imageRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.-]*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})?$`)
	// Tag keys Karpenter and EKS own; the EC2NodeClass CRD rejects them, so we say so first.
	reservedTagPrefixes = []string{"kubernetes.io/cluster/", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim", "karpenter.k8s.aws/ec2nodeclass", "eks:eks-cluster-name"}
	// Label domains that belong to Kubernetes, Karpenter or warmpool itself.
	reservedLabelDomains = []string{"kubernetes.io", "k8s.io", "karpenter.sh", "karpenter.k8s.aws", "warmpool.io"}
)

// Validate reports every problem in a defaulted config, each with its field path.
func Validate(c *Config) field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	if c.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	errs = append(errs, validateNodeClass(&c.NodeClass, field.NewPath("nodeClass"))...)
	errs = append(errs, validateDiscovery(&c.Discovery, field.NewPath("discovery"))...)
	errs = append(errs, validateWebhook(c, field.NewPath("webhook"))...)

	poolsPath := field.NewPath("pools")
	if len(c.Pools) == 0 {
		errs = append(errs, field.Required(poolsPath, "at least one pool (an empty list would remove every pool)"))
	}
	names := sets.New[string]()
	for i := range c.Pools {
		p := &c.Pools[i]
		if names.Has(p.Name) {
			errs = append(errs, field.Duplicate(poolsPath.Index(i).Child("name"), p.Name))
		}
		names.Insert(p.Name)
		errs = append(errs, validatePool(p, poolsPath.Index(i))...)
	}
	errs = append(errs, validateCacheOS(c)...)
	return errs
}

func validateNodeClass(nc *NodeClass, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case nc.Role == "" && nc.InstanceProfile == "":
		errs = append(errs, field.Required(fp.Child("role"), "one of role or instanceProfile"))
	case nc.Role != "" && nc.InstanceProfile != "":
		errs = append(errs, field.Forbidden(fp.Child("instanceProfile"), "set role or instanceProfile, not both"))
	}
	if fam, ver, ok := strings.Cut(nc.AMIAlias, "@"); !ok || ver == "" || !amiFamilies.Has(fam) {
		errs = append(errs, field.Invalid(fp.Child("amiAlias"), nc.AMIAlias,
			fmt.Sprintf("must be <family>@<version> with family one of %s", strings.Join(sets.List(amiFamilies), ", "))))
	}
	if len(nc.SubnetSelectorTerms) == 0 {
		errs = append(errs, field.Required(fp.Child("subnetSelectorTerms"), "at least one term"))
	}
	for i, t := range nc.SubnetSelectorTerms {
		errs = append(errs, validateSelectorTerm(t.Tags, t.ID, "", false, fp.Child("subnetSelectorTerms").Index(i))...)
	}
	if len(nc.SecurityGroupSelectorTerms) == 0 {
		errs = append(errs, field.Required(fp.Child("securityGroupSelectorTerms"), "at least one term"))
	}
	for i, t := range nc.SecurityGroupSelectorTerms {
		errs = append(errs, validateSelectorTerm(t.Tags, t.ID, t.Name, true, fp.Child("securityGroupSelectorTerms").Index(i))...)
	}
	for _, k := range sets.List(sets.KeySet(nc.Tags)) {
		for _, prefix := range reservedTagPrefixes {
			if strings.HasPrefix(k, prefix) {
				errs = append(errs, field.Invalid(fp.Child("tags").Key(k), k, "tag key is reserved by Karpenter or EKS"))
			}
		}
	}
	rv := nc.RootVolume
	if rv.Size != nil && rv.Size.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("rootVolume", "size"), rv.Size.String(), "must be > 0"))
	}
	if rv.Type != "" && !volumeTypes.Has(rv.Type) {
		errs = append(errs, field.NotSupported(fp.Child("rootVolume", "type"), rv.Type, sets.List(volumeTypes)))
	}
	if rv.IOPS != nil && *rv.IOPS <= 0 {
		errs = append(errs, field.Invalid(fp.Child("rootVolume", "iops"), *rv.IOPS, "must be > 0"))
	}
	if rv.Throughput != nil && *rv.Throughput <= 0 {
		errs = append(errs, field.Invalid(fp.Child("rootVolume", "throughput"), *rv.Throughput, "must be > 0"))
	}
	if mo := nc.MetadataOptions; mo != nil {
		enum := func(v *string, name string, allowed ...string) {
			if v != nil && !slices.Contains(allowed, *v) {
				errs = append(errs, field.NotSupported(fp.Child("metadataOptions", name), *v, allowed))
			}
		}
		enum(mo.HTTPEndpoint, "httpEndpoint", "enabled", "disabled")
		enum(mo.HTTPProtocolIPv6, "httpProtocolIPv6", "enabled", "disabled")
		enum(mo.HTTPTokens, "httpTokens", "required", "optional")
		if h := mo.HTTPPutResponseHopLimit; h != nil && (*h < 1 || *h > 64) {
			errs = append(errs, field.Invalid(fp.Child("metadataOptions", "httpPutResponseHopLimit"), *h, "must be between 1 and 64"))
		}
	}
	if k := nc.Kubelet; k != nil {
		kp := fp.Child("kubelet")
		if k.MaxPods != nil && *k.MaxPods < 1 {
			errs = append(errs, field.Invalid(kp.Child("maxPods"), *k.MaxPods, "must be >= 1"))
		}
		hi, lo := k.ImageGCHighThresholdPercent, k.ImageGCLowThresholdPercent
		if hi != nil && lo != nil && *hi <= *lo {
			errs = append(errs, field.Invalid(kp.Child("imageGCHighThresholdPercent"), *hi, fmt.Sprintf("must be greater than imageGCLowThresholdPercent (%d)", *lo)))
		}
		for _, r := range []struct {
			name string
			m    map[string]string
		}{{"systemReserved", k.SystemReserved}, {"kubeReserved", k.KubeReserved}} {
			for _, key := range sets.List(sets.KeySet(r.m)) {
				if _, err := resource.ParseQuantity(r.m[key]); err != nil {
					errs = append(errs, field.Invalid(kp.Child(r.name).Key(key), r.m[key], "must be a quantity"))
				}
			}
		}
	}
	return errs
}

// validateSelectorTerm checks a subnet (hasName false: no name field) or security group term.
func validateSelectorTerm(tags map[string]string, id, name string, hasName bool, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	others := "tags"
	if hasName {
		others = "tags or name"
	}
	if len(tags) == 0 && id == "" && name == "" {
		return append(errs, field.Required(fp, "one of id or "+others))
	}
	if id != "" && (len(tags) > 0 || name != "") {
		errs = append(errs, field.Forbidden(fp.Child("id"), "id cannot be combined with "+others))
	}
	for _, k := range sets.List(sets.KeySet(tags)) {
		if k == "" || tags[k] == "" {
			errs = append(errs, field.Invalid(fp.Child("tags").Key(k), tags[k], "tag keys and values must be non-empty"))
		}
	}
	return errs
}

func validateDiscovery(d *Discovery, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if d.Endpoint != "" {
		errs = append(errs, validateURL(d.Endpoint, fp.Child("endpoint"))...)
	}
	if d.RefreshInterval != nil && d.RefreshInterval.Duration < time.Minute {
		errs = append(errs, field.Invalid(fp.Child("refreshInterval"), d.RefreshInterval.Duration.String(), "must be >= 1m"))
	}
	return errs
}

func validateWebhook(c *Config, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !strings.HasPrefix(c.Webhook.Path, "/") {
		errs = append(errs, field.Invalid(fp.Child("path"), c.Webhook.Path, "must start with /"))
	}
	if c.Webhook.SecretRef != nil {
		errs = append(errs, validateSecretRef(c.Webhook.SecretRef, fp.Child("secretRef"))...)
	}
	if c.Webhook.SecretRef == nil {
		for i, p := range c.Pools {
			for j, s := range p.Queue.Sources {
				if s.GitHubWebhook != nil {
					errs = append(errs, field.Required(fp.Child("secretRef"),
						fmt.Sprintf("%s uses a githubWebhook source, whose deliveries must be verified", field.NewPath("pools").Index(i).Child("queue", "sources").Index(j))))
				}
			}
		}
	}
	return errs
}

func validatePool(p *Pool, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if p.Name == "" {
		errs = append(errs, field.Required(fp.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Label(p.Name) {
			errs = append(errs, field.Invalid(fp.Child("name"), p.Name, msg))
		}
		if len(p.Name) > MaxPoolNameLength {
			errs = append(errs, field.Invalid(fp.Child("name"), p.Name, fmt.Sprintf("must be no more than %d characters", MaxPoolNameLength)))
		}
	}
	errs = append(errs, validateEnum(p.Architectures, architectures, fp.Child("architectures"))...)
	errs = append(errs, validateEnum(p.CapacityTypes, capacityTypes, fp.Child("capacityTypes"))...)
	errs = append(errs, validateInstance(&p.Instance, fp.Child("instance"))...)
	if p.NVMe.MinSizeGB < 1 {
		errs = append(errs, field.Invalid(fp.Child("nvme", "minSizeGB"), p.NVMe.MinSizeGB, "must be >= 1"))
	}
	errs = append(errs, validateLimits(&p.Limits, fp.Child("limits"))...)
	if p.Weight != nil && (*p.Weight < 1 || *p.Weight > 100) {
		errs = append(errs, field.Invalid(fp.Child("weight"), *p.Weight, "must be between 1 and 100"))
	}
	errs = append(errs, validateTaint(p.Taint, fp.Child("taint"))...)
	errs = append(errs, validateLabels(p.Labels, fp.Child("labels"))...)
	if p.ExpireAfter != nil && p.ExpireAfter.Duration != nil && *p.ExpireAfter.Duration <= 0 {
		errs = append(errs, field.Invalid(fp.Child("expireAfter"), p.ExpireAfter.Duration.String(), `must be > 0 or "Never"`))
	}
	tgp := p.TerminationGracePeriod.Duration
	if tgp <= 0 {
		errs = append(errs, field.Invalid(fp.Child("terminationGracePeriod"), tgp.String(), "must be > 0"))
	} else if engine := p.Engine.TerminationGracePeriodSeconds; engine != nil && p.Engine.ExistingDaemonSet == nil && tgp <= time.Duration(*engine)*time.Second {
		errs = append(errs, field.Invalid(fp.Child("terminationGracePeriod"), tgp.String(),
			fmt.Sprintf("must exceed engine.terminationGracePeriodSeconds (%ds) so the cache can be saved after the engine stops", *engine)))
	}
	errs = append(errs, validateDisruption(&p.Disruption, fp.Child("disruption"))...)
	errs = append(errs, validateEngine(p, fp.Child("engine"))...)
	errs = append(errs, validateCache(p, fp.Child("cache"))...)
	errs = append(errs, validateQueue(&p.Queue, fp.Child("queue"))...)
	errs = append(errs, validateScaling(p, fp.Child("scaling"))...)
	return errs
}

func validateEnum[T ~string](values []T, allowed sets.Set[T], fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := sets.New[T]()
	for i, v := range values {
		switch {
		case !allowed.Has(v):
			errs = append(errs, field.NotSupported(fp.Index(i), v, sets.List(allowed)))
		case seen.Has(v):
			errs = append(errs, field.Duplicate(fp.Index(i), v))
		}
		seen.Insert(v)
	}
	return errs
}

// releaseRE is a Dagger release tag: vMAJOR.MINOR.PATCH with an optional pre-release.
var releaseRE = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)
