package operator

import (
	"context"
	"sync"

	"k8s.io/utils/clock"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/pools"
	"warmpool.io/warmpool/nodepools/discovery"
)

// EC2Discovery returns the real DescribeInstanceTypes lister for a config's discovery settings,
// cached for the config's refresh interval. The client is rebuilt only when the region,
// endpoint or interval change, so the TTL cache survives ordinary config edits.
func EC2Discovery(clk clock.PassiveClock) pools.InstanceTypes {
	var (
		mu     sync.Mutex
		key    config.Discovery
		lister discovery.Lister
	)
	return func(ctx context.Context, d config.Discovery) (discovery.Lister, error) {
		mu.Lock()
		defer mu.Unlock()
		want := config.Discovery{Region: d.Region, Endpoint: d.Endpoint, RefreshInterval: d.RefreshInterval}
		if lister != nil && want.Region == key.Region && want.Endpoint == key.Endpoint && want.RefreshInterval.Duration == key.RefreshInterval.Duration {
			return lister, nil
		}
		client, err := discovery.NewEC2Client(ctx, d.Region, d.Endpoint)
		if err != nil {
			return nil, err
		}
		key, lister = want, discovery.NewCache(discovery.NewEC2(client), d.RefreshInterval.Duration, clk)
		return lister, nil
	}
}
