package policy

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// JobsPerNode derives how many runner pods fit on one node: the minimum over cpu and memory of
// floor(allocatable / request). Resources the runner does not request are ignored, and so is
// everything but cpu and memory.
//
// Pass allocatable minus what DaemonSets (the Dagger engine, log agents) already take, or the
// result overcounts. It errors when the runner requests neither cpu nor memory (nothing to divide
// by: configure JobsPerNode instead), when the node lacks a requested resource, and when one runner
// does not fit on the node at all, so the result is always at least 1.
func JobsPerNode(runnerRequests, nodeAllocatable corev1.ResourceList) (int, error) {
	best := 0
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, ok := runnerRequests[name]
		if !ok || req.Sign() <= 0 {
			continue
		}
		alloc, ok := nodeAllocatable[name]
		if !ok {
			return 0, fmt.Errorf("runner requests %s %s but the node's allocatable has none", req.String(), name)
		}
		n := fits(name, req, alloc)
		if n < 1 {
			return 0, fmt.Errorf("runner requests %s %s, more than the node's allocatable %s", req.String(), name, alloc.String())
		}
		if best == 0 || n < best {
			best = n
		}
	}
	if best == 0 {
		return 0, errors.New("runner requests neither cpu nor memory; configure jobsPerNode")
	}
	return best, nil
}

// DeriveJobsPerNode is how many runner pods one node of a pool takes when jobsPerNode is not
// configured: the minimum of JobsPerNode over every node shape given (the pool's Ready nodes,
// or the instance types it may launch), so the smallest node still fits the jobs counted for
// it. A shape a runner does not fit on counts as 1: a node runs at least one job, or the pool
// could never serve its queue. ok is false when nothing can be derived (no shape, or requests
// with neither cpu nor memory); the caller then falls back to 1.
func DeriveJobsPerNode(runnerRequests corev1.ResourceList, shapes []corev1.ResourceList) (n int, ok bool) {
	for _, alloc := range shapes {
		got, err := JobsPerNode(runnerRequests, alloc)
		if err != nil {
			if !requestsCPUOrMemory(runnerRequests) {
				return 0, false
			}
			got = 1
		}
		if n == 0 || got < n {
			n = got
		}
	}
	return n, n > 0
}

func requestsCPUOrMemory(r corev1.ResourceList) bool {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r[name]; ok && q.Sign() > 0 {
			return true
		}
	}
	return false
}

// Available is what a node leaves for runner pods: its allocatable minus the requests of the
// pods every node of the pool carries anyway (DaemonSets: the Dagger engine, log agents).
// Nothing goes below zero.
func Available(allocatable corev1.ResourceList, taken ...corev1.ResourceList) corev1.ResourceList {
	out := allocatable.DeepCopy()
	for _, t := range taken {
		for name, q := range t {
			a, ok := out[name]
			if !ok {
				continue
			}
			a.Sub(q)
			if a.Sign() < 0 {
				a = resource.Quantity{Format: a.Format}
			}
			out[name] = a
		}
	}
	return out
}

// EstimateAllocatable approximates the allocatable cpu and memory of an instance type the pool
// has no node of yet, the way Karpenter's AWS provider does before launching one: memory minus
// the hypervisor's share (7.5%), kube-reserved (255Mi + 11Mi per pod) and the 100Mi eviction
// threshold; cpu minus kube-reserved (6% of the first core, 1% of the second, 0.5% of the next
// two, 0.25% of the rest). maxPods is the kubelet's pod limit (110 unless configured).
func EstimateAllocatable(vcpu int32, memoryMiB int64, maxPods int32) corev1.ResourceList {
	if maxPods <= 0 {
		maxPods = 110
	}
	milli := int64(vcpu) * 1000
	// In tenths of a millicore, so the 0.25% (2.5m) steps add up exactly; rounded up, so the
	// estimate never promises more than the node will have.
	var tenths int64
	for i := int64(0); i < int64(vcpu); i++ {
		switch {
		case i == 0:
			tenths += 600
		case i == 1:
			tenths += 100
		case i < 4:
			tenths += 50
		default:
			tenths += 25
		}
	}
	reserved := (tenths + 9) / 10
	mem := memoryMiB - memoryMiB*75/1000 - (255 + 11*int64(maxPods)) - 100
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(max(milli-reserved, 0), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(max(mem, 0)*1024*1024, resource.BinarySI),
	}
}

// fits is floor(alloc/req). CPU is compared in millicores so "500m" divides exactly; memory in
// bytes, where milli-units would overflow int64 on large nodes.
func fits(name corev1.ResourceName, req, alloc resource.Quantity) int {
	r, a := req.Value(), alloc.Value()
	if name == corev1.ResourceCPU {
		r, a = req.MilliValue(), alloc.MilliValue()
	}
	if a <= 0 {
		return 0
	}
	return int(a / r)
}

// Busy reports whether a pool has work or is expected to: queued or running jobs, or an active
// warm window. Disruption-budget actuators use it to stop Karpenter consolidating warm nodes while
// they are about to be needed.
func Busy(queued, running int, warmWindowActive bool) bool {
	return queued > 0 || running > 0 || warmWindowActive
}

// Surplus is how many of a busy pool's nodes Karpenter may consolidate: none when the budget
// blocks (surplus false), else the nodes beyond desired. Desired nodes stay protected because
// Karpenter counts nodes already being disrupted against the budget, and current excludes
// nodes being deleted, so the allowance shrinks as the surplus goes.
func Surplus(surplus bool, current, desired int) int {
	if !surplus {
		return 0
	}
	return max(0, current-desired)
}
