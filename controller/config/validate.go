package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	units "github.com/docker/go-units"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/volumes/engine"
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

func validateInstance(s *InstanceSelector, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	strs := func(in InNotIn[string], re *regexp.Regexp, name string) {
		for _, l := range []struct {
			name   string
			values []string
		}{{"in", in.In}, {"notIn", in.NotIn}} {
			for i, v := range l.values {
				if !re.MatchString(v) {
					errs = append(errs, field.Invalid(fp.Child(name, l.name).Index(i), v, "must match "+re.String()))
				}
			}
		}
		for i, v := range in.NotIn {
			if slices.Contains(in.In, v) {
				errs = append(errs, field.Invalid(fp.Child(name, "notIn").Index(i), v, "is also in the in list: no instance type could match"))
			}
		}
	}
	strs(s.Categories, categoryRE, "categories")
	strs(s.Families, familyRE, "families")
	for _, l := range []struct {
		name   string
		values []int
	}{{"in", s.Generations.In}, {"notIn", s.Generations.NotIn}} {
		for i, v := range l.values {
			if v < 1 {
				errs = append(errs, field.Invalid(fp.Child("generations", l.name).Index(i), v, "must be >= 1"))
			}
		}
	}
	for i, v := range s.Generations.NotIn {
		if slices.Contains(s.Generations.In, v) {
			errs = append(errs, field.Invalid(fp.Child("generations", "notIn").Index(i), v, "is also in the in list: no instance type could match"))
		}
	}
	if s.MinGeneration < 0 {
		errs = append(errs, field.Invalid(fp.Child("minGeneration"), s.MinGeneration, "must be >= 0"))
	}
	if s.MinGeneration > 0 && len(s.Generations.In) > 0 && slices.Max(s.Generations.In) < s.MinGeneration {
		errs = append(errs, field.Invalid(fp.Child("minGeneration"), s.MinGeneration, "is above every generation in generations.in: no instance type could match"))
	}
	return errs
}

func validateLimits(l *Limits, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if l.CPU != nil && l.CPU.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("cpu"), l.CPU.String(), "must be > 0"))
	}
	if l.Memory != nil && l.Memory.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("memory"), l.Memory.String(), "must be > 0"))
	}
	if l.Nodes != nil && *l.Nodes < 1 {
		errs = append(errs, field.Invalid(fp.Child("nodes"), *l.Nodes, "must be >= 1"))
	}
	return errs
}

func validateTaint(t *corev1.Taint, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsQualifiedName(t.Key) {
		errs = append(errs, field.Invalid(fp.Child("key"), t.Key, msg))
	}
	for _, msg := range validation.IsValidLabelValue(t.Value) {
		errs = append(errs, field.Invalid(fp.Child("value"), t.Value, msg))
	}
	if !taintEffects.Has(t.Effect) {
		errs = append(errs, field.NotSupported(fp.Child("effect"), t.Effect, sets.List(taintEffects)))
	}
	return errs
}

// validateLabelMap is metav1validation.ValidateLabels in key order (it ranges over the map, so
// its errors come in random order), each error naming its key.
func validateLabelMap(labels map[string]string, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range sets.List(sets.KeySet(labels)) {
		errs = append(errs, metav1validation.ValidateLabelName(k, fp.Key(k))...)
		for _, msg := range validation.IsValidLabelValue(labels[k]) {
			errs = append(errs, field.Invalid(fp.Key(k), labels[k], msg))
		}
	}
	return errs
}

func validateLabels(labels map[string]string, fp *field.Path) field.ErrorList {
	errs := validateLabelMap(labels, fp)
	for _, k := range sets.List(sets.KeySet(labels)) {
		domain, _, ok := strings.Cut(k, "/")
		if !ok {
			continue
		}
		for _, reserved := range reservedLabelDomains {
			if domain == reserved || strings.HasSuffix(domain, "."+reserved) {
				errs = append(errs, field.Invalid(fp.Key(k), k, "label domain "+reserved+" is reserved"))
			}
		}
	}
	return errs
}

