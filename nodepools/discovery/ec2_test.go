package discovery

import (
	"context"
	"errors"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"

	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

const testAccessKey = "AKIDWARMPOOLTEST"

func startFake(t *testing.T) *ec2fake.Server {
	t.Helper()
	srv, err := ec2fake.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// newLister builds the real SDK client against srv, with static credentials,
// no shared config files (hermetic), and retries without backoff delay.
func newLister(t *testing.T, srv *ec2fake.Server, maxAttempts int) *EC2 {
	t.Helper()
	client, err := NewEC2Client(t.Context(), "us-east-1", srv.URL,
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(testAccessKey, "secret", "")),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
		WithRetryPolicy(maxAttempts, 0),
	)
	if err != nil {
		t.Fatal(err)
	}
	return NewEC2(client)
}

func typeNames(ts []InstanceType) []string {
	out := make([]string, 0, len(ts))
	for _, it := range ts {
		out = append(out, it.Name)
	}
	return out
}

func TestEC2ListPaginates(t *testing.T) {
	srv := startFake(t)
	srv.SetMaxPageSize(7) // the client always asks for 100
	got, err := newLister(t, srv, 3).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := wantNVMeNames(ec2fake.DefaultCatalogue())
	if !slices.Equal(typeNames(got), want) {
		t.Errorf("List = %v\nwant %v", typeNames(got), want)
	}

	reqs := srv.Requests()
	if wantPages := (len(want) + 6) / 7; len(reqs) != wantPages {
		t.Errorf("got %d requests, want %d pages", len(reqs), wantPages)
	}
	for i, r := range reqs {
		if r.MaxResults != 100 {
			t.Errorf("request %d: MaxResults %d, want 100", i, r.MaxResults)
		}
		if (i == 0) != (r.NextToken == "") {
			t.Errorf("request %d: NextToken %q", i, r.NextToken)
		}
	}

	// Values parsed from the XML by the real deserializer.
	byName := map[string]InstanceType{}
	for _, it := range got {
		byName[it.Name] = it
	}
	for _, want := range []InstanceType{
		c6id2xl,
		{Name: "m7gd.metal", Architectures: []string{"arm64"}, VCPU: 64, MemoryMiB: 262144, NVMeGB: 3800,
			Category: "m", Family: "m7gd", Generation: 7},
		{Name: "x2iedn.xlarge", Architectures: []string{"amd64"}, VCPU: 4, MemoryMiB: 131072, NVMeGB: 118,
			Category: "x", Family: "x2iedn", Generation: 2},
	} {
		if got := byName[want.Name]; !equalType(got, want) {
			t.Errorf("%s = %+v, want %+v", want.Name, got, want)
		}
	}
}

func TestEC2ListSendsFilters(t *testing.T) {
	srv := startFake(t)
	// Only types the server-side filters must drop: if the client sent no
	// (or wrong) filters, they would come back.
	var excluded []ec2fake.InstanceType
	for _, c := range ec2fake.DefaultCatalogue() {
		if !slices.Contains(wantNVMeNames([]ec2fake.InstanceType{c}), c.Name) {
			excluded = append(excluded, c)
		}
	}
	excluded = append(excluded, ec2fake.InstanceType{
		Name: "i9z.large", Architectures: []string{"x86_64_mac"}, VCPUs: 2, MemoryMiB: 4096,
		Disks: []ec2fake.Disk{{SizeGB: 100, Count: 1, Type: "ssd"}}, NVMeSupport: "required",
	})
	if len(excluded) < 6 {
		t.Fatalf("catalogue has only %d non-NVMe types", len(excluded))
	}
	srv.SetCatalogue(excluded)

	got, err := newLister(t, srv, 1).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("List returned types the filters exclude: %v", typeNames(got))
	}

	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Action != "DescribeInstanceTypes" || r.Version != ec2fake.APIVersion || r.AccessKeyID != testAccessKey {
		t.Errorf("request = %s %s signed by %q", r.Action, r.Version, r.AccessKeyID)
	}
	wantFilters := []ec2fake.Filter{
		{Name: "instance-storage-supported", Values: []string{"true"}},
		{Name: "instance-storage-info.nvme-support", Values: []string{"required", "supported"}},
		{Name: "processor-info.supported-architecture", Values: []string{"x86_64", "arm64"}},
	}
	if !slices.EqualFunc(r.Filters, wantFilters, func(a, b ec2fake.Filter) bool {
		return a.Name == b.Name && slices.Equal(a.Values, b.Values)
	}) {
		t.Errorf("filters = %+v\nwant %+v", r.Filters, wantFilters)
	}
}

