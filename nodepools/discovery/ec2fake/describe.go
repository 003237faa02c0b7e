package ec2fake

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/fnv"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// DescribeInstanceTypes: filters, paging tokens bound to the request, and the page itself.

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