func validateDisruption(d *Disruption, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !consolidation.Has(d.ConsolidationPolicy) {
		errs = append(errs, field.NotSupported(fp.Child("consolidationPolicy"), d.ConsolidationPolicy, sets.List(consolidation)))
	}
	if ca := d.ConsolidateAfter; ca != nil && ca.Duration != nil && *ca.Duration < 0 {
		errs = append(errs, field.Invalid(fp.Child("consolidateAfter"), ca.Duration.String(), `must be >= 0 or "Never"`))
	}
	for i, b := range d.Budgets {
		bp := fp.Child("budgets").Index(i)
		if !budgetNodesRE.MatchString(b.Nodes) {
			errs = append(errs, field.Invalid(bp.Child("nodes"), b.Nodes, `must be a count ("2") or a percentage ("10%")`))
		}
		errs = append(errs, validateEnum(b.Reasons, budgetReasons, bp.Child("reasons"))...)
		if (b.Schedule == nil) != (b.Duration == nil) {
			errs = append(errs, field.Required(bp.Child("duration"), "schedule and duration go together"))
		}
		if b.Schedule != nil {
			if _, err := parseCron(*b.Schedule, "Karpenter reads budget schedules in UTC"); err != nil {
				errs = append(errs, field.Invalid(bp.Child("schedule"), *b.Schedule, "must be a cron schedule: "+err.Error()))
			}
		}
	}
	return errs
}

func validateEngine(p *Pool, fp *field.Path) field.ErrorList {
	e := &p.Engine
	var errs field.ErrorList
	if e.ExistingDaemonSet != nil {
		if len(e.ExistingDaemonSet.MatchLabels) == 0 && len(e.ExistingDaemonSet.MatchExpressions) == 0 {
			errs = append(errs, field.Required(fp.Child("existingDaemonSet"), "a non-empty label selector"))
		}
		sel := e.ExistingDaemonSet.DeepCopy()
		errs = append(errs, validateLabelMap(sel.MatchLabels, fp.Child("existingDaemonSet", "matchLabels"))...)
		sel.MatchLabels = nil
		errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, fp.Child("existingDaemonSet"))...)
	}
	errs = append(errs, validateEngineRelease(e, fp)...)
	if !imageRE.MatchString(e.Image) {
		errs = append(errs, field.Invalid(fp.Child("image"), e.Image,
			`must be an image reference: a repository ("registry.dagger.io/engine"; the tag then comes from version), optionally with a :tag or @digest`))
	}
	if clean := path.Clean(e.HostPath); !path.IsAbs(e.HostPath) || clean != e.HostPath {
		errs = append(errs, field.Invalid(fp.Child("hostPath"), e.HostPath, "must be a clean absolute path"))
	} else if !strings.HasPrefix(e.HostPath, NVMeMountPath+"/") {
		errs = append(errs, field.Invalid(fp.Child("hostPath"), e.HostPath,
			"must be under the NVMe RAID0 mount "+NVMeMountPath+" (other host paths are on the EBS root volume)"))
	}
	if !path.IsAbs(e.RunPath) || path.Clean(e.RunPath) != e.RunPath {
		errs = append(errs, field.Invalid(fp.Child("runPath"), e.RunPath, "must be a clean absolute path"))
	}
	errs = append(errs, validateEngineGrace(e, fp)...)
	if r := e.Resources; r != nil {
		for _, name := range sets.List(sets.KeySet(r.Requests)) {
			req := r.Requests[name]
			if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
				errs = append(errs, field.Invalid(fp.Child("resources", "requests").Key(string(name)), req.String(), "must be <= the limit "+lim.String()))
			}
		}
	}
	if gc := e.GC; gc != nil {
		for _, s := range [][2]string{{"maxUsedSpace", gc.MaxUsedSpace}, {"reservedSpace", gc.ReservedSpace}, {"minFreeSpace", gc.MinFreeSpace}} {
			if s[1] == "" {
				continue
			}
			if err := ValidateDiskSpace(s[1]); err != nil {
				errs = append(errs, field.Invalid(fp.Child("gc", s[0]), s[1], err.Error()))
			}
		}
	}
	return errs
}

