// Package storagecheck decides, from objects already read, whether the storage a cache save or
// restore is about to use can work, and whether a restore fits its time budget. It makes no
// client calls: the controller (controller/enginecache) and `warmpool render --check` read the
// StorageClasses, VolumeSnapshotClasses, CSINodes and Nodes and pass them in, so every check
// is a table test here.
//
// Each failure is a Problem: a stable Check (the metric label and the cold-start or save
// outcome's detail) and a Message that names the numbers or objects and what to change.
package storagecheck

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Budget is a pool's restore time budget (config cache.restore).
type Budget struct {
	// Throughput is the expected restore read rate, bytes per second.
	Throughput int64
	// MaxWait caps a restore, from the choice of its snapshot to the node's release.
	MaxWait time.Duration
	// Slack is what is not copying: CSI registration, volume creation and attach, pod start.
	Slack time.Duration
}

// timeoutHeadroom is how much longer than its estimated transfer an attempted restore may run
// (never beyond MaxWait): the throughput is an expectation, and timing out a copy that was
// nearly done wastes all of it.
const timeoutHeadroom = 1.5

// Transfer is the time to read bytes at Throughput (0 when the throughput is not positive:
// Valid reports that).
func (b Budget) Transfer(bytes int64) time.Duration {
	if b.Throughput <= 0 || bytes <= 0 {
		return 0
	}
	return time.Duration(float64(bytes) / float64(b.Throughput) * float64(time.Second))
}

// Estimate is the expected time of a restore of bytes: slack plus transfer.
func (b Budget) Estimate(bytes int64) time.Duration { return b.Slack + b.Transfer(bytes) }

// MaxBytes is the most a restore can read within MaxWait: Throughput x (MaxWait - Slack).
func (b Budget) MaxBytes() int64 {
	copying := b.MaxWait - b.Slack
	if b.Throughput <= 0 || copying <= 0 {
		return 0
	}
	return int64(float64(b.Throughput) * copying.Seconds())
}

// Timeout bounds an attempted restore of bytes: the slack plus the transfer with headroom,
// never beyond MaxWait.
func (b Budget) Timeout(bytes int64) time.Duration {
	return min(b.MaxWait, b.Slack+time.Duration(float64(b.Transfer(bytes))*timeoutHeadroom))
}

// Valid says what is wrong with the budget itself, "" when nothing is.
func (b Budget) Valid() string {
	switch {
	case b.Throughput <= 0:
		return "throughput must be > 0"
	case b.MaxWait <= 0:
		return "maxWait must be > 0"
	case b.Slack < 0:
		return "provisioningSlack must be >= 0"
	case b.Slack >= b.MaxWait:
		return fmt.Sprintf("provisioningSlack (%s) must be below maxWait (%s), or no time is left to copy", b.Slack, b.MaxWait)
	}
	return ""
}

// OverBudget is the Problem of a snapshot of bytes whose restore cannot finish within MaxWait,
// nil when it can. what names the snapshot for the message.
func (b Budget) OverBudget(what string, bytes int64) *Problem {
	if b.Valid() != "" {
		return &Problem{Check: CheckOverBudget, Message: fmt.Sprintf("the pool's restore budget is invalid (%s); %s is not restored", b.Valid(), what)}
	}
	est := b.Estimate(bytes)
	if est <= b.MaxWait {
		return nil
	}
	// The throughput that would fit: the bytes over the copying part of MaxWait.
	need := float64(bytes) / (b.MaxWait - b.Slack).Seconds()
	return &Problem{Check: CheckOverBudget, Message: fmt.Sprintf(
		"%s holds %s; at the pool's restore throughput of %s/s that takes %s plus %s of provisioning slack, over the pool's cap of %s (it can restore at most %s). "+
			"Raise cache.restore.throughput (with volumeInitializationRate on cache.restoreStorageClassName, Fast Snapshot Restore or a faster volume type; %s/s would fit), "+
			"raise cache.restore.maxWait, or keep the cache smaller (cache.restore.sizeGCToBudget)",
		what, FormatBytes(bytes), FormatBytes(b.Throughput), b.Transfer(bytes).Round(time.Second), b.Slack, b.MaxWait, FormatBytes(b.MaxBytes()), FormatBytes(int64(need)))}
}

// FormatBytes renders a byte count in binary units, as Kubernetes quantities do ("37Gi").
func FormatBytes(n int64) string {
	if n < 0 {
		n = 0
	}
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n >= u.size {
			v := float64(n) / float64(u.size)
			if v == float64(int64(v)) {
				return fmt.Sprintf("%d%s", int64(v), u.suffix)
			}
			return fmt.Sprintf("%.1f%s", v, u.suffix)
		}
	}
	return resource.NewQuantity(n, resource.BinarySI).String()
}
