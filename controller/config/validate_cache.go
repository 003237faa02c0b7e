package config

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validateCache checks a pool's cache section: the classes, size, retention, fast snapshot
// restore and the restore budget.
func validateCache(p *Pool, fp *field.Path) field.ErrorList {
	c := &p.Cache
	var errs field.ErrorList
	if c.Size.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("size"), c.Size.String(), "must be > 0"))
	}
	for _, s := range [][2]string{{"storageClassName", c.StorageClassName}, {"restoreStorageClassName", c.RestoreStorageClassName}, {"snapshotClassName", c.SnapshotClassName}} {
		if s[1] == "" || s[0] == "restoreStorageClassName" && s[1] == c.StorageClassName {
			continue // the restore class defaults to the save class, whose error says it all
		}
		for _, msg := range validation.IsDNS1123Subdomain(s[1]) {
			errs = append(errs, field.Invalid(fp.Child(s[0]), s[1], msg))
		}
	}
	if c.Retention.Keep < 1 {
		errs = append(errs, field.Invalid(fp.Child("retention", "keep"), c.Retention.Keep, "must be >= 1"))
	}
	if c.Retention.MaxAge.Duration <= 0 {
		errs = append(errs, field.Invalid(fp.Child("retention", "maxAge"), c.Retention.MaxAge.Duration.String(), "must be > 0"))
	}
	if f := c.FastSnapshotRestore; f != nil {
		if len(f.AvailabilityZones) == 0 {
			errs = append(errs, field.Required(fp.Child("fastSnapshotRestore", "availabilityZones"), "the zones to enable fast snapshot restore in"))
		}
		for i, z := range f.AvailabilityZones {
			if z == "" {
				errs = append(errs, field.Required(fp.Child("fastSnapshotRestore", "availabilityZones").Index(i), "a zone name like us-west-2a"))
			}
		}
	}
	errs = append(errs, validateCacheRestore(p, fp.Child("restore"))...)
	return errs
}

var whenJobsWait = sets.New(WhenJobsWaitCold, WhenJobsWaitRestore)

// validateCacheRestore checks the restore budget, and that a GC size derived from it is the
// only one.
func validateCacheRestore(p *Pool, fp *field.Path) field.ErrorList {
	r := &p.Cache.Restore
	var errs field.ErrorList
	if r.Throughput.Sign() <= 0 {
		errs = append(errs, field.Invalid(fp.Child("throughput"), r.Throughput.String(), `must be > 0 bytes per second, e.g. "125Mi" (gp3's baseline)`))
	}
	if r.MaxWait.Duration <= 0 {
		errs = append(errs, field.Invalid(fp.Child("maxWait"), r.MaxWait.Duration.String(), "must be > 0"))
	}
	switch slack := r.ProvisioningSlack.Duration; {
	case slack < 0:
		errs = append(errs, field.Invalid(fp.Child("provisioningSlack"), slack.String(), "must be >= 0"))
	case r.MaxWait.Duration > 0 && slack >= r.MaxWait.Duration:
		errs = append(errs, field.Invalid(fp.Child("provisioningSlack"), slack.String(),
			fmt.Sprintf("must be below maxWait (%s): no time would be left to copy, so no cache would ever be restored", r.MaxWait.Duration)))
	}
	if !whenJobsWait.Has(r.WhenJobsWait) {
		errs = append(errs, field.NotSupported(fp.Child("whenJobsWait"), r.WhenJobsWait, sets.List(whenJobsWait)))
	}
	if !r.SizeGCToBudget || len(errs) > 0 {
		return errs
	}
	switch {
	case p.Engine.ExistingDaemonSet != nil:
		errs = append(errs, field.Forbidden(fp.Child("sizeGCToBudget"),
			"warmpool does not render the engine config of an engine.existingDaemonSet: set its gc.maxUsedSpace to "+r.GCMaxUsedSpace()+" yourself"))
	case p.Engine.GC != nil && p.Engine.GC.MaxUsedSpace != "" && p.Engine.GC.MaxUsedSpace != r.GCMaxUsedSpace():
		errs = append(errs, field.Forbidden(fp.Child("sizeGCToBudget"),
			fmt.Sprintf("engine.gc.maxUsedSpace is set (%s) and would be derived as %s: set one or the other", p.Engine.GC.MaxUsedSpace, r.GCMaxUsedSpace())))
	}
	return errs
}

// validateCacheOS rejects the cache on Bottlerocket: Bottlerocket binds its ephemeral storage
// (the NVMe array) to /var/lib/containerd, /var/lib/kubelet and /var/log/pods, not to
// /mnt/k8s-disks/0, so the engine's hostPath there would be on the EBS root volume, and a save
// would copy (and a restore fill) the root volume instead of the NVMe cache.
func validateCacheOS(c *Config) field.ErrorList {
	family, _, _ := strings.Cut(c.NodeClass.AMIAlias, "@")
	if family != "bottlerocket" {
		return nil
	}
	var errs field.ErrorList
	for i := range c.Pools {
		if c.Pools[i].Cache.Enabled {
			errs = append(errs, field.Forbidden(field.NewPath("pools").Index(i).Child("cache", "enabled"), fmt.Sprintf(
				"the cache needs the NVMe RAID0 array at %s, which Bottlerocket (nodeClass.amiAlias %s) does not mount there (it binds its ephemeral storage to /var/lib/containerd, /var/lib/kubelet and /var/log/pods): use an al2023 AMI for cache-enabled pools",
				NVMeMountPath, c.NodeClass.AMIAlias)))
		}
	}
	return errs
}