// ValidateDiskSpace checks a GC size as the engine decodes it from engine.json, so a value
// the engine would refuse at start (it decodes engine.json strictly and exits on an error)
// is refused here first. The engine (engine/config DiskSpace.UnmarshalJSON, buildkitd
// config DiskSpace.UnmarshalText, v0.15 through v1.0-beta) takes the raw JSON value, strips
// one pair of surrounding quotes, then reads "<int>%" (strconv.ParseInt) or a size by
// docker/go-units RAMInBytes: binary units whatever the spelling ("100GB", "100g", "100GiB"
// are all 100 GiB; "100Gi" is refused), a bare number is bytes. The same JSON encoding the
// engine.json renderer uses feeds the same steps here.
//
// Beyond the engine: a percentage must be 1-100 and a size at least 1 byte. The engine
// takes 0 as "unset" (its default policy applies) and a negative or >100 percentage as a
// nonsense share of the disk, so neither is what a user who wrote it meant.
func ValidateDiskSpace(v string) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("must be a string, %w", err)
	}
	text := string(raw)
	if len(text) >= 2 && text[0] == '"' && text[len(text)-1] == '"' {
		text = text[1 : len(text)-1]
	}
	const want = `must be "<int>%" of the node's disk ("75%") or a size in binary units ("100GB" = 100 GiB, "512m" = 512 MiB, "100GiB")`
	if pct, ok := strings.CutSuffix(text, "%"); ok {
		n, err := strconv.ParseInt(pct, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: the engine cannot parse it (%v)", want, err)
		}
		if n < 1 || n > 100 {
			return fmt.Errorf("must be a percentage from 1%% to 100%% of the node's disk (the engine reads 0%% as unset)")
		}
		return nil
	}
	n, err := units.RAMInBytes(text)
	if err != nil {
		return fmt.Errorf("%s: the engine cannot parse it (%v)", want, err)
	}
	if n <= 0 {
		return fmt.Errorf("must be at least 1 byte (the engine reads 0 as unset; omit the field for its default)")
	}
	return nil
}

// validateEngineRelease: the version must be in the table of engine contracts (or name the
// row it behaves like), because what proves the engine's clean exit, and so whether a
// cache may be saved, depends on the release.
func validateEngineRelease(e *Engine, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case e.Version == "":
		errs = append(errs, field.Required(fp.Child("version"), "the engine version keys cache snapshots; supported: "+engine.Supported()))
	case len(validation.IsValidLabelValue(e.Version)) > 0:
		// It labels the engine pods and the cache snapshots.
		errs = append(errs, field.Invalid(fp.Child("version"), e.Version, "must be a valid label value: "+strings.Join(validation.IsValidLabelValue(e.Version), "; ")))
	case e.Contract != "":
		// A release newer than the table, declared to behave like a known row: it must still
		// be a release version, since it tags the image and keys the snapshots.
		if _, err := engine.ByName(e.Contract); err != nil {
			errs = append(errs, field.NotSupported(fp.Child("contract"), e.Contract, contractNames()))
		} else if known, err := engine.ForVersion(e.Version); err == nil && known.Name != e.Contract {
			// The table knows this release: a different row would check its cache against
			// the wrong contract.
			errs = append(errs, field.Invalid(fp.Child("contract"), e.Contract,
				fmt.Sprintf("contradicts the table: %s is in row %q; engine.contract is only for releases newer than the table", e.Version, known.Name)))
		}
		if !releaseRE.MatchString(e.Version) {
			errs = append(errs, field.Invalid(fp.Child("version"), e.Version, "must be a release version like "+engine.Current))
		}
	default:
		if _, err := engine.ForVersion(e.Version); err != nil {
			errs = append(errs, field.Invalid(fp.Child("version"), e.Version,
				fmt.Sprintf("must be an engine release warmpool knows (supported: %s), or set engine.contract to the row a newer release behaves like", engine.Supported())))
		}
	}
	return errs
}

