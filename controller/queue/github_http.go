package queue

// The GitHub poller's HTTP side: paging, ETag revalidation, the rate limit and how errors are
// classified for the tracker.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v88/github"
)

// gitHubPageQuery adds per_page=100 and, after the first page, page=N.
func gitHubPageQuery(q url.Values, page int) string {
	if q == nil {
		q = url.Values{}
	}
	q.Set("per_page", strconv.Itoa(gitHubPerPage))
	if page > 1 {
		q.Set("page", strconv.Itoa(page))
	}
	return q.Encode()
}

// gitHubNext is the page after page as the Link header gave it, or 0 when done. A "next"
// that does not move forward ends the walk instead of looping.
func gitHubNext(page, next int) int {
	if next <= page {
		return 0
	}
	return next
}

type gitHubETagEntry struct {
	etag     string
	value    any // *T of the gitHubGet that stored it
	nextPage int // 304s need not repeat the Link header
}

type gitHubETagCache map[string]*gitHubETagEntry

// gitHubGet GETs path (relative to the API base), conditionally when cache has an ETag
// for it, and decodes the body into a *T that valid accepts. It returns the Link header's
// next page (0 on the last page).
func gitHubGet[T any](ctx context.Context, p *GitHubPoller, cache gitHubETagCache, used map[string]bool, path string, valid func(*T) bool) (*T, int, error) {
	if err := p.limited(); err != nil {
		return nil, 0, err
	}
	req, err := p.client.NewRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0, &Error{Reason: ReasonConfig, Err: err}
	}
	prev := cache[path]
	if prev != nil {
		req.Header.Set("If-None-Match", prev.etag)
	}
	var body bytes.Buffer
	resp, err := p.client.Do(req, &body)
	p.noteRate(resp)
	if err != nil {
		var er *github.ErrorResponse
		if prev != nil && errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotModified {
			if v, ok := prev.value.(*T); ok {
				used[path] = true
				return v, prev.nextPage, nil
			}
		}
		return nil, 0, p.classify(ctx, err)
	}
	v := new(T)
	if err := json.Unmarshal(body.Bytes(), v); err != nil {
		return nil, 0, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("GET %s: decoding body: %w", path, err)}
	}
	if !valid(v) {
		return nil, 0, Errorf(ReasonMalformed, "GET %s: body is not the API's shape", path)
	}
	if etag := resp.Header.Get("ETag"); etag != "" {
		cache[path] = &gitHubETagEntry{etag: etag, value: v, nextPage: resp.NextPage}
		used[path] = true
	} else {
		delete(cache, path)
	}
	return v, resp.NextPage, nil
}

// limited refuses to call GitHub before a known rate-limit reset.
func (p *GitHubPoller) limited() error {
	now := p.clk.Now()
	if now.Before(p.limitedUntil) {
		return &Error{
			Reason:     ReasonRateLimited,
			RetryAfter: p.limitedUntil.Sub(now),
			Err:        fmt.Errorf("github: rate limited until %s, not calling the API", p.limitedUntil.UTC().Format(time.RFC3339)),
		}
	}
	return nil
}

// noteRate remembers a spent primary quota from any response (a 200 can be the last call
// allowed), so the next request waits for the reset instead of earning a 403.
func (p *GitHubPoller) noteRate(resp *github.Response) {
	if resp == nil || resp.Response == nil || resp.Header.Get(github.HeaderRateRemaining) != "0" {
		return
	}
	if reset := resp.Rate.Reset.Time; reset.After(p.clk.Now()) && reset.After(p.limitedUntil) {
		p.limitedUntil = reset
	}
}

func (p *GitHubPoller) limitFor(d time.Duration, err error) error {
	if d <= 0 {
		d = gitHubDefaultRetryAfter
	}
	if until := p.clk.Now().Add(d); until.After(p.limitedUntil) {
		p.limitedUntil = until
	}
	return &Error{Reason: ReasonRateLimited, RetryAfter: d, Err: err}
}

