package ec2fake

import (
	"encoding/xml"
	"net/http"
)

// The EC2 Query API's XML: DescribeInstanceTypes responses and error bodies.

func writeError(w http.ResponseWriter, requestID string, e *apiError) {
	// EC2 error bodies use a different root and RequestID spelling than
	// successful answers; the SDK's ec2query error parser expects exactly this.
	body, _ := xml.Marshal(errorResponse{Code: e.code, Message: e.message, RequestID: requestID})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("X-Amzn-Requestid", requestID)
	w.WriteHeader(e.status)
	_, _ = w.Write(append([]byte(xml.Header), body...))
}

type errorResponse struct {
	XMLName   xml.Name `xml:"Response"`
	Code      string   `xml:"Errors>Error>Code"`
	Message   string   `xml:"Errors>Error>Message"`
	RequestID string   `xml:"RequestID"`
}

// The element names below are those the SDK's ec2query deserializer reads
// (service/ec2 deserializers.go, awsEc2query_deserializeDocumentInstanceTypeInfo
// and friends); lists are <item> members.
type describeResponse struct {
	XMLName   xml.Name  `xml:"DescribeInstanceTypesResponse"`
	Xmlns     string    `xml:"xmlns,attr"`
	RequestID string    `xml:"requestId"`
	Items     []xmlType `xml:"instanceTypeSet>item"`
	NextToken string    `xml:"nextToken,omitempty"`
}

type xmlType struct {
	InstanceType                 string      `xml:"instanceType"`
	CurrentGeneration            bool        `xml:"currentGeneration"`
	FreeTierEligible             bool        `xml:"freeTierEligible"`
	SupportedUsageClasses        []string    `xml:"supportedUsageClasses>item"`
	SupportedRootDeviceTypes     []string    `xml:"supportedRootDeviceTypes>item"`
	SupportedVirtualizationTypes []string    `xml:"supportedVirtualizationTypes>item"`
	BareMetal                    bool        `xml:"bareMetal"`
	Hypervisor                   string      `xml:"hypervisor,omitempty"`
	ProcessorInfo                xmlCPU      `xml:"processorInfo"`
	VCpuInfo                     xmlVCPU     `xml:"vCpuInfo"`
	MemoryInfo                   xmlMemory   `xml:"memoryInfo"`
	InstanceStorageSupported     bool        `xml:"instanceStorageSupported"`
	InstanceStorageInfo          *xmlStorage `xml:"instanceStorageInfo,omitempty"`
}

type xmlCPU struct {
	SupportedArchitectures []string `xml:"supportedArchitectures>item"`
}

type xmlVCPU struct {
	DefaultVCpus int32 `xml:"defaultVCpus"`
}

type xmlMemory struct {
	SizeInMiB int64 `xml:"sizeInMiB"`
}

type xmlStorage struct {
	TotalSizeInGB     int64     `xml:"totalSizeInGB"`
	Disks             []xmlDisk `xml:"disks>item"`
	NvmeSupport       string    `xml:"nvmeSupport"`
	EncryptionSupport string    `xml:"encryptionSupport"`
}

type xmlDisk struct {
	SizeInGB int64  `xml:"sizeInGB"`
	Count    int32  `xml:"count"`
	Type     string `xml:"type"`
}

func toXML(it InstanceType) xmlType {
	x := xmlType{
		InstanceType:                 it.Name,
		CurrentGeneration:            it.CurrentGeneration,
		SupportedUsageClasses:        []string{"on-demand", "spot"},
		SupportedRootDeviceTypes:     []string{"ebs"},
		SupportedVirtualizationTypes: []string{"hvm"},
		BareMetal:                    it.BareMetal,
		Hypervisor:                   it.Hypervisor,
		ProcessorInfo:                xmlCPU{SupportedArchitectures: it.Architectures},
		VCpuInfo:                     xmlVCPU{DefaultVCpus: it.VCPUs},
		MemoryInfo:                   xmlMemory{SizeInMiB: it.MemoryMiB},
		InstanceStorageSupported:     len(it.Disks) > 0,
	}
	if it.Hypervisor == "xen" {
		x.SupportedVirtualizationTypes = []string{"hvm", "paravirtual"}
	}
	if len(it.Disks) > 0 {
		enc := "required" // Nitro encrypts instance store at rest
		if it.NVMeSupport == "unsupported" {
			enc = "unsupported"
		}
		st := &xmlStorage{TotalSizeInGB: it.TotalSizeGB(), NvmeSupport: it.NVMeSupport, EncryptionSupport: enc}
		for _, d := range it.Disks {
			st.Disks = append(st.Disks, xmlDisk{SizeInGB: d.SizeGB, Count: d.Count, Type: d.Type})
		}
		x.InstanceStorageInfo = st
	}
	return x
}