// releaseRE is a Dagger release tag: vMAJOR.MINOR.PATCH with an optional pre-release.
var releaseRE = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

func contractNames() []string {
	var names []string
	for _, c := range engine.Contracts() {
		names = append(names, c.Name)
	}
	return names
}

// validateEngineGrace checks what warmpool can bound about the engine's stop. The engine
// does not bound its own stop (no release does while clients are attached, and after they
// leave it prunes and persists for a time that grows with the cache), so warmpool reserves
// stopSeconds + 30 s at the end of the grace period by ending its drain wait before them.
func validateEngineGrace(e *Engine, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	stop := e.StopSecondsOrDefault()
	if e.StopSeconds != nil && *e.StopSeconds < 1 {
		errs = append(errs, field.Invalid(fp.Child("stopSeconds"), *e.StopSeconds, "must be >= 1: the engine's stop (prune, persist) always takes some time"))
		return errs
	}
	if g := e.TerminationGracePeriodSeconds; g != nil && *g < stop+EngineExitSeconds {
		errs = append(errs, field.Invalid(fp.Child("terminationGracePeriodSeconds"), *g,
			fmt.Sprintf("must be >= stopSeconds + %d (%d): warmpool ends its drain wait for clients that long before the grace period ends, to leave the engine %ds for its own stop and %ds to exit; the engine's stop itself is not bounded, so an engine still stopping when the grace period ends is SIGKILLed and its cache lost",
				EngineExitSeconds, stop+EngineExitSeconds, stop, EngineExitSeconds)))
	}
	return errs
}

func validateQueue(q *Queue, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i := range q.Sources {
		s := &q.Sources[i]
		sp := fp.Child("sources").Index(i)
		switch kinds := s.kinds(); len(kinds) {
		case 0:
			errs = append(errs, field.Required(sp, "one of githubWebhook, github, arc, gitlab, buildkite, prometheus"))
			continue
		case 1:
		default:
			errs = append(errs, field.Forbidden(sp, "exactly one source kind per entry, got "+strings.Join(kinds, ", ")))
			continue
		}
		if names.Has(s.Name) {
			errs = append(errs, field.Duplicate(sp.Child("name"), s.Name))
		}
		names.Insert(s.Name)
		for _, msg := range validation.IsDNS1123Label(s.Name) {
			errs = append(errs, field.Invalid(sp.Child("name"), s.Name, msg))
		}
		errs = append(errs, validateSource(s, sp)...)
	}
	return errs
}

