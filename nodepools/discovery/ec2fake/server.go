// Package ec2fake is an EC2 endpoint on 127.0.0.1 that speaks the EC2 Query
// protocol for DescribeInstanceTypes, so tests and demos can drive the real
// aws-sdk-go-v2 client (signing, serialization, pagination, retries, XML
// parsing) without AWS.
//
// It honours the filters it receives, pages by MaxResults, records every
// request, and can be told to fail the next requests with throttling, a
// malformed body or an authentication failure.
package ec2fake

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// APIVersion is the EC2 API version the SDK sends and the fake accepts.
const APIVersion = "2016-11-15"

// Fault is an injected failure for one request.
type Fault int

const (
	// FaultThrottle answers HTTP 503 with error code RequestLimitExceeded,
	// which the SDK's standard retryer retries.
	FaultThrottle Fault = iota + 1
	// FaultMalformed answers HTTP 200 with a truncated XML document.
	FaultMalformed
	// FaultAuth answers HTTP 401 with error code AuthFailure (not retried).
	FaultAuth
)

func (f Fault) String() string {
	switch f {
	case FaultThrottle:
		return "throttle"
	case FaultMalformed:
		return "malformed"
	case FaultAuth:
		return "auth"
	}
	return "Fault(" + strconv.Itoa(int(f)) + ")"
}

// Filter is one Filter.N of a request.
type Filter struct {
	Name   string
	Values []string
}

// Request is what the fake recorded about one HTTP request, faulted or not.
type Request struct {
	Action, Version string
	Filters         []Filter // in Filter.N order
	InstanceTypes   []string // InstanceType.N
	MaxResults      int      // 0 when absent
	NextToken       string
	// AccessKeyID is taken from the SigV4 Authorization header ("" if unsigned).
	AccessKeyID string
	// Fault is the injected fault this request got, 0 for none.
	Fault Fault
	Form  url.Values
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base endpoint, "http://127.0.0.1:<port>".
	URL string

	srv *httptest.Server

	mu          sync.Mutex
	catalogue   []InstanceType
	maxPageSize int
	faults      []Fault
	requests    []Request
	seq         int
	// fsr holds "zone/snapshot-id" keys with fast snapshot restore enabled (fsr.go).
	fsr map[string]bool
}

// NewServer starts a fake on a free 127.0.0.1 port serving catalogue
// (DefaultCatalogue() if nil). Close it when done.
func NewServer(catalogue []InstanceType) (*Server, error) {
	if catalogue == nil {
		catalogue = DefaultCatalogue()
	}
	// Bind explicitly to IPv4 loopback: httptest would fall back to [::1],
	// and nothing here should listen beyond loopback.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for fake EC2, %w", err)
	}
	s := &Server{catalogue: slices.Clone(catalogue)}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	_ = s.srv.Listener.Close() // the one httptest opened; replaced by ours
	s.srv.Listener = l
	s.srv.Start()
	s.URL = s.srv.URL
	return s, nil
}

// Close stops the server and waits for in-flight requests.
func (s *Server) Close() { s.srv.Close() }

// SetCatalogue replaces the instance types served from now on.
func (s *Server) SetCatalogue(c []InstanceType) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catalogue = slices.Clone(c)
}

// SetMaxPageSize caps items per page below the client's MaxResults, as EC2
// may; 0 removes the cap. It lets tests exercise pagination with a client
// that always asks for 100.
func (s *Server) SetMaxPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxPageSize = n
}

// FailNext makes the next n requests (after any already queued by FailNext
// or FailAfter) fail with f.
func (s *Server) FailNext(n int, f Fault) { s.FailAfter(0, n, f) }

// FailAfter lets the next skip requests (after any already queued) through,
// then fails n with f: FailAfter(1, 2, FaultThrottle) throttles the second
// and third requests, e.g. the second page of a listing and its first retry.
func (s *Server) FailAfter(skip, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range skip {
		s.faults = append(s.faults, 0)
	}
	for range n {
		s.faults = append(s.faults, f)
	}
}

// PendingFaults is the number of queued faults not yet served.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.faults {
		if f != 0 {
			n++
		}
	}
	return n
}

