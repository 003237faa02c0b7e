package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

const (
	// gitLabProjectListTTL is how long a group's project listing is reused.
	gitLabProjectListTTL = 10 * time.Minute
	gitLabPerPage        = 100
	// gitLabDefaultRetryAfter applies to a 429 that says neither Retry-After nor RateLimit-Reset.
	gitLabDefaultRetryAfter = time.Minute
	gitLabDefaultTimeout    = 30 * time.Second
)

// GitLabPoller counts pending (queued) and running GitLab CI jobs whose tag_list contains all
// of a pool's tags, with GET /projects/:id/jobs?scope[]=pending&scope[]=running per project,
// every page. In group mode the group's projects, subgroups included, are listed first and
// cached for 10 minutes. GitLab has no instance- or group-wide pending-jobs endpoint for
// non-admins, hence one call (or more) per project.
type GitLabPoller struct {
	client   *gitlab.Client
	clk      clock.PassiveClock
	projects []string // configured project IDs or paths; nil in group mode
	group    string
	tags     []string

	mu              sync.Mutex
	groupProjects   []string
	groupProjectsAt time.Time
	// limitedUntil is when GitLab lets us call again (after a 429 or a spent quota).
	limitedUntil time.Time
}

var _ Poller = (*GitLabPoller)(nil)

// NewGitLabPoller returns a poller authenticating with token (sent as PRIVATE-TOKEN) that
// counts the jobs of projectIDs (numeric IDs or "group/project" paths), or of every
// non-archived project in groupID and its subgroups; exactly one of the two must be given.
// A job counts when its tag_list contains every tag in tags (exact match; no tags: every
// job counts). baseURL "" is gitlab.com; "/api/v4" is added unless present.
func NewGitLabPoller(baseURL, token string, projectIDs []string, groupID string, tags []string, opts ...PollerOption) (*GitLabPoller, error) {
	s := pollerSettings{clk: clock.RealClock{}}
	for _, o := range opts {
		o(&s)
	}
	if token == "" {
		return nil, Errorf(ReasonConfig, "gitlab: a token is required")
	}
	if (len(projectIDs) > 0) == (groupID != "") {
		return nil, Errorf(ReasonConfig, "gitlab: exactly one of projectIDs or groupID is required")
	}
	for _, id := range projectIDs {
		if id == "" {
			return nil, Errorf(ReasonConfig, "gitlab: empty project ID")
		}
	}

	var hc http.Client
	if s.httpClient != nil {
		hc = *s.httpClient
	} else {
		hc.Timeout = gitLabDefaultTimeout
	}
	glOpts := []gitlab.ClientOptionFunc{
		gitlab.WithHTTPClient(&hc),
		// The client's default retries sleep through 429s and 5xx inside one poll; the
		// poll loop owns retrying and back-off, so a failure is reported at once.
		gitlab.WithoutRetries(),
		// The default limiter paces calls from RateLimit-Limit and blocks inside Do, which
		// would surface as timeouts; we stop on the server's own 429 instead.
		gitlab.WithCustomLimiter(rate.NewLimiter(rate.Inf, 0)),
	}
	if baseURL != "" {
		if u, err := url.Parse(baseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, Errorf(ReasonConfig, "gitlab: url %q is not an http(s) URL", baseURL)
		}
		glOpts = append(glOpts, gitlab.WithBaseURL(baseURL))
	}
	client, err := gitlab.NewClient(token, glOpts...)
	if err != nil {
		return nil, &Error{Reason: ReasonConfig, Err: fmt.Errorf("gitlab: %w", err)}
	}
	p := &GitLabPoller{
		client: client,
		clk:    s.clk,
		group:  groupID,
		tags:   append([]string(nil), tags...),
	}
	if len(projectIDs) > 0 {
		p.projects = append([]string(nil), projectIDs...)
	}
	return p, nil
}

// Poll counts the pool's pending and running jobs across its projects. Any failure fails the
// whole poll: a partial count would understate demand.
func (p *GitLabPoller) Poll(ctx context.Context) (Counts, error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	if err := p.limited(); err != nil {
		return Counts{}, err
	}
	projects, err := p.projectIDs(ctx)
	if err != nil {
		return Counts{}, err
	}
	var total Counts
	for _, pid := range projects {
		c, err := p.countProject(ctx, pid)
		if err != nil {
			if p.projects == nil && errors.Is(err, gitlab.ErrNotFound) {
				// A listed project went away: list the group again on the next poll.
				p.groupProjects = nil
			}
			return Counts{}, err
		}
		total = total.Add(c)
	}
	return total, nil
}