func validateSource(s *Source, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	poll := func(d *metav1.Duration, p *field.Path) {
		if d.Duration < 5*time.Second {
			errs = append(errs, field.Invalid(p.Child("pollInterval"), d.Duration.String(), "must be >= 5s"))
		}
	}
	nonEmpty := func(v string, p *field.Path) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, field.Required(p, ""))
		}
	}
	switch {
	case s.GitHubWebhook != nil:
		p := fp.Child("githubWebhook")
		if len(s.GitHubWebhook.Labels) == 0 {
			errs = append(errs, field.Required(p.Child("labels"), "the runner labels whose jobs this pool runs"))
		}
		if r := s.GitHubWebhook.Resync; r != nil {
			rp := p.Child("resync")
			nonEmpty(r.Owner, rp.Child("owner"))
			errs = append(errs, validateGitHubAPI(r.URL, r.Repos, r.TokenSecretRef, r.App, rp)...)
			// A listing walks every run of every repository: minutes, not seconds.
			if r.Interval.Duration < time.Minute {
				errs = append(errs, field.Invalid(rp.Child("interval"), r.Interval.Duration.String(), "must be >= 1m"))
			}
		}
	case s.GitHub != nil:
		g, p := s.GitHub, fp.Child("github")
		nonEmpty(g.Owner, p.Child("owner"))
		if len(g.Labels) == 0 {
			errs = append(errs, field.Required(p.Child("labels"), "the runner labels whose jobs this pool runs"))
		}
		errs = append(errs, validateGitHubAPI(g.URL, g.Repos, g.TokenSecretRef, g.App, p)...)
		poll(g.PollInterval, p)
	case s.ARC != nil:
		p := fp.Child("arc")
		for _, msg := range validation.IsDNS1123Label(s.ARC.Namespace) {
			errs = append(errs, field.Invalid(p.Child("namespace"), s.ARC.Namespace, msg))
		}
		nonEmpty(s.ARC.ScaleSetName, p.Child("scaleSetName"))
	case s.GitLab != nil:
		g, p := s.GitLab, fp.Child("gitlab")
		if g.URL != "" {
			errs = append(errs, validateURL(g.URL, p.Child("url"))...)
		}
		if (len(g.ProjectIDs) == 0) == (g.GroupID == "") {
			errs = append(errs, field.Required(p.Child("projectIDs"), "exactly one of projectIDs or groupID"))
		}
		errs = append(errs, validateSecretRef(&g.TokenSecretRef, p.Child("tokenSecretRef"))...)
		poll(g.PollInterval, p)
	case s.Buildkite != nil:
		b, p := s.Buildkite, fp.Child("buildkite")
		if b.URL != "" {
			errs = append(errs, validateURL(b.URL, p.Child("url"))...)
		}
		nonEmpty(b.Queue, p.Child("queue"))
		errs = append(errs, validateSecretRef(&b.TokenSecretRef, p.Child("tokenSecretRef"))...)
		poll(b.PollInterval, p)
	case s.Prometheus != nil:
		pr, p := s.Prometheus, fp.Child("prometheus")
		errs = append(errs, validateURL(pr.URL, p.Child("url"))...)
		nonEmpty(pr.Query, p.Child("query"))
		if !sourceStates.Has(pr.State) {
			errs = append(errs, field.NotSupported(p.Child("state"), pr.State, sets.List(sourceStates)))
		}
		poll(pr.PollInterval, p)
	}
	return errs
}

// validateGitHubAPI checks what the github source and a webhook resync share: the API URL,
// repository names and exactly one credential.
func validateGitHubAPI(url string, repos []string, token *SecretKeyRef, app *GitHubAppAuth, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if url != "" {
		errs = append(errs, validateURL(url, fp.Child("url"))...)
	}
	for i, r := range repos {
		if strings.TrimSpace(r) == "" || strings.Contains(r, "/") {
			errs = append(errs, field.Invalid(fp.Child("repos").Index(i), r, "must be a repository name under owner"))
		}
	}
	switch {
	case token == nil && app == nil:
		errs = append(errs, field.Required(fp.Child("tokenSecretRef"), "one of tokenSecretRef or app"))
	case token != nil && app != nil:
		errs = append(errs, field.Forbidden(fp.Child("app"), "set tokenSecretRef or app, not both"))
	case token != nil:
		errs = append(errs, validateSecretRef(token, fp.Child("tokenSecretRef"))...)
	default:
		if app.AppID < 1 {
			errs = append(errs, field.Invalid(fp.Child("app", "appID"), app.AppID, "must be >= 1"))
		}
		if app.InstallationID < 1 {
			errs = append(errs, field.Invalid(fp.Child("app", "installationID"), app.InstallationID, "must be >= 1"))
		}
		errs = append(errs, validateSecretRef(&app.PrivateKeySecretRef, fp.Child("app", "privateKeySecretRef"))...)
	}
	return errs
}

