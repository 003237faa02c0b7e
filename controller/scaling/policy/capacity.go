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
