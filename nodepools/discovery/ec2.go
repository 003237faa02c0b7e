package discovery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Lister returns the instance types a region offers.
type Lister interface {
	List(ctx context.Context) ([]InstanceType, error)
}

// pageSize is the largest MaxResults DescribeInstanceTypes accepts.
const pageSize int32 = 100

// describeFilters narrow the answer server-side to NVMe types Karpenter can
// label with an architecture; everything else would be dropped anyway, and the
// full catalogue is ~1000 types (10+ pages).
var describeFilters = []ec2types.Filter{
	{Name: aws.String("instance-storage-supported"), Values: []string{"true"}},
	{Name: aws.String("instance-storage-info.nvme-support"), Values: []string{"required", "supported"}},
	{Name: aws.String("processor-info.supported-architecture"), Values: []string{"x86_64", "arm64"}},
}

// EC2 lists NVMe instance types with DescribeInstanceTypes.
type EC2 struct {
	client ec2.DescribeInstanceTypesAPIClient
}

var _ Lister = (*EC2)(nil)

// NewEC2 returns a Lister backed by client (see NewEC2Client).
func NewEC2(client *ec2.Client) *EC2 {
	return &EC2{client: client}
}

// List returns every NVMe instance type of the client's region, sorted by
// name. Retries of throttled or failed calls are the client's retryer's job.
func (e *EC2) List(ctx context.Context) ([]InstanceType, error) {
	in := &ec2.DescribeInstanceTypesInput{
		Filters:    slices.Clone(describeFilters),
		MaxResults: aws.Int32(pageSize),
	}
	// StopOnDuplicateToken guards against a server that hands back the same
	// token forever.
	p := ec2.NewDescribeInstanceTypesPaginator(e.client, in, func(o *ec2.DescribeInstanceTypesPaginatorOptions) {
		o.StopOnDuplicateToken = true
	})
	var out []InstanceType
	for page := 1; p.HasMorePages(); page++ {
		res, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describing instance types (page %d), %w", page, err)
		}
		for _, info := range res.InstanceTypes {
			out = append(out, fromEC2(info))
		}
	}
	slices.SortFunc(out, func(a, b InstanceType) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// NewEC2Client builds an EC2 client from the default AWS config chain
// (environment, shared files, IRSA/pod identity, IMDS) for region. A non-empty
// endpoint replaces the regional endpoint (VPC endpoint, or a fake in tests).
// opts are applied after the region, so they can add credentials or retry
// settings (see WithRetryPolicy).
func NewEC2Client(ctx context.Context, region, endpoint string, opts ...func(*config.LoadOptions) error) (*ec2.Client, error) {
	all := append([]func(*config.LoadOptions) error{config.WithRegion(region)}, opts...)
	cfg, err := config.LoadDefaultConfig(ctx, all...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS config for region %q, %w", region, err)
	}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if endpoint != "" {
			// Set on the client, not the shared config, so it wins over
			// AWS_ENDPOINT_URL_EC2 and applies to EC2 only.
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.HTTPClient = bufferedBodyClient{next: o.HTTPClient}
	}), nil
}

// bufferedBodyClient hands net/http each request body as an in-memory reader.
//
// Why: smithy-go wraps the body in a reader whose WriteTo returns io.EOF once
// closed, and closes it as soon as Do returns. net/http streams such bodies
// (headers flushed first) and, after copying Content-Length bytes, reads the
// body once more to look for extra bytes. When the response arrives before
// that last read (a fast endpoint, e.g. loopback), the read gets io.EOF,
// net/http treats the request write as failed and closes the connection under
// the response body still being read: "deserialization failed ... use of
// closed network connection" on a 200 (aws/aws-sdk-go-v2#1825, #2737). The SDK
// retries that, which hides it but costs attempts and connection reuse. With
// a *bytes.Reader body net/http writes headers and body in one flush and no
// reader is shared with the SDK. Query requests are a few hundred bytes.
type bufferedBodyClient struct{ next aws.HTTPClient }

func (c bufferedBodyClient) Do(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return c.next.Do(r)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("buffering request body, %w", err)
	}
	// A shallow copy: the SDK still closes its own body after Do.
	r2 := r.WithContext(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(b))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return c.next.Do(r2)
}

// WithRetryPolicy keeps the SDK's standard retryer (which retries throttling
// codes such as RequestLimitExceeded and 5xx answers) but sets how many
// attempts one call makes in total and the longest wait between them.
// maxBackoff <= 0 retries without waiting, which keeps tests fast.
func WithRetryPolicy(maxAttempts int, maxBackoff time.Duration) func(*config.LoadOptions) error {
	return config.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			if maxBackoff > 0 {
				o.MaxBackoff = maxBackoff
			} else {
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			}
		})
	})
}
