package scaling

// The jobs-per-node step: the configured scaling.jobsPerNode, or one derived from what a node
// of the pool offers runner pods.

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/scaling/policy"
	"warmpool.io/warmpool/nodepools"
	"warmpool.io/warmpool/nodepools/discovery"
)

// InstanceTypes lists the instance types the manager knows for a config (its discovery
// settings); nil with discovery off.
type InstanceTypes func(ctx context.Context, cfg *config.Config) ([]discovery.InstanceType, error)

// SetInstanceTypes sets where instance types come from. Call it before the manager starts.
func (c *Controller) SetInstanceTypes(f InstanceTypes) { c.instanceTypes = f }

// Where jobs per node came from, as logged.
const (
	jobsConfigured    = "configured"
	jobsNoRequests    = "default: no runnerRequests"
	jobsNodes         = "the pool's Ready nodes"
	jobsInstanceTypes = "the instance types the pool admits"
	jobsUnknown       = "default: no Ready node and no known instance type to derive it from"
)

// jobsPerNode is the configured scaling.jobsPerNode, or, when it is 0 and runnerRequests are
// set, derived from what one node offers: the pool's Ready nodes (their allocatable minus
// their DaemonSet pods), else the instance types the pool admits (estimated allocatable minus
// the engine's requests), else 1. retry is set when the instance types were asked for and
// could not be listed: no event says when they can, so the pool looks again soon.
func (c *Controller) jobsPerNode(ctx context.Context, cfg *config.Config, p *config.Pool, nodeShapes []corev1.ResourceList) (n int, from string, retry bool) {
	s := &p.Scaling
	switch {
	case s.JobsPerNode > 0:
		return s.JobsPerNode, jobsConfigured, false
	case len(s.RunnerRequests) == 0:
		return 1, jobsNoRequests, false
	}
	if n, ok := policy.DeriveJobsPerNode(s.RunnerRequests, nodeShapes); ok {
		return n, jobsNodes, false
	}
	shapes, err := c.instanceTypeShapes(ctx, cfg, p)
	if n, ok := policy.DeriveJobsPerNode(s.RunnerRequests, shapes); ok {
		return n, jobsInstanceTypes, err != nil
	}
	return 1, jobsUnknown, err != nil
}

// instanceTypeShapes estimates what a new node of each instance type the pool admits offers,
// and says whether listing the instance types failed.
func (c *Controller) instanceTypeShapes(ctx context.Context, cfg *config.Config, p *config.Pool) ([]corev1.ResourceList, error) {
	if c.instanceTypes == nil {
		return nil, nil
	}
	types, err := c.instanceTypes(ctx, cfg)
	if err != nil {
		log.FromContext(ctx).Info("instance types unavailable for deriving jobs per node", "pool", p.Name, "error", err.Error())
	}
	var engine corev1.ResourceList
	if r := p.Engine.Resources; r != nil && p.Engine.ExistingDaemonSet == nil {
		engine = r.Requests
	}
	var maxPods int32
	if k := cfg.NodeClass.Kubelet; k != nil && k.MaxPods != nil {
		maxPods = *k.MaxPods
	}
	var shapes []corev1.ResourceList
	for _, it := range discovery.Filter(nodepools.DiscoveryRequirements(p), types) {
		shapes = append(shapes, policy.Available(policy.EstimateAllocatable(it.VCPU, it.MemoryMiB, maxPods), engine))
	}
	return shapes, err
}
