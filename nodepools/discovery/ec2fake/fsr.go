package ec2fake

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// EBS Fast Snapshot Restore: EnableFastSnapshotRestores and DisableFastSnapshotRestores, for
// the cache controller. The fake keeps which snapshot is enabled in which zone; snapshot ids
// must look like EBS ids ("snap-" and hex), and zones must be given, as EC2 requires.

var (
	fsrZoneKey     = regexp.MustCompile(`^AvailabilityZone\.(\d+)$`)
	fsrSnapshotKey = regexp.MustCompile(`^SourceSnapshotId\.(\d+)$`)
	snapshotIDRE   = regexp.MustCompile(`^snap-[0-9a-f]{8,17}$`)
)

// FastSnapshotRestores returns the enabled snapshot ids per zone, each list sorted.
func (s *Server) FastSnapshotRestores() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for k := range s.fsr {
		zone, snap, _ := strings.Cut(k, "/")
		out[zone] = append(out[zone], snap)
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// fastSnapshotRestore answers the two FSR actions; handled is false for any other action. The
// caller holds s.mu.
func (s *Server) fastSnapshotRestore(req Request, requestID string) (body []byte, handled bool, aerr *apiError) {
	var enable bool
	switch req.Action {
	case "EnableFastSnapshotRestores":
		enable = true
	case "DisableFastSnapshotRestores":
	default:
		return nil, false, nil
	}
	switch {
	case req.Version != APIVersion:
		return nil, true, &apiError{http.StatusBadRequest, "NoSuchVersion", fmt.Sprintf("The requested version (%s) of service AmazonEC2 does not exist", req.Version)}
	case req.AccessKeyID == "":
		return nil, true, &apiError{http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials"}
	}
	zones, snaps := indexedValues(req, fsrZoneKey), indexedValues(req, fsrSnapshotKey)
	if len(zones) == 0 {
		return nil, true, &apiError{http.StatusBadRequest, "MissingParameter", "The request must contain the parameter AvailabilityZone"}
	}
	if len(snaps) == 0 {
		return nil, true, &apiError{http.StatusBadRequest, "MissingParameter", "The request must contain the parameter SourceSnapshotId"}
	}
	if s.fsr == nil {
		s.fsr = map[string]bool{}
	}
	resp := fsrResponse{Xmlns: "http://ec2.amazonaws.com/doc/" + APIVersion + "/", RequestID: requestID}
	state := "enabling"
	resp.XMLName.Local = "EnableFastSnapshotRestoresResponse"
	if !enable {
		state = "disabling"
		resp.XMLName.Local = "DisableFastSnapshotRestoresResponse"
	}
	for _, snap := range snaps {
		if !snapshotIDRE.MatchString(snap) {
			resp.Unsuccessful = append(resp.Unsuccessful, fsrError{SnapshotID: snap, Errors: []fsrStateError{{
				AvailabilityZone: zones[0], Code: "InvalidSnapshot.NotFound", Message: fmt.Sprintf("The snapshot '%s' does not exist.", snap),
			}}})
			continue
		}
		for _, z := range zones {
			if enable {
				s.fsr[z+"/"+snap] = true
			} else {
				delete(s.fsr, z+"/"+snap)
			}
			resp.Successful = append(resp.Successful, fsrSuccess{SnapshotID: snap, AvailabilityZone: z, State: state})
		}
	}
	out, err := xml.Marshal(resp)
	if err != nil {
		return nil, true, &apiError{http.StatusInternalServerError, "InternalError", err.Error()}
	}
	return append([]byte(xml.Header), out...), true, nil
}

// indexedValues reads a flattened Query list (Key.1, Key.2, ...) in index order.
func indexedValues(req Request, key *regexp.Regexp) []string {
	type kv struct {
		i int
		v string
	}
	var items []kv
	for k, vs := range req.Form {
		if m := key.FindStringSubmatch(k); m != nil && len(vs) > 0 {
			i, _ := strconv.Atoi(m[1])
			items = append(items, kv{i, vs[0]})
		}
	}
	slices.SortFunc(items, func(a, b kv) int { return a.i - b.i })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out
}

// The element names are those the SDK's ec2query deserializer reads for these outputs.
type fsrResponse struct {
	XMLName      xml.Name
	Xmlns        string       `xml:"xmlns,attr"`
	RequestID    string       `xml:"requestId"`
	Successful   []fsrSuccess `xml:"successful>item"`
	Unsuccessful []fsrError   `xml:"unsuccessful>item"`
}

type fsrSuccess struct {
	SnapshotID       string `xml:"snapshotId"`
	AvailabilityZone string `xml:"availabilityZone"`
	State            string `xml:"state"`
}

type fsrError struct {
	SnapshotID string          `xml:"snapshotId"`
	Errors     []fsrStateError `xml:"fastSnapshotRestoreStateErrorSet>item"`
}

type fsrStateError struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Code             string `xml:"error>code"`
	Message          string `xml:"error>message"`
}
