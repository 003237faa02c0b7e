package ec2fake

// Disk is one group of identical instance-store disks.
type Disk struct {
	SizeGB int64
	Count  int32
	Type   string // "ssd" or "hdd"
}

// InstanceType is one catalogue entry, in EC2's own terms.
type InstanceType struct {
	Name string
	// Architectures in EC2 naming: "x86_64", "arm64", "i386", "x86_64_mac".
	Architectures     []string
	VCPUs             int32
	MemoryMiB         int64
	CurrentGeneration bool
	BareMetal         bool
	Hypervisor        string // "nitro", "xen", or "" for bare metal
	// Disks is the instance store; none means instanceStorageSupported=false.
	Disks []Disk
	// NVMeSupport is "required", "supported" or "unsupported"; only
	// meaningful with Disks.
	NVMeSupport string
}

// TotalSizeGB is what EC2 reports as instanceStorageInfo.totalSizeInGB.
func (t InstanceType) TotalSizeGB() int64 {
	var n int64
	for _, d := range t.Disks {
		n += d.SizeGB * int64(d.Count)
	}
	return n
}

// nvme is a Nitro instance type with NVMe instance-store SSDs.
func nvme(name, arch string, vcpus int32, memMiB int64, disks int32, diskGB int64) InstanceType {
	return InstanceType{
		Name: name, Architectures: []string{arch}, VCPUs: vcpus, MemoryMiB: memMiB,
		CurrentGeneration: true, Hypervisor: "nitro",
		Disks: []Disk{{SizeGB: diskGB, Count: disks, Type: "ssd"}}, NVMeSupport: "required",
	}
}

func metal(t InstanceType) InstanceType {
	t.BareMetal, t.Hypervisor = true, ""
	return t
}

// ebsOnly is an instance type without instance store.
func ebsOnly(name, arch string, vcpus int32, memMiB int64) InstanceType {
	return InstanceType{
		Name: name, Architectures: []string{arch}, VCPUs: vcpus, MemoryMiB: memMiB,
		CurrentGeneration: true, Hypervisor: "nitro",
	}
}

const gib = 1024

// DefaultCatalogue returns real instance types with their published specs
// (vCPUs, memory, instance-store layout). It mixes NVMe families that
// warmpool targets with types the discovery filters must exclude: EBS-only
// (c6i, m7g, u-6tb1) and instance store without NVMe (d2 HDD, m3 SSD).
// Entries are grouped by family, not sorted, as EC2 does not sort either.
// Each call returns a fresh slice.
func DefaultCatalogue() []InstanceType {
	return []InstanceType{
		// Compute optimized, Intel Ice Lake, NVMe.
		nvme("c6id.large", "x86_64", 2, 4*gib, 1, 118),
		nvme("c6id.xlarge", "x86_64", 4, 8*gib, 1, 237),
		nvme("c6id.2xlarge", "x86_64", 8, 16*gib, 1, 474),
		nvme("c6id.4xlarge", "x86_64", 16, 32*gib, 1, 950),
		nvme("c6id.8xlarge", "x86_64", 32, 64*gib, 1, 1900),
		metal(nvme("c6id.metal", "x86_64", 128, 256*gib, 4, 1900)),
		// General purpose, Intel Ice Lake, NVMe.
		nvme("m6id.large", "x86_64", 2, 8*gib, 1, 118),
		nvme("m6id.xlarge", "x86_64", 4, 16*gib, 1, 237),
		nvme("m6id.2xlarge", "x86_64", 8, 32*gib, 1, 474),
		nvme("m6id.4xlarge", "x86_64", 16, 64*gib, 1, 950),
		// Memory optimized, Intel Ice Lake, NVMe.
		nvme("r6id.large", "x86_64", 2, 16*gib, 1, 118),
		nvme("r6id.xlarge", "x86_64", 4, 32*gib, 1, 237),
		nvme("r6id.2xlarge", "x86_64", 8, 64*gib, 1, 474),
		// Graviton3, NVMe.
		nvme("c7gd.medium", "arm64", 1, 2*gib, 1, 59),
		nvme("c7gd.large", "arm64", 2, 4*gib, 1, 118),
		nvme("c7gd.xlarge", "arm64", 4, 8*gib, 1, 237),
		nvme("c7gd.2xlarge", "arm64", 8, 16*gib, 1, 474),
		nvme("c7gd.4xlarge", "arm64", 16, 32*gib, 1, 950),
		nvme("m7gd.large", "arm64", 2, 8*gib, 1, 118),
		nvme("m7gd.xlarge", "arm64", 4, 16*gib, 1, 237),
		nvme("m7gd.2xlarge", "arm64", 8, 32*gib, 1, 474),
		metal(nvme("m7gd.metal", "arm64", 64, 256*gib, 2, 1900)),
		// Storage optimized, NVMe.
		nvme("i4i.large", "x86_64", 2, 16*gib, 1, 468),
		nvme("i4i.xlarge", "x86_64", 4, 32*gib, 1, 937),
		nvme("i4i.2xlarge", "x86_64", 8, 64*gib, 1, 1875),
		nvme("i4i.8xlarge", "x86_64", 32, 256*gib, 2, 3750),
		// Previous Nitro generation, NVMe.
		nvme("c5d.large", "x86_64", 2, 4*gib, 1, 50),
		nvme("c5d.xlarge", "x86_64", 4, 8*gib, 1, 100),
		nvme("c5d.2xlarge", "x86_64", 8, 16*gib, 1, 200),
		nvme("c5d.9xlarge", "x86_64", 36, 72*gib, 1, 900),
		nvme("m5d.large", "x86_64", 2, 8*gib, 1, 75),
		nvme("m5d.xlarge", "x86_64", 4, 16*gib, 1, 150),
		nvme("m5d.4xlarge", "x86_64", 16, 64*gib, 2, 300),
		// Memory optimized with a long family name, NVMe.
		nvme("x2iedn.xlarge", "x86_64", 4, 128*gib, 1, 118),
		// EBS only: excluded by instance-storage-supported=true.
		ebsOnly("c6i.large", "x86_64", 2, 4*gib),
		ebsOnly("c6i.xlarge", "x86_64", 4, 8*gib),
		ebsOnly("m7g.large", "arm64", 2, 8*gib),
		ebsOnly("m7g.xlarge", "arm64", 4, 16*gib),
		ebsOnly("u-6tb1.56xlarge", "x86_64", 224, 6144*gib),
		// Instance store without NVMe: excluded by nvme-support.
		{
			Name: "d2.xlarge", Architectures: []string{"x86_64"}, VCPUs: 4, MemoryMiB: 31232,
			CurrentGeneration: true, Hypervisor: "xen",
			Disks: []Disk{{SizeGB: 2000, Count: 3, Type: "hdd"}}, NVMeSupport: "unsupported",
		},
		{
			Name: "m3.medium", Architectures: []string{"i386", "x86_64"}, VCPUs: 1, MemoryMiB: 3840,
			Hypervisor: "xen",
			Disks:      []Disk{{SizeGB: 4, Count: 1, Type: "ssd"}}, NVMeSupport: "unsupported",
		},
	}
}
