package ec2fake_test

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"warmpool.io/warmpool/nodepools/discovery"
	"warmpool.io/warmpool/nodepools/discovery/ec2fake"
)

func start(t *testing.T) *ec2fake.Server {
	t.Helper()
	srv, err := ec2fake.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// sdk is a real client without retries, so every call is one request. It is
// built by discovery.NewEC2Client, which works around an SDK request-body race
// that otherwise makes a few calls fail on a fast endpoint (see ec2.go).
func sdk(t *testing.T, srv *ec2fake.Server) *ec2.Client {
	t.Helper()
	c, err := discovery.NewEC2Client(t.Context(), "eu-west-1", srv.URL,
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDFAKE", "secret", "")),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
		discovery.WithRetryPolicy(1, 0),
	)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// post sends a raw Query request; signed adds a syntactically valid SigV4
// header (the fake checks presence and key id, not the signature).
func post(t *testing.T, srv *ec2fake.Server, form url.Values, signed bool) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if signed {
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDRAW/20260301/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func describeForm(kv ...string) url.Values {
	f := url.Values{"Action": {"DescribeInstanceTypes"}, "Version": {ec2fake.APIVersion}}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return f
}

func TestServerListensOnLoopback(t *testing.T) {
	srv := start(t)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Errorf("URL = %s", srv.URL)
	}
}

func TestRawResponseShape(t *testing.T) {
	srv := start(t)
	code, body := post(t, srv, describeForm("InstanceType.1", "c6id.xlarge"), true)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	for _, want := range []string{
		`<DescribeInstanceTypesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">`,
		`<instanceTypeSet><item><instanceType>c6id.xlarge</instanceType>`,
		`<processorInfo><supportedArchitectures><item>x86_64</item></supportedArchitectures></processorInfo>`,
		`<vCpuInfo><defaultVCpus>4</defaultVCpus></vCpuInfo><memoryInfo><sizeInMiB>8192</sizeInMiB></memoryInfo>`,
		`<instanceStorageSupported>true</instanceStorageSupported>`,
		`<instanceStorageInfo><totalSizeInGB>237</totalSizeInGB><disks><item><sizeInGB>237</sizeInGB><count>1</count><type>ssd</type></item></disks><nvmeSupport>required</nvmeSupport>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %s\n%s", want, body)
		}
	}
	if strings.Contains(body, "<nextToken>") {
		t.Error("single page carries a nextToken")
	}
}

func TestRawRequestValidation(t *testing.T) {
	srv := start(t)
	for _, tc := range []struct {
		desc   string
		form   url.Values
		signed bool
		status int
		code   string
	}{
		{"unsigned", describeForm(), false, 401, "AuthFailure"},
		{"no action", url.Values{"Version": {ec2fake.APIVersion}}, true, 400, "MissingAction"},
		{"other action", url.Values{"Action": {"RunInstances"}, "Version": {ec2fake.APIVersion}}, true, 400, "InvalidAction"},
		{"old version", url.Values{"Action": {"DescribeInstanceTypes"}, "Version": {"2014-01-01"}}, true, 400, "NoSuchVersion"},
		{"MaxResults too small", describeForm("MaxResults", "4"), true, 400, "InvalidParameterValue"},
		{"MaxResults too large", describeForm("MaxResults", "101"), true, 400, "InvalidParameterValue"},
		{"MaxResults not a number", describeForm("MaxResults", "ten"), true, 400, "InvalidParameterValue"},
		{"unknown filter", describeForm("Filter.1.Name", "nvme", "Filter.1.Value.1", "true"), true, 400, "InvalidParameterValue"},
		{"filter without values", describeForm("Filter.1.Name", "instance-type"), true, 400, "InvalidParameterValue"},
		{"garbage token", describeForm("NextToken", "!!"), true, 400, "InvalidParameterValue"},
		{"unknown instance type", describeForm("InstanceType.1", "c99.huge"), true, 400, "InvalidInstanceType"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			status, body := post(t, srv, tc.form, tc.signed)
			if status != tc.status || !strings.Contains(body, "<Response><Errors><Error><Code>"+tc.code+"</Code>") ||
				!strings.Contains(body, "<RequestID>") {
				t.Errorf("got %d %s, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
}

func TestGetQueryStringIsAccepted(t *testing.T) {
	srv := start(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
		srv.URL+"/?"+describeForm("InstanceType.1", "i4i.large").Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDGET/20260301/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "<instanceType>i4i.large</instanceType>") {
		t.Errorf("GET: %d %s", resp.StatusCode, body)
	}
	if r := srv.Requests(); len(r) != 1 || r[0].AccessKeyID != "AKIDGET" {
		t.Errorf("recorded %+v", r)
	}
}

func TestSDKParsesEveryField(t *testing.T) {
	srv := start(t)
	out, err := sdk(t, srv).DescribeInstanceTypes(t.Context(), &ec2.DescribeInstanceTypesInput{
		InstanceTypes: []ec2types.InstanceType{"d2.xlarge", "m7gd.metal", "m3.medium"},
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]ec2types.InstanceTypeInfo{}
	for _, it := range out.InstanceTypes {
		byName[string(it.InstanceType)] = it
	}
	if len(byName) != 3 {
		t.Fatalf("got %d types", len(out.InstanceTypes))
	}
	d2 := byName["d2.xlarge"]
	if s := d2.InstanceStorageInfo; s == nil || aws.ToInt64(s.TotalSizeInGB) != 6000 || s.NvmeSupport != ec2types.EphemeralNvmeSupportUnsupported ||
		len(s.Disks) != 1 || aws.ToInt32(s.Disks[0].Count) != 3 || s.Disks[0].Type != ec2types.DiskTypeHdd ||
		s.EncryptionSupport != ec2types.InstanceStorageEncryptionSupportUnsupported {
		t.Errorf("d2.xlarge storage = %+v", d2.InstanceStorageInfo)
	}
	if aws.ToInt32(d2.VCpuInfo.DefaultVCpus) != 4 || aws.ToInt64(d2.MemoryInfo.SizeInMiB) != 31232 || d2.Hypervisor != ec2types.InstanceTypeHypervisorXen {
		t.Errorf("d2.xlarge = %+v", d2)
	}
	m := byName["m7gd.metal"]
	if !aws.ToBool(m.BareMetal) || m.Hypervisor != "" || !aws.ToBool(m.InstanceStorageSupported) ||
		!slices.Equal(m.ProcessorInfo.SupportedArchitectures, []ec2types.ArchitectureType{"arm64"}) ||
		aws.ToInt64(m.InstanceStorageInfo.TotalSizeInGB) != 3800 || !aws.ToBool(m.CurrentGeneration) {
		t.Errorf("m7gd.metal = %+v", m)
	}
	m3 := byName["m3.medium"]
	if !slices.Equal(m3.ProcessorInfo.SupportedArchitectures, []ec2types.ArchitectureType{"i386", "x86_64"}) || aws.ToBool(m3.CurrentGeneration) {
		t.Errorf("m3.medium = %+v", m3)
	}
}

func TestSDKFilters(t *testing.T) {
	srv := start(t)
	names := func(t *testing.T, fs ...ec2types.Filter) []string {
		t.Helper()
		out, err := sdk(t, srv).DescribeInstanceTypes(t.Context(), &ec2.DescribeInstanceTypesInput{Filters: fs})
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, it := range out.InstanceTypes {
			n = append(n, string(it.InstanceType))
		}
		slices.Sort(n)
		return n
	}
	f := func(name string, values ...string) ec2types.Filter {
		return ec2types.Filter{Name: aws.String(name), Values: values}
	}
	for _, tc := range []struct {
		desc    string
		filters []ec2types.Filter
		want    []string
	}{
		{"wildcard", []ec2types.Filter{f("instance-type", "c6id.*l*rge")},
			[]string{"c6id.2xlarge", "c6id.4xlarge", "c6id.8xlarge", "c6id.large", "c6id.xlarge"}},
		{"? wildcard", []ec2types.Filter{f("instance-type", "i4i.?xlarge")}, []string{"i4i.2xlarge", "i4i.8xlarge"}},
		{"values are ORed", []ec2types.Filter{f("instance-type", "d2.xlarge", "m3.medium")}, []string{"d2.xlarge", "m3.medium"}},
		{"filters are ANDed", []ec2types.Filter{f("instance-storage-supported", "true"), f("processor-info.supported-architecture", "i386")},
			[]string{"m3.medium"}},
		{"no instance store", []ec2types.Filter{f("instance-storage-supported", "false")},
			[]string{"c6i.large", "c6i.xlarge", "m7g.large", "m7g.xlarge", "u-6tb1.56xlarge"}},
		{"nvme unsupported", []ec2types.Filter{f("instance-storage-info.nvme-support", "unsupported")}, []string{"d2.xlarge", "m3.medium"}},
		{"bare metal with 64 vCPUs", []ec2types.Filter{f("bare-metal", "true"), f("vcpu-info.default-vcpus", "64")}, []string{"m7gd.metal"}},
		{"memory and size", []ec2types.Filter{f("memory-info.size-in-mib", "131072"), f("instance-storage-info.total-size-in-gb", "118")},
			[]string{"x2iedn.xlarge"}},
		{"previous generation", []ec2types.Filter{f("current-generation", "false")}, []string{"m3.medium"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := names(t, tc.filters...); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	_, err := sdk(t, srv).DescribeInstanceTypes(t.Context(), &ec2.DescribeInstanceTypesInput{
		Filters: []ec2types.Filter{f("instance-storage.nvme-support", "required")},
	})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidParameterValue" || !strings.Contains(ae.ErrorMessage(), "instance-storage.nvme-support") {
		t.Errorf("misspelt filter: %v", err)
	}
}

func TestPagingAndTokens(t *testing.T) {
	srv := start(t)
	client := sdk(t, srv)
	storage := []ec2types.Filter{{Name: aws.String("instance-storage-supported"), Values: []string{"true"}}}
	var seen []string
	p := ec2.NewDescribeInstanceTypesPaginator(client, &ec2.DescribeInstanceTypesInput{Filters: storage, MaxResults: aws.Int32(5)})
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(out.InstanceTypes) > 5 {
			t.Errorf("page of %d > MaxResults", len(out.InstanceTypes))
		}
		for _, it := range out.InstanceTypes {
			seen = append(seen, string(it.InstanceType))
		}
		pages++
	}
	var want []string
	for _, c := range ec2fake.DefaultCatalogue() {
		if len(c.Disks) > 0 {
			want = append(want, c.Name)
		}
	}
	if !slices.Equal(seen, want) {
		t.Errorf("paged %v\nwant %v (catalogue order, no duplicates)", seen, want)
	}
	if wantPages := (len(want) + 4) / 5; pages != wantPages {
		t.Errorf("pages = %d, want %d", pages, wantPages)
	}

	// A token only continues the query that produced it.
	first, err := client.DescribeInstanceTypes(t.Context(), &ec2.DescribeInstanceTypesInput{Filters: storage, MaxResults: aws.Int32(5)})
	if err != nil {
		t.Fatalf("first page: %v", err)
	}
	if first.NextToken == nil {
		t.Fatal("first page has no NextToken")
	}
	_, err = client.DescribeInstanceTypes(t.Context(), &ec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(5), NextToken: first.NextToken})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidParameterValue" {
		t.Errorf("token reused with other filters: %v", err)
	}
}

func TestFaultsAndRecording(t *testing.T) {
	srv := start(t)
	client := sdk(t, srv)
	srv.FailAfter(1, 1, ec2fake.FaultThrottle)
	srv.FailNext(1, ec2fake.FaultAuth)
	srv.FailNext(1, ec2fake.FaultMalformed)
	if n := srv.PendingFaults(); n != 3 {
		t.Errorf("PendingFaults = %d, want 3", n)
	}
	call := func() error {
		_, err := client.DescribeInstanceTypes(t.Context(), &ec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(5)})
		return err
	}
	if err := call(); err != nil {
		t.Errorf("skipped request failed: %v", err)
	}
	var ae smithy.APIError
	var re interface{ HTTPStatusCode() int }
	if err := call(); !errors.As(err, &ae) || ae.ErrorCode() != "RequestLimitExceeded" || ae.ErrorMessage() != "Request limit exceeded." ||
		!errors.As(err, &re) || re.HTTPStatusCode() != 503 {
		t.Errorf("throttle: %v", err)
	}
	if err := call(); !errors.As(err, &ae) || ae.ErrorCode() != "AuthFailure" || !errors.As(err, &re) || re.HTTPStatusCode() != 401 {
		t.Errorf("auth: %v", err)
	}
	var de *smithy.DeserializationError
	if err := call(); !errors.As(err, &de) {
		t.Errorf("malformed: %v", err)
	}
	if err := call(); err != nil {
		t.Errorf("after faults: %v", err)
	}

	reqs := srv.Requests()
	var got []ec2fake.Fault
	for _, r := range reqs {
		got = append(got, r.Fault)
		if r.AccessKeyID != "AKIDFAKE" || r.MaxResults != 5 || r.Action != "DescribeInstanceTypes" {
			t.Errorf("recorded %+v", r)
		}
	}
	want := []ec2fake.Fault{0, ec2fake.FaultThrottle, ec2fake.FaultAuth, ec2fake.FaultMalformed, 0}
	if !slices.Equal(got, want) {
		t.Errorf("faults = %v, want %v", got, want)
	}
	if srv.PendingFaults() != 0 {
		t.Error("faults left over")
	}
	srv.ResetRequests()
	if len(srv.Requests()) != 0 {
		t.Error("ResetRequests kept requests")
	}
}
