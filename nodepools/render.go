// Package nodepools generates Karpenter NodePools and their node classes from warmpool config.
// It is pure: the same config always yields the same objects, with no client calls, so the
// controller applies exactly what `warmpool render` prints.
package nodepools

import (
	"fmt"
	"strconv"
	"strings"

	awsapis "github.com/aws/karpenter-provider-aws/pkg/apis"
	awsv1 "github.com/aws/karpenter-provider-aws/pkg/apis/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kwokapis "sigs.k8s.io/karpenter/kwok/apis"
	kwokv1alpha1 "sigs.k8s.io/karpenter/kwok/apis/v1alpha1"
	karpapis "sigs.k8s.io/karpenter/pkg/apis"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/volumes"
)

const (
	// LabelPool marks every object warmpool generates for a pool, and every node of the pool.
	// One key with the cache protocol's objects, defined there.
	LabelPool = volumes.LabelPool
	// LabelManagedBy with ManagedBy marks objects warmpool owns; only those are ever pruned.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "warmpool"
	// StartupTaintKey keeps the engine off a new node until its cache is restored (or the
	// restore gives up). Karpenter does not count the node initialized while it is present.
	StartupTaintKey = "warmpool.io/cache-restore"
	// NamePrefix starts every generated object name, so they are easy to tell apart from
	// hand-made NodePools.
	NamePrefix = "warmpool-"
)

// The group-versions of the objects generated here. Karpenter registers its types in client-go's
// scheme but exports no GroupVersion variables.
var (
	NodePoolGV      = schema.GroupVersion{Group: karpapis.Group, Version: "v1"}
	EC2NodeClassGV  = schema.GroupVersion{Group: awsapis.Group, Version: "v1"}
	KWOKNodeClassGV = schema.GroupVersion{Group: kwokapis.Group, Version: "v1alpha1"}
)

// resourceNodes is the NodePool limit on the number of nodes.
const resourceNodes corev1.ResourceName = "nodes"

// NodeClassKind selects which Karpenter node class the NodePools reference.
type NodeClassKind string

const (
	// EC2NodeClass is the AWS provider's node class: what runs on EKS.
	EC2NodeClass NodeClassKind = "ec2"
	// KWOKNodeClass is Karpenter's KWOK provider node class: local clusters with fake nodes.
	KWOKNodeClass NodeClassKind = "kwok"
)

// ParseNodeClassKind reads the --node-class flag value.
func ParseNodeClassKind(s string) (NodeClassKind, error) {
	switch k := NodeClassKind(strings.ToLower(s)); k {
	case EC2NodeClass, KWOKNodeClass:
		return k, nil
	}
	return "", fmt.Errorf("node class %q: must be %q or %q", s, EC2NodeClass, KWOKNodeClass)
}

// Options are the choices that are not part of the user's config.
type Options struct {
	NodeClass NodeClassKind
	// Namespace is warmpool's namespace, where the engine DaemonSets and their ConfigMaps go;
	// empty leaves their metadata.namespace unset.
	Namespace string
	// ToolsImage is warmpool's own image, whose binary the engine pods run as their drain hook
	// (EngineDaemonSet); empty is DefaultToolsImage.
	ToolsImage string
	// Busy reports a pool's busy state (queued or running jobs, or a warm window) and how many
	// of its nodes may still be consolidated meanwhile; a busy pool's NodePool carries
	// BusyBudget.Budget first. Nil means no pool is busy (`warmpool render`).
	Busy func(pool string) BusyBudget
}

func (o Options) busy(pool string) BusyBudget {
	if o.Busy == nil {
		return BusyBudget{}
	}
	return o.Busy(pool)
}

// Name is the name of every object generated for a pool.
func Name(pool string) string { return NamePrefix + pool }

// StartupTaint is the cache-restore startup taint of cache-enabled pools.
var StartupTaint = corev1.Taint{Key: StartupTaintKey, Effect: corev1.TaintEffectNoSchedule}

// Render generates, for each pool in config order, its node class, its NodePool, then its
// engine ConfigMap and DaemonSet (none when the pool names an existing engine DaemonSet), then
// its hold DaemonSet when its cache is enabled.
func Render(cfg *config.Config, opts Options) []client.Object {
	objs := make([]client.Object, 0, 4*len(cfg.Pools))
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		objs = append(objs, NodeClass(cfg, p, opts), NodePool(p, opts))
		if p.Engine.ExistingDaemonSet == nil {
			objs = append(objs, EngineConfigMap(p, opts.Namespace), EngineDaemonSet(p, opts.Namespace, opts.ToolsImage))
		}
		// A cache-enabled pool's hold DaemonSet (engine.go), whichever engine it runs.
		if hold := HoldDaemonSet(p, opts.Namespace, opts.ToolsImage); hold != nil {
			objs = append(objs, hold)
		}
	}
	return objs
}