func validateSecretRef(r *SecretKeyRef, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.Name == "" {
		errs = append(errs, field.Required(fp.Child("name"), "the Secret's name"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(r.Name) {
			errs = append(errs, field.Invalid(fp.Child("name"), r.Name, msg))
		}
	}
	if r.Key == "" {
		errs = append(errs, field.Required(fp.Child("key"), "the key within the Secret"))
	} else {
		for _, msg := range validation.IsConfigMapKey(r.Key) {
			errs = append(errs, field.Invalid(fp.Child("key"), r.Key, msg))
		}
	}
	return errs
}

func validateURL(raw string, fp *field.Path) field.ErrorList {
	u, err := url.Parse(raw)
	if raw == "" {
		return field.ErrorList{field.Required(fp, "")}
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return field.ErrorList{field.Invalid(fp, raw, "must be an absolute http(s) URL")}
	}
	return nil
}

func validateScaling(p *Pool, fp *field.Path) field.ErrorList {
	s := &p.Scaling
	var errs field.ErrorList
	if s.JobsPerNode < 0 {
		errs = append(errs, field.Invalid(fp.Child("jobsPerNode"), s.JobsPerNode, "must be >= 0 (0 derives it from runnerRequests)"))
	}
	for _, name := range sets.List(sets.KeySet(s.RunnerRequests)) {
		if q := s.RunnerRequests[name]; q.Sign() <= 0 {
			errs = append(errs, field.Invalid(fp.Child("runnerRequests").Key(string(name)), q.String(), "must be > 0"))
		}
	}
	if s.WarmMinimum < 0 {
		errs = append(errs, field.Invalid(fp.Child("warmMinimum"), s.WarmMinimum, "must be >= 0"))
	}
	if s.MaxNodes != nil {
		if *s.MaxNodes < 1 {
			errs = append(errs, field.Invalid(fp.Child("maxNodes"), *s.MaxNodes, "must be >= 1"))
		}
		if p.Limits.Nodes != nil && int64(*s.MaxNodes) > *p.Limits.Nodes {
			errs = append(errs, field.Invalid(fp.Child("maxNodes"), *s.MaxNodes, fmt.Sprintf("must be <= limits.nodes (%d)", *p.Limits.Nodes)))
		}
		if s.WarmMinimum > *s.MaxNodes {
			errs = append(errs, field.Invalid(fp.Child("warmMinimum"), s.WarmMinimum, fmt.Sprintf("must be <= maxNodes (%d)", *s.MaxNodes)))
		}
	}
	for i, w := range s.WarmWindows {
		wp := fp.Child("warmWindows").Index(i)
		// What the policy would refuse to compile (@every, "Local", a schedule that never fires)
		// is refused here, with the config, while the last good one stays.
		errs = append(errs, w.Validate(wp)...)
		if s.MaxNodes != nil && w.Minimum > *s.MaxNodes {
			errs = append(errs, field.Invalid(wp.Child("minimum"), w.Minimum, fmt.Sprintf("must be <= maxNodes (%d)", *s.MaxNodes)))
		}
	}
	if d := s.ScaleDownStabilization.Duration; d < 0 {
		errs = append(errs, field.Invalid(fp.Child("scaleDownStabilization"), d.String(), "must be >= 0"))
	}
	if s.ScaleDownStep < 0 {
		errs = append(errs, field.Invalid(fp.Child("scaleDownStep"), s.ScaleDownStep, "must be >= 0 (0 = unlimited)"))
	}
	if !headroomKinds.Has(s.Headroom) {
		errs = append(errs, field.NotSupported(fp.Child("headroom"), s.Headroom, sets.List(headroomKinds)))
	}
	if !busyBudgets.Has(s.BusyBudget) {
		errs = append(errs, field.NotSupported(fp.Child("busyBudget"), s.BusyBudget, sets.List(busyBudgets)))
	}
	errs = append(errs, validateSpare(p, fp)...) // validate_spare.go
	return errs
}