func TestEC2ListRetriesThrottling(t *testing.T) {
	srv := startFake(t)
	srv.SetMaxPageSize(10)
	srv.FailAfter(1, 2, ec2fake.FaultThrottle) // page 2 throttled twice
	got, err := newLister(t, srv, 3).List(t.Context())
	if err != nil {
		t.Fatalf("List after 2 throttles with 3 attempts: %v", err)
	}
	if want := wantNVMeNames(ec2fake.DefaultCatalogue()); !slices.Equal(typeNames(got), want) {
		t.Errorf("List = %v\nwant %v", typeNames(got), want)
	}
	var faults []ec2fake.Fault
	for _, r := range srv.Requests() {
		faults = append(faults, r.Fault)
	}
	pages := (len(got) + 9) / 10
	want := append([]ec2fake.Fault{0, ec2fake.FaultThrottle, ec2fake.FaultThrottle}, make([]ec2fake.Fault, pages-1)...)
	if !slices.Equal(faults, want) {
		t.Errorf("faults per request = %v, want %v", faults, want)
	}
}

func TestEC2ListThrottledBeyondMaxAttempts(t *testing.T) {
	srv := startFake(t)
	srv.FailNext(5, ec2fake.FaultThrottle)
	_, err := newLister(t, srv, 3).List(t.Context())
	assertAPIError(t, err, "RequestLimitExceeded")
	if n := len(srv.Requests()); n != 3 {
		t.Errorf("got %d attempts, want 3", n)
	}
	if n := srv.PendingFaults(); n != 2 {
		t.Errorf("%d faults left, want 2", n)
	}
}

func TestEC2ListMalformedXML(t *testing.T) {
	srv := startFake(t)
	srv.FailNext(1, ec2fake.FaultMalformed)
	_, err := newLister(t, srv, 3).List(t.Context())
	if err == nil {
		t.Fatal("List succeeded on a truncated body")
	}
	var de *smithy.DeserializationError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "describing instance types") {
		t.Errorf("error = %v, want a wrapped DeserializationError", err)
	}
	// A 200 with a broken body is not a transient failure; retrying would not help.
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("got %d attempts, want 1", n)
	}
}

func TestEC2ListAuthFailure(t *testing.T) {
	srv := startFake(t)
	srv.FailNext(1, ec2fake.FaultAuth)
	_, err := newLister(t, srv, 3).List(t.Context())
	assertAPIError(t, err, "AuthFailure")
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("got %d attempts, want 1 (auth failures are not retried)", n)
	}
}

func TestEC2ListCanceled(t *testing.T) {
	srv := startFake(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := newLister(t, srv, 3).List(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("List with canceled ctx: %v, want context.Canceled", err)
	}
}

// TestEC2ClientKeepsConnections guards the bufferedBodyClient workaround: without
// it most requests to a loopback endpoint end with net/http failing the request
// write (io.EOF) and closing the connection, so nothing is reused and some
// responses are cut off mid-read.
func TestEC2ClientKeepsConnections(t *testing.T) {
	srv := startFake(t)
	var mu sync.Mutex
	var newConns int
	var writeErrs []error
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			mu.Lock()
			defer mu.Unlock()
			if !i.Reused {
				newConns++
			}
		},
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			mu.Lock()
			defer mu.Unlock()
			if i.Err != nil {
				writeErrs = append(writeErrs, i.Err)
			}
		},
	})
	lister := newLister(t, srv, 1) // no retries: any failed attempt fails the call
	for i := range 50 {
		if _, err := lister.List(ctx); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if newConns != 1 || len(writeErrs) != 0 {
		t.Errorf("50 calls opened %d connections, request write errors %v; want 1 and none", newConns, writeErrs)
	}
}

func assertAPIError(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		t.Errorf("error = %v, want API error %s", err, code)
	}
	if msg := err.Error(); !strings.Contains(msg, code) || !strings.Contains(msg, "describing instance types") {
		t.Errorf("error message %q should carry context and name %s", msg, code)
	}
}