// OwnedLabels are the labels that mark an object as warmpool's, for one pool.
func OwnedLabels(pool string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelPool: pool}
}

// NodePool renders one pool's Karpenter NodePool.
func NodePool(p *config.Pool, opts Options) *karpv1.NodePool {
	nodeLabels := map[string]string{LabelPool: p.Name}
	for k, v := range p.Labels {
		nodeLabels[k] = v
	}
	np := &karpv1.NodePool{
		TypeMeta:   metav1.TypeMeta{APIVersion: NodePoolGV.String(), Kind: "NodePool"},
		ObjectMeta: metav1.ObjectMeta{Name: Name(p.Name), Labels: OwnedLabels(p.Name)},
		Spec: karpv1.NodePoolSpec{
			Template: karpv1.NodeClaimTemplate{
				ObjectMeta: karpv1.ObjectMeta{Labels: nodeLabels},
				Spec: karpv1.NodeClaimTemplateSpec{
					Requirements:           Requirements(p),
					NodeClassRef:           nodeClassRef(p, opts),
					Taints:                 []corev1.Taint{*p.Taint},
					ExpireAfter:            *p.ExpireAfter,
					TerminationGracePeriod: p.TerminationGracePeriod,
				},
			},
			Disruption: karpv1.Disruption{
				ConsolidationPolicy: p.Disruption.ConsolidationPolicy,
				ConsolidateAfter:    *p.Disruption.ConsolidateAfter,
				Budgets:             Budgets(p, opts.busy(p.Name)),
			},
			Limits: limits(p),
			Weight: p.Weight,
		},
	}
	if p.Cache.Enabled {
		np.Spec.Template.Spec.StartupTaints = []corev1.Taint{StartupTaint}
	}
	if p.Engine.ExistingDaemonSet == nil {
		// The engine DaemonSet is OnDelete (engine.go): a new engine reaches running nodes
		// through Karpenter's drift, which this annotation triggers.
		np.Spec.Template.Annotations = map[string]string{AnnotationEngineTemplate: EngineTemplateHash(p)}
	}
	return np
}

// Requirements are the pool's instance requirements in Karpenter's terms. The NVMe requirement
// is always first: it is what makes these runner nodes.
func Requirements(p *config.Pool) []karpv1.NodeSelectorRequirementWithMinValues {
	req := func(key string, op corev1.NodeSelectorOperator, values ...string) karpv1.NodeSelectorRequirementWithMinValues {
		return karpv1.NodeSelectorRequirementWithMinValues{Key: key, Operator: op, Values: values}
	}
	reqs := []karpv1.NodeSelectorRequirementWithMinValues{
		req(awsv1.LabelInstanceLocalNVME, corev1.NodeSelectorOpGt, strconv.FormatInt(p.NVMe.MinSizeGB, 10)),
		req(corev1.LabelArchStable, corev1.NodeSelectorOpIn, p.Architectures...),
		req(corev1.LabelOSStable, corev1.NodeSelectorOpIn, string(corev1.Linux)),
		req(karpv1.CapacityTypeLabelKey, corev1.NodeSelectorOpIn, p.CapacityTypes...),
	}
	inNotIn := func(key string, in, notIn []string) {
		if len(in) > 0 {
			reqs = append(reqs, req(key, corev1.NodeSelectorOpIn, in...))
		}
		if len(notIn) > 0 {
			reqs = append(reqs, req(key, corev1.NodeSelectorOpNotIn, notIn...))
		}
	}
	sel := p.Instance
	inNotIn(awsv1.LabelInstanceCategory, sel.Categories.In, sel.Categories.NotIn)
	inNotIn(awsv1.LabelInstanceFamily, sel.Families.In, sel.Families.NotIn)
	inNotIn(awsv1.LabelInstanceGeneration, itoa(sel.Generations.In), itoa(sel.Generations.NotIn))
	if sel.MinGeneration > 1 {
		// Gt rather than v1.14's new Gte, so the NodePool also works on older Karpenter.
		reqs = append(reqs, req(awsv1.LabelInstanceGeneration, corev1.NodeSelectorOpGt, strconv.Itoa(sel.MinGeneration-1)))
	}
	return reqs
}

func itoa(ns []int) []string {
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, strconv.Itoa(n))
	}
	return out
}

func limits(p *config.Pool) karpv1.Limits {
	l := karpv1.Limits{}
	if p.Limits.CPU != nil {
		l[corev1.ResourceCPU] = p.Limits.CPU.DeepCopy()
	}
	if p.Limits.Memory != nil {
		l[corev1.ResourceMemory] = p.Limits.Memory.DeepCopy()
	}
	if p.Limits.Nodes != nil {
		l[resourceNodes] = *resource.NewQuantity(*p.Limits.Nodes, resource.DecimalSI)
	}
	if len(l) == 0 {
		return nil
	}
	return l
}

