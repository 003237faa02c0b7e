package operator

// The permissions every controller of this manager needs, as kubebuilder RBAC markers:
// `make manifests` turns them into deploy/helm/warmpool/files/rbac/role.yaml, whose rules the
// chart's ClusterRole and Role carry. No wildcards: each line names what a controller really
// touches. Server-side apply is a PATCH that creates the object when it is missing, so an
// applied kind needs both "create" and "patch"; reads through the manager's cache need
// "list" and "watch" (informers), and "get" for uncached reads.
//
// Markers with namespace=warmpool become the Role, bound in the release namespace (the chart
// replaces the name and namespace): the manager's cache is restricted to that namespace for
// these kinds. The rest is cluster-wide (the ClusterRole).

// pools: reads its ConfigMap, applies and prunes NodePools, node classes and the engine
// DaemonSets (and their engine ConfigMaps) in warmpool's namespace; watches DaemonSets in every
// namespace, as pools[].engine.existingDaemonSet may name one anywhere; Events on the ConfigMap,
// NodePools and Nodes.
// +kubebuilder:rbac:groups="",namespace=warmpool,resources=configmaps,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,namespace=warmpool,resources=daemonsets,verbs=create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=karpenter.sh,resources=nodepools,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=karpenter.k8s.aws,resources=ec2nodeclasses,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=karpenter.kwok.sh,resources=kwoknodeclasses,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// scaling: placeholder Deployments in warmpool's namespace and their shared PriorityClass
// (applied, never read back); counts a pool's nodes and the pods on them; reads queue-source
// credentials from Secrets in warmpool's namespace (cached, so list and watch too).
// +kubebuilder:rbac:groups=apps,namespace=warmpool,resources=deployments,verbs=get;list;watch;create;patch;delete
// Or, for pools with scaling.headroom capacityBuffer, a Karpenter CapacityBuffer and the
// PodTemplate it references (applied and deleted; the buffer is read once per pool after a
// restart, for the scaling state recorded on it).
// +kubebuilder:rbac:groups=autoscaling.x-k8s.io,namespace=warmpool,resources=capacitybuffers,verbs=get;create;patch;delete
// +kubebuilder:rbac:groups="",namespace=warmpool,resources=podtemplates,verbs=create;patch;delete
// +kubebuilder:rbac:groups=scheduling.k8s.io,resources=priorityclasses,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=warmpool,resources=secrets,verbs=get;list;watch

// queue: the Actions Runner Controller source reads scale sets in the runners' namespace,
// which can be any.
// +kubebuilder:rbac:groups=actions.github.com,resources=autoscalingrunnersets;ephemeralrunnersets,verbs=get;list;watch

// cache: guard pods, save/restore Jobs and their PVCs, VolumeSnapshots in warmpool's namespace;
// evicts engine pods (an existingDaemonSet's may run in any namespace); reads snapshot contents
// (the EBS snapshot id for Fast Snapshot Restore) and NodeClaims (deadlines, disruption
// reasons); removes the startup taint from Nodes. Lists Events of reason SpotInterrupted: Karpenter's
// interruption controller marks a spot NodeClaim it deletes with that Event and nothing else,
// and only then is a save cut to the two-minute notice window.
// +kubebuilder:rbac:groups="",resources=events,verbs=list
// +kubebuilder:rbac:groups="",namespace=warmpool,resources=pods,verbs=create;delete;patch
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups=batch,namespace=warmpool,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",namespace=warmpool,resources=persistentvolumeclaims,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,namespace=warmpool,resources=volumesnapshots,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshotcontents,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=patch
// +kubebuilder:rbac:groups=karpenter.sh,resources=nodeclaims,verbs=get;list;watch

// cache storage checks: the save and restore StorageClasses and the VolumeSnapshotClass (CSI,
// same driver), and a node's CSINode (its CSI driver registered) before a volume is made.
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses;csinodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshotclasses,verbs=get;list;watch

// leader election (and the leader label, a pod patch above): the Lease in warmpool's namespace.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=warmpool,resources=leases,verbs=get;create;update