// classify maps a go-github (or ghinstallation) error to a reason, and starts the back-off
// of a rate-limit answer.
func (p *GitHubPoller) classify(ctx context.Context, err error) error {
	var (
		qe     *Error
		rle    *github.RateLimitError
		abuse  *github.AbuseRateLimitError
		tfa    *github.TwoFactorAuthError
		er     *github.ErrorResponse
		mint   *ghinstallation.HTTPError
		netErr net.Error
	)
	switch {
	case errors.As(err, &qe):
		return err
	case errors.As(err, &rle):
		var d time.Duration
		if !rle.Rate.Reset.IsZero() {
			d = rle.Rate.Reset.Sub(p.clk.Now())
		}
		return p.limitFor(d, err)
	case errors.As(err, &abuse):
		return p.limitFor(gitHubRetryAfter(abuse.Response, p.clk.Now()), err)
	case errors.As(err, &tfa):
		return &Error{Reason: ReasonAuth, Err: err}
	case errors.As(err, &er) && er.Response != nil:
		return p.classifyStatus(er.Response, err)
	case errors.As(err, &mint) && mint.Response != nil:
		// Minting the installation token failed: the App, its key or the installation is wrong
		// (GitHub answers 401/403/404), or the mint call itself was rate limited.
		resp := mint.Response
		// ghinstallation leaves the body open for us; CheckResponse swaps in a copy.
		if resp.Body != nil {
			defer resp.Body.Close()
		}
		cerr := github.CheckResponse(resp)
		if cerr == nil {
			return &Error{Reason: ReasonHTTP, Err: err}
		}
		if errors.As(cerr, &rle) || errors.As(cerr, &abuse) {
			return p.classify(ctx, fmt.Errorf("%w: %w", err, cerr))
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return &Error{Reason: ReasonAuth, Err: fmt.Errorf("%w: %w", err, cerr)}
		}
		return p.classifyStatus(resp, fmt.Errorf("%w: %w", err, cerr))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &Error{Reason: ReasonTimeout, Err: err}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &Error{Reason: ReasonTimeout, Err: err}
	}
	return &Error{Reason: ReasonNetwork, Err: err}
}

// classifyStatus handles an error status that go-github did not type as a rate limit.
func (p *GitHubPoller) classifyStatus(resp *http.Response, err error) error {
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		return &Error{Reason: ReasonAuth, Err: err}
	case (code == http.StatusForbidden && resp.Header.Get("Retry-After") != "") || code == http.StatusTooManyRequests:
		// A secondary limit whose body go-github did not recognise.
		return p.limitFor(gitHubRetryAfter(resp, p.clk.Now()), err)
	case code == http.StatusForbidden:
		return &Error{Reason: ReasonAuth, Err: err}
	}
	return &Error{Reason: ReasonHTTP, Err: err}
}

// gitHubRetryAfter reads a secondary limit's wait: Retry-After seconds, else
// X-RateLimit-Reset epoch seconds, else 0 (the caller's default).
func gitHubRetryAfter(resp *http.Response, now time.Time) time.Duration {
	if resp == nil {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get("Retry-After")), 10, 64); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if s, err := strconv.ParseInt(resp.Header.Get(github.HeaderRateReset), 10, 64); err == nil && s > 0 {
		return time.Unix(s, 0).Sub(now)
	}
	return 0
}

// wrap adds what was being done to a classified error, keeping its reason and wait.
func (p *GitHubPoller) wrap(err error, format string, args ...any) error {
	var qe *Error
	if errors.As(err, &qe) {
		return &Error{Reason: qe.Reason, RetryAfter: qe.RetryAfter, Err: fmt.Errorf("github: %s: %w", fmt.Sprintf(format, args...), qe.Err)}
	}
	return fmt.Errorf("github: %s: %w", fmt.Sprintf(format, args...), err)
}

func gitHubNotFound(err error) bool {
	var er *github.ErrorResponse
	return err != nil && errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound
}