func nodeClassRef(p *config.Pool, opts Options) *karpv1.NodeClassReference {
	if opts.NodeClass == KWOKNodeClass {
		return &karpv1.NodeClassReference{Group: KWOKNodeClassGV.Group, Kind: "KWOKNodeClass", Name: Name(p.Name)}
	}
	return &karpv1.NodeClassReference{Group: EC2NodeClassGV.Group, Kind: "EC2NodeClass", Name: Name(p.Name)}
}

// NodeClass renders the pool's node class of the kind opts selects.
func NodeClass(cfg *config.Config, p *config.Pool, opts Options) client.Object {
	if opts.NodeClass == KWOKNodeClass {
		return &kwokv1alpha1.KWOKNodeClass{
			TypeMeta:   metav1.TypeMeta{APIVersion: KWOKNodeClassGV.String(), Kind: "KWOKNodeClass"},
			ObjectMeta: metav1.ObjectMeta{Name: Name(p.Name), Labels: OwnedLabels(p.Name)},
		}
	}
	return EC2NodeClassFor(&cfg.NodeClass, p)
}

// EC2NodeClassFor renders the pool's EC2NodeClass: the shared cluster settings plus RAID0 over
// the instance store, which is what puts the engine cache (under /mnt/k8s-disks/0) on NVMe.
func EC2NodeClassFor(nc *config.NodeClass, p *config.Pool) *awsv1.EC2NodeClass {
	tags := make(map[string]string, len(nc.Tags)+1)
	for k, v := range nc.Tags {
		tags[k] = v
	}
	// Set last: a cluster-wide tag of the same key must not mislabel every pool's instances.
	tags[LabelPool] = p.Name
	spec := awsv1.EC2NodeClassSpec{
		Role:                       nc.Role,
		AMISelectorTerms:           []awsv1.AMISelectorTerm{{Alias: nc.AMIAlias}},
		SubnetSelectorTerms:        nc.SubnetSelectorTerms,
		SecurityGroupSelectorTerms: nc.SecurityGroupSelectorTerms,
		Tags:                       tags,
		InstanceStorePolicy:        ptr.To(awsv1.InstanceStorePolicyRAID0),
		MetadataOptions:            nc.MetadataOptions,
		Kubelet:                    nc.Kubelet,
		BlockDeviceMappings:        rootVolume(nc),
	}
	if nc.InstanceProfile != "" {
		spec.InstanceProfile = ptr.To(nc.InstanceProfile)
	}
	if nc.UserData != "" {
		spec.UserData = ptr.To(nc.UserData)
	}
	return &awsv1.EC2NodeClass{
		TypeMeta:   metav1.TypeMeta{APIVersion: EC2NodeClassGV.String(), Kind: "EC2NodeClass"},
		ObjectMeta: metav1.ObjectMeta{Name: Name(p.Name), Labels: OwnedLabels(p.Name)},
		Spec:       spec,
	}
}

// rootVolume maps the config's root volume to a block device mapping; none when unset, so the
// AMI's default applies.
func rootVolume(nc *config.NodeClass) []*awsv1.BlockDeviceMapping {
	rv := nc.RootVolume
	if rv == (config.RootVolume{}) {
		return nil
	}
	dev := rv.DeviceName
	if dev == "" {
		dev = defaultRootDevice(nc.AMIAlias)
	}
	bd := &awsv1.BlockDevice{
		VolumeSize: rv.Size,
		IOPS:       rv.IOPS,
		Throughput: rv.Throughput,
		Encrypted:  rv.Encrypted,
		// The root volume holds nothing worth keeping: the cache lives on NVMe and in snapshots.
		DeleteOnTermination: ptr.To(true),
	}
	if rv.Type != "" {
		bd.VolumeType = ptr.To(rv.Type)
	}
	if rv.KMSKeyID != "" {
		bd.KMSKeyID = ptr.To(rv.KMSKeyID)
	}
	return []*awsv1.BlockDeviceMapping{{DeviceName: ptr.To(dev), EBS: bd, RootVolume: true}}
}

// defaultRootDevice is the device the AMI family boots from; Bottlerocket keeps its data
// (and so the kubelet) on the second volume.
func defaultRootDevice(alias string) string {
	family, _, _ := strings.Cut(alias, "@")
	switch family {
	case "bottlerocket":
		return "/dev/xvdb"
	case "windows2019", "windows2022", "windows2025":
		return "/dev/sda1"
	}
	return "/dev/xvda"
}

// NodeClassGVK is the group, version and kind of the node class objects of this kind.
func NodeClassGVK(kind NodeClassKind) schema.GroupVersionKind {
	if kind == KWOKNodeClass {
		return KWOKNodeClassGV.WithKind("KWOKNodeClass")
	}
	return EC2NodeClassGV.WithKind("EC2NodeClass")
}
