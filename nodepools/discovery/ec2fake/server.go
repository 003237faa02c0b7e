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
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
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