// Requests returns a copy of the requests received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// apiError is an EC2 error answer.
type apiError struct {
	status        int
	code, message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func invalidParameter(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf(format, args...)}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	requestID := fmt.Sprintf("5e1f0000-0000-4000-8000-%012x", s.seq)

	// The Query protocol allows GET with a query string too; ParseForm reads
	// both, body first for POST.
	if err := r.ParseForm(); err != nil {
		writeError(w, requestID, &apiError{http.StatusBadRequest, "MalformedQueryString", err.Error()})
		return
	}
	req := parseRequest(r)
	if len(s.faults) > 0 {
		req.Fault, s.faults = s.faults[0], s.faults[1:]
	}
	s.requests = append(s.requests, req)

	switch req.Fault {
	case FaultThrottle:
		writeError(w, requestID, &apiError{http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded."})
		return
	case FaultAuth:
		writeError(w, requestID, &apiError{http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials"})
		return
	}

	body, handled, aerr := s.fastSnapshotRestore(req, requestID)
	if !handled {
		body, aerr = s.describe(req, requestID)
	}
	if aerr != nil {
		writeError(w, requestID, aerr)
		return
	}
	if req.Fault == FaultMalformed {
		// Cut mid-document: well-formed HTTP, broken XML.
		body = body[:len(body)/2]
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("X-Amzn-Requestid", requestID)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

var (
	filterNameKey  = regexp.MustCompile(`^Filter\.(\d+)\.Name$`)
	filterValueKey = regexp.MustCompile(`^Filter\.(\d+)\.Value\.(\d+)$`)
	instanceKey    = regexp.MustCompile(`^InstanceType\.(\d+)$`)
	credentialRE   = regexp.MustCompile(`Credential=([^/,\s]+)/`)
)

func parseRequest(r *http.Request) Request {
	f := r.Form
	req := Request{
		Action:    f.Get("Action"),
		Version:   f.Get("Version"),
		NextToken: f.Get("NextToken"),
		Form:      f,
	}
	if m := credentialRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		req.AccessKeyID = m[1]
	}
	req.MaxResults, _ = strconv.Atoi(f.Get("MaxResults")) // validated in describe

	type indexed struct {
		i, j int
		v    string
	}
	var names, values, types []indexed
	for k, vs := range f {
		if len(vs) == 0 {
			continue
		}
		if m := filterNameKey.FindStringSubmatch(k); m != nil {
			i, _ := strconv.Atoi(m[1])
			names = append(names, indexed{i: i, v: vs[0]})
		} else if m := filterValueKey.FindStringSubmatch(k); m != nil {
			i, _ := strconv.Atoi(m[1])
			j, _ := strconv.Atoi(m[2])
			values = append(values, indexed{i: i, j: j, v: vs[0]})
		} else if m := instanceKey.FindStringSubmatch(k); m != nil {
			i, _ := strconv.Atoi(m[1])
			types = append(types, indexed{i: i, v: vs[0]})
		}
	}
	byIndex := func(a, b indexed) int {
		if a.i != b.i {
			return a.i - b.i
		}
		return a.j - b.j
	}
	slices.SortFunc(names, byIndex)
	slices.SortFunc(values, byIndex)
	slices.SortFunc(types, byIndex)
	for _, n := range names {
		flt := Filter{Name: n.v}
		for _, v := range values {
			if v.i == n.i {
				flt.Values = append(flt.Values, v.v)
			}
		}
		req.Filters = append(req.Filters, flt)
	}
	for _, t := range types {
		req.InstanceTypes = append(req.InstanceTypes, t.v)
	}
	return req
}

// describe validates req like EC2 does and renders one page.
func (s *Server) describe(req Request, requestID string) ([]byte, *apiError) {
	switch {
	case req.Action == "":
		return nil, &apiError{http.StatusBadRequest, "MissingAction", "The request must contain the parameter Action"}
	case req.Action != "DescribeInstanceTypes":
		return nil, &apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", req.Action)}
	case req.Version != APIVersion:
		return nil, &apiError{http.StatusBadRequest, "NoSuchVersion", fmt.Sprintf("The requested version (%s) of service AmazonEC2 does not exist", req.Version)}
	case req.AccessKeyID == "":
		// EC2 refuses unsigned requests; this proves the client signs.
		return nil, &apiError{http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials"}
	}

	limit := 100
	if v := req.Form.Get("MaxResults"); v != "" {
		if req.MaxResults < 5 || req.MaxResults > 100 {
			return nil, invalidParameter("Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 100.", v)
		}
		limit = req.MaxResults
	}
	if s.maxPageSize > 0 && s.maxPageSize < limit {
		limit = s.maxPageSize
	}

	matchers := make([]func(InstanceType) bool, 0, len(req.Filters))
	for _, f := range req.Filters {
		m, err := filterMatcher(f)
		if err != nil {
			return nil, err
		}
		matchers = append(matchers, m)
	}
	var matched []InstanceType
	for _, it := range s.catalogue {
		if len(req.InstanceTypes) > 0 && !slices.Contains(req.InstanceTypes, it.Name) {
			continue
		}
		if !slices.ContainsFunc(matchers, func(m func(InstanceType) bool) bool { return !m(it) }) {
			matched = append(matched, it)
		}
	}
	for _, name := range req.InstanceTypes {
		if !slices.ContainsFunc(s.catalogue, func(it InstanceType) bool { return it.Name == name }) {
			return nil, &apiError{http.StatusBadRequest, "InvalidInstanceType", fmt.Sprintf("The following supplied instance types do not exist: [%s]", name)}
		}
	}

	// Tokens carry the offset and a fingerprint of the query, so a client
	// that changes its filters between pages gets an error, as with EC2.
	fp := fingerprint(req)
	offset := 0
	if req.NextToken != "" {
		o, ok := decodeToken(req.NextToken, fp)
		if !ok || o > len(matched) {
			return nil, invalidParameter("The token '%s' is invalid.", req.NextToken)
		}
		offset = o
	}
	end := min(offset+limit, len(matched))
	resp := describeResponse{
		Xmlns:     "http://ec2.amazonaws.com/doc/" + APIVersion + "/",
		RequestID: requestID,
	}
	for _, it := range matched[offset:end] {
		resp.Items = append(resp.Items, toXML(it))
	}
	if end < len(matched) {
		resp.NextToken = encodeToken(end, fp)
	}
	out, err := xml.Marshal(resp)
	if err != nil {
		return nil, &apiError{http.StatusInternalServerError, "InternalError", err.Error()}
	}
	return append([]byte(xml.Header), out...), nil
}

// filterMatcher implements the DescribeInstanceTypes filters warmpool uses
// plus a few neighbours; values within one filter are ORed, filters ANDed.
// Unknown names fail like EC2, so a typo in the client shows up in tests.
func filterMatcher(f Filter) (func(InstanceType) bool, *apiError) {
	if len(f.Values) == 0 {
		return nil, invalidParameter("The filter '%s' requires at least one value.", f.Name)
	}
	anyOf := func(get func(InstanceType) []string) func(InstanceType) bool {
		pats := make([]*regexp.Regexp, len(f.Values))
		for i, v := range f.Values {
			pats[i] = wildcard(v)
		}
		return func(it InstanceType) bool {
			for _, have := range get(it) {
				for _, p := range pats {
					if p.MatchString(have) {
						return true
					}
				}
			}
			return false
		}
	}
	one := func(get func(InstanceType) string) func(InstanceType) bool {
		return anyOf(func(it InstanceType) []string { return []string{get(it)} })
	}
	switch f.Name {
	case "instance-type":
		return one(func(it InstanceType) string { return it.Name }), nil
	case "instance-storage-supported":
		return one(func(it InstanceType) string { return strconv.FormatBool(len(it.Disks) > 0) }), nil
	case "instance-storage-info.nvme-support":
		return anyOf(func(it InstanceType) []string {
			if len(it.Disks) == 0 {
				return nil
			}
			return []string{it.NVMeSupport}
		}), nil
	case "instance-storage-info.total-size-in-gb":
		return anyOf(func(it InstanceType) []string {
			if len(it.Disks) == 0 {
				return nil
			}
			return []string{strconv.FormatInt(it.TotalSizeGB(), 10)}
		}), nil
	case "processor-info.supported-architecture":
		return anyOf(func(it InstanceType) []string { return it.Architectures }), nil
	case "current-generation":
		return one(func(it InstanceType) string { return strconv.FormatBool(it.CurrentGeneration) }), nil
	case "bare-metal":
		return one(func(it InstanceType) string { return strconv.FormatBool(it.BareMetal) }), nil
	case "vcpu-info.default-vcpus":
		return one(func(it InstanceType) string { return strconv.Itoa(int(it.VCPUs)) }), nil
	case "memory-info.size-in-mib":
		return one(func(it InstanceType) string { return strconv.FormatInt(it.MemoryMiB, 10) }), nil
	}
	return nil, invalidParameter("The filter '%s' is invalid", f.Name)
}

// wildcard compiles an EC2 filter value, where * and ? are wildcards.
func wildcard(v string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range v {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func fingerprint(req Request) uint64 {
	h := fnv.New64a()
	for _, f := range req.Filters {
		vs := slices.Clone(f.Values)
		sort.Strings(vs)
		fmt.Fprintf(h, "%s=%s;", f.Name, strings.Join(vs, ","))
	}
	fmt.Fprintf(h, "types=%s", strings.Join(req.InstanceTypes, ","))
	return h.Sum64()
}

func encodeToken(offset int, fp uint64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%x", offset, fp))
}

func decodeToken(tok string, fp uint64) (int, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	var offset int
	var got uint64
	if _, err := fmt.Sscanf(string(raw), "%d:%x", &offset, &got); err != nil || got != fp || offset < 0 {
		return 0, false
	}
	return offset, true
}

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