func (p *GitLabPoller) projectIDs(ctx context.Context) ([]string, error) {
	if p.projects != nil {
		return p.projects, nil
	}
	if p.groupProjects != nil && p.clk.Since(p.groupProjectsAt) < gitLabProjectListTTL {
		return p.groupProjects, nil
	}
	ids := []string{}
	opt := &gitlab.ListGroupProjectsOptions{
		ListOptions:      gitlab.ListOptions{PerPage: gitLabPerPage},
		IncludeSubGroups: gitlab.Ptr(true),
		// Archived projects run no pipelines.
		Archived: gitlab.Ptr(false),
		// Projects shared into the group from elsewhere do not get this group's runners.
		WithShared: gitlab.Ptr(false),
	}
	for page := int64(1); page > 0; {
		if err := p.limited(); err != nil {
			return nil, err
		}
		opt.Page = page
		projects, resp, err := p.client.Groups.ListGroupProjects(p.group, opt, gitlab.WithContext(ctx))
		p.noteRate(resp)
		if err == nil && projects == nil {
			err = errGitLabNotAList
		}
		if err != nil {
			return nil, p.classify(ctx, resp, err, "listing projects of group %s", p.group)
		}
		for _, pr := range projects {
			// The jobs endpoint answers 403 for a project with CI/CD disabled.
			if pr == nil || pr.Archived || pr.BuildsAccessLevel == gitlab.DisabledAccessControl {
				continue
			}
			ids = append(ids, strconv.FormatInt(pr.ID, 10))
		}
		page = gitLabNext(page, resp.NextPage)
	}
	p.groupProjects, p.groupProjectsAt = ids, p.clk.Now()
	return ids, nil
}

func (p *GitLabPoller) countProject(ctx context.Context, pid string) (Counts, error) {
	opt := &gitlab.ListJobsOptions{
		ListOptions: gitlab.ListOptions{PerPage: gitLabPerPage},
		Scope:       &[]gitlab.BuildStateValue{gitlab.Pending, gitlab.Running},
	}
	var c Counts
	for page := int64(1); page > 0; {
		if err := p.limited(); err != nil {
			return Counts{}, err
		}
		opt.Page = page
		jobs, resp, err := p.client.Jobs.ListProjectJobs(pid, opt, gitlab.WithContext(ctx))
		p.noteRate(resp)
		if err == nil && jobs == nil {
			err = errGitLabNotAList
		}
		if err != nil {
			return Counts{}, p.classify(ctx, resp, err, "listing jobs of project %s", pid)
		}
		for _, j := range jobs {
			if j == nil || !gitLabTagsMatch(j.TagList, p.tags) {
				continue
			}
			switch j.Status {
			case string(gitlab.Pending):
				c.Queued++
			case string(gitlab.Running):
				c.Running++
			}
		}
		page = gitLabNext(page, resp.NextPage)
	}
	return c, nil
}

var errGitLabNotAList = errors.New("body is not a JSON list")

// gitLabTagsMatch reports whether have contains every tag in want.
func gitLabTagsMatch(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// gitLabNext is the X-Next-Page after page, or 0 when done (or when it does not move forward).
func gitLabNext(page, next int64) int64 {
	if next <= page {
		return 0
	}
	return next
}

func (p *GitLabPoller) limited() error {
	now := p.clk.Now()
	if now.Before(p.limitedUntil) {
		return &Error{
			Reason:     ReasonRateLimited,
			RetryAfter: p.limitedUntil.Sub(now),
			Err:        fmt.Errorf("gitlab: rate limited until %s, not calling the API", p.limitedUntil.UTC().Format(time.RFC3339)),
		}
	}
	return nil
}

// noteRate remembers a spent quota (RateLimit-Remaining: 0) until RateLimit-Reset.
func (p *GitLabPoller) noteRate(resp *gitlab.Response) {
	if resp == nil || resp.Response == nil || strings.TrimSpace(resp.Header.Get("RateLimit-Remaining")) != "0" {
		return
	}
	s, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get("RateLimit-Reset")), 10, 64)
	if err != nil || s <= 0 {
		return
	}
	if reset := time.Unix(s, 0); reset.After(p.clk.Now()) && reset.After(p.limitedUntil) {
		p.limitedUntil = reset
	}
}

// classify maps a client-go error (and its response, when there is one) to a reason.
func (p *GitLabPoller) classify(ctx context.Context, resp *gitlab.Response, err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	wrapped := fmt.Errorf("gitlab: %s: %w", what, err)
	timedOut := func() bool {
		var ne net.Error
		return errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
			(errors.As(err, &ne) && ne.Timeout())
	}
	if resp != nil && resp.Response != nil {
		switch code := resp.StatusCode; {
		case code >= 200 && code < 300:
			if timedOut() {
				return &Error{Reason: ReasonTimeout, Err: wrapped}
			}
			// A 2xx whose body did not decode as the documented list.
			return &Error{Reason: ReasonMalformed, Err: wrapped}
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return &Error{Reason: ReasonAuth, Err: wrapped}
		case code == http.StatusTooManyRequests:
			d := gitLabRetryAfter(resp.Header, p.clk.Now())
			if until := p.clk.Now().Add(d); until.After(p.limitedUntil) {
				p.limitedUntil = until
			}
			return &Error{Reason: ReasonRateLimited, RetryAfter: d, Err: wrapped}
		default:
			return &Error{Reason: ReasonHTTP, Err: wrapped}
		}
	}
	if timedOut() {
		return &Error{Reason: ReasonTimeout, Err: wrapped}
	}
	return &Error{Reason: ReasonNetwork, Err: wrapped}
}

// gitLabRetryAfter reads a 429's wait: Retry-After seconds, else RateLimit-Reset epoch
// seconds, else a minute.
func gitLabRetryAfter(h http.Header, now time.Time) time.Duration {
	if s, err := strconv.ParseInt(strings.TrimSpace(h.Get("Retry-After")), 10, 64); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(h.Get("RateLimit-Reset")), 10, 64); err == nil && s > 0 {
		if d := time.Unix(s, 0).Sub(now); d > 0 {
			return d
		}
	}
	return gitLabDefaultRetryAfter
}
