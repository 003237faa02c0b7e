package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"k8s.io/utils/clock"
)

// ErrStale marks an error returned together with a previously fetched list:
// the refresh failed and the caller gets the last good answer.
var ErrStale = errors.New("serving stale instance type list")

// Cache wraps a Lister with a TTL, because instance types change rarely and
// every reconcile would otherwise call DescribeInstanceTypes.
//
// Within the TTL List returns the cached list without calling the Lister.
// After it, List refreshes. If the refresh fails and an earlier list exists, it
// returns that list AND an error wrapping both ErrStale and the cause; the
// caller decides whether stale data is good enough. Without an earlier list it
// returns only the error. A failed refresh does not restart the TTL, so the
// next call tries again (the SDK retryer already backs off within a call).
//
// Concurrent callers share one refresh: they wait for it rather than each
// calling EC2.
type Cache struct {
	lister Lister
	ttl    time.Duration
	clk    clock.PassiveClock

	// sem is a one-slot lock that a waiter can abandon when its ctx ends,
	// which sync.Mutex cannot do while a slow refresh holds it.
	sem       chan struct{}
	list      []InstanceType
	fetchedAt time.Time
	have      bool
}

// NewCache caches l's answer for ttl, measured on clk. ttl <= 0 disables caching
// but keeps the fall-back to the last good list.
func NewCache(l Lister, ttl time.Duration, clk clock.PassiveClock) *Cache {
	return &Cache{lister: l, ttl: ttl, clk: clk, sem: make(chan struct{}, 1)}
}

var _ Lister = (*Cache)(nil)

// List returns the cached or refreshed list; the slice is the caller's own.
func (c *Cache) List(ctx context.Context) ([]InstanceType, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for instance type cache, %w", ctx.Err())
	}
	defer func() { <-c.sem }()

	if c.have && c.clk.Since(c.fetchedAt) < c.ttl {
		return cloneTypes(c.list), nil
	}
	list, err := c.lister.List(ctx)
	if err != nil {
		if c.have {
			return cloneTypes(c.list), fmt.Errorf("%w (fetched %s): refreshing instance types, %w",
				ErrStale, c.fetchedAt.UTC().Format(time.RFC3339), err)
		}
		return nil, fmt.Errorf("refreshing instance types, %w", err)
	}
	c.list, c.fetchedAt, c.have = cloneTypes(list), c.clk.Now(), true
	return cloneTypes(c.list), nil
}

// cloneTypes deep-copies so that callers sorting or editing their result cannot
// change what later callers get.
func cloneTypes(in []InstanceType) []InstanceType {
	out := slices.Clone(in)
	for i := range out {
		out[i].Architectures = slices.Clone(out[i].Architectures)
	}
	return out
}
