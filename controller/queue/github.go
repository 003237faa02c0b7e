package queue

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v88/github"
	"k8s.io/utils/clock"
)

const (
	// gitHubRepoListTTL is how long an owner's repository listing is reused: repositories
	// come and go far less often than jobs, and listing a big org costs a page per 100 repos.
	gitHubRepoListTTL = 10 * time.Minute
	gitHubPerPage     = 100
	// gitHubDefaultRetryAfter applies when GitHub says "rate limited" without saying until
	// when; GitHub's docs ask for at least a minute before retrying.
	gitHubDefaultRetryAfter = time.Minute
	gitHubDefaultTimeout    = 30 * time.Second
)

// GitHubAuth is how the poller authenticates: a token, or a GitHub App installation.
// Exactly one must be set.
type GitHubAuth struct {
	// Token is a personal access token (classic or fine-grained), sent as a bearer token.
	Token string
	// App authenticates as a GitHub App installation; installation tokens are minted and
	// refreshed against the same API base URL.
	App *GitHubAppCredentials
}

// GitHubAppCredentials identifies a GitHub App installation.
type GitHubAppCredentials struct {
	AppID          int64
	InstallationID int64
	// PrivateKeyPEM is the App's RSA private key, PEM encoded (as GitHub hands it out).
	PrivateKeyPEM []byte
}

// GitHubPoller counts queued and in-progress GitHub Actions jobs whose runner labels include
// all of a pool's labels, by polling the REST API:
//
//	GET /repos/{o}/{r}/actions/runs?status=queued|in_progress   (every page)
//	GET /repos/{o}/{r}/actions/runs/{id}/jobs                  (every page, unlike KEDA)
//
// There is no org-wide runs endpoint, so an unset repo list means listing the owner's
// repositories (cached for 10 minutes). Every GET is conditional (If-None-Match): a 304
// reuses the parsed result and costs no rate limit. After a rate-limit answer, or a response
// that says the quota is spent, no request is made until the reset time.
type GitHubPoller struct {
	client *github.Client
	clk    clock.PassiveClock
	owner  string
	repos  []string // configured repositories; nil lists the owner's
	labels []string

	mu sync.Mutex
	// etags holds the last ETag and parsed body per runs/jobs URL; entries not used by a
	// successful poll are dropped (finished runs are never asked for again).
	etags gitHubETagCache
	// repoETags is the same for the owner's repository listing, kept across polls.
	repoETags    gitHubETagCache
	ownerRepos   []string
	ownerReposAt time.Time
	// limitedUntil is when GitHub lets us call again (primary reset or secondary Retry-After).
	limitedUntil time.Time
}

var _ Poller = (*GitHubPoller)(nil)

// NewGitHubPoller returns a poller for owner's repos (all of the owner's non-archived
// repositories when repos is empty) that counts jobs whose labels contain every one of labels,
// compared case-insensitively as GitHub matches runner labels (no labels: every job counts).
// baseURL "" is api.github.com; otherwise it is a GitHub Enterprise Server URL
// (https://ghe.example.com, "/api/v3/" is added unless present) or an "api." host.
func NewGitHubPoller(baseURL, owner string, repos, labels []string, auth GitHubAuth, opts ...PollerOption) (*GitHubPoller, error) {
	s := pollerSettings{clk: clock.RealClock{}}
	for _, o := range opts {
		o(&s)
	}
	if owner == "" {
		return nil, Errorf(ReasonConfig, "github: owner is required")
	}
	for _, r := range repos {
		if r == "" || strings.Contains(r, "/") {
			return nil, Errorf(ReasonConfig, "github: repo %q must be a repository name under owner %q", r, owner)
		}
	}
	if (auth.Token != "") == (auth.App != nil) {
		return nil, Errorf(ReasonConfig, "github: exactly one of a token or GitHub App credentials is required")
	}

	var hc http.Client
	if s.httpClient != nil {
		hc = *s.httpClient
	} else {
		hc.Timeout = gitHubDefaultTimeout
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}

	// go-github's own rate-limit bookkeeping runs on the wall clock; ours runs on the
	// injected clock and also covers secondary limits, so one place decides when to call.
	ghOpts := []github.ClientOptionsFunc{github.WithDisableRateLimitCheck()}
	if baseURL != "" {
		if u, err := url.Parse(baseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, Errorf(ReasonConfig, "github: url %q is not an http(s) URL", baseURL)
		}
		ghOpts = append(ghOpts, github.WithEnterpriseURLs(baseURL, baseURL))
	}
	var itr *ghinstallation.Transport
	if auth.App != nil {
		a := auth.App
		if a.AppID <= 0 || a.InstallationID <= 0 {
			return nil, Errorf(ReasonConfig, "github: app ID and installation ID are required")
		}
		var err error
		if itr, err = ghinstallation.New(base, a.AppID, a.InstallationID, a.PrivateKeyPEM); err != nil {
			return nil, &Error{Reason: ReasonConfig, Err: fmt.Errorf("github: app private key: %w", err)}
		}
		hc.Transport = itr
	} else {
		ghOpts = append(ghOpts, github.WithAuthToken(auth.Token))
	}
	ghOpts = append(ghOpts, github.WithHTTPClient(&hc))
	client, err := github.NewClient(ghOpts...)
	if err != nil {
		return nil, &Error{Reason: ReasonConfig, Err: fmt.Errorf("github: %w", err)}
	}
	if itr != nil {
		// Installation tokens come from the same API the jobs do (GHES or a test server).
		itr.BaseURL = strings.TrimSuffix(client.BaseURL(), "/")
	}

	p := &GitHubPoller{
		client:    client,
		clk:       s.clk,
		owner:     owner,
		labels:    append([]string(nil), labels...),
		etags:     gitHubETagCache{},
		repoETags: gitHubETagCache{},
	}
	if len(repos) > 0 {
		p.repos = append([]string(nil), repos...)
	}
	return p, nil
}

// Poll counts the pool's queued and running jobs across its repositories. Any failure fails
// the whole poll: a partial count would understate demand.
func (p *GitHubPoller) Poll(ctx context.Context) (Counts, error) {
	var c Counts
	err := p.walk(ctx, func(j *github.WorkflowJob) {
		switch j.GetStatus() {
		case "queued":
			c.Queued++
		case "in_progress":
			c.Running++
		}
	})
	if err != nil {
		return Counts{}, err
	}
	return c, nil
}

// ListJobs lists the IDs of the pool's queued and in-progress jobs across its repositories,
// for a webhook resync (Webhook.Resync). Like Poll, any failure fails the whole listing: a
// partial one would drop the jobs it missed.
func (p *GitHubPoller) ListJobs(ctx context.Context) (queued, running []int64, err error) {
	err = p.walk(ctx, func(j *github.WorkflowJob) {
		switch j.GetStatus() {
		case "queued":
			queued = append(queued, j.GetID())
		case "in_progress":
			running = append(running, j.GetID())
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return queued, running, nil
}

// walk calls visit for every matching job of every repository's queued and in-progress runs.
func (p *GitHubPoller) walk(ctx context.Context, visit func(*github.WorkflowJob)) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if err := p.limited(); err != nil {
		return err
	}
	repos, err := p.repoNames(ctx)
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, repo := range repos {
		if err := p.walkRepo(ctx, repo, used, visit); err != nil {
			if p.repos == nil && gitHubNotFound(err) {
				// A listed repository went away (deleted, renamed, transferred): list again
				// on the next poll instead of failing for the rest of the cache lifetime.
				p.ownerRepos = nil
			}
			return err
		}
	}
	for k := range p.etags {
		if !used[k] {
			delete(p.etags, k)
		}
	}
	return nil
}

// repoNames is the configured repositories, or the owner's (cached for gitHubRepoListTTL).
func (p *GitHubPoller) repoNames(ctx context.Context) ([]string, error) {
	if p.repos != nil {
		return p.repos, nil
	}
	if p.ownerRepos != nil && p.clk.Since(p.ownerReposAt) < gitHubRepoListTTL {
		return p.ownerRepos, nil
	}
	kind := "orgs"
	names, err := p.listRepos(ctx, kind)
	if gitHubNotFound(err) {
		// Owner is a user, not an organization.
		kind = "users"
		names, err = p.listRepos(ctx, kind)
	}
	if err != nil {
		return nil, err
	}
	p.ownerRepos, p.ownerReposAt = names, p.clk.Now()
	return names, nil
}

func (p *GitHubPoller) listRepos(ctx context.Context, kind string) ([]string, error) {
	names := []string{}
	used := map[string]bool{}
	for page := 1; page > 0; {
		path := fmt.Sprintf("%s/%s/repos?%s", kind, url.PathEscape(p.owner), gitHubPageQuery(nil, page))
		repos, next, err := gitHubGet(ctx, p, p.repoETags, used, path, func(*[]*github.Repository) bool { return true })
		if err != nil {
			return nil, p.wrap(err, "listing repositories of %s", p.owner)
		}
		for _, r := range *repos {
			// Archived and disabled repositories cannot run workflows: skip their calls.
			if r == nil || r.GetName() == "" || r.GetArchived() || r.GetDisabled() {
				continue
			}
			names = append(names, r.GetName())
		}
		page = gitHubNext(page, next)
	}
	for k := range p.repoETags {
		if !used[k] {
			delete(p.repoETags, k)
		}
	}
	return names, nil
}

// walkRepo calls visit for every job of the repository's queued and in-progress runs whose
// labels match the pool's.
func (p *GitHubPoller) walkRepo(ctx context.Context, repo string, used map[string]bool, visit func(*github.WorkflowJob)) error {
	prefix := fmt.Sprintf("repos/%s/%s/actions/runs", url.PathEscape(p.owner), url.PathEscape(repo))
	// A run that moves from queued to in_progress between the two listings shows up twice.
	seen := map[int64]bool{}
	var runIDs []int64
	for _, status := range []string{"queued", "in_progress"} {
		for page := 1; page > 0; {
			path := prefix + "?" + gitHubPageQuery(url.Values{"status": {status}}, page)
			runs, next, err := gitHubGet(ctx, p, p.etags, used, path, func(v *github.WorkflowRuns) bool {
				return v.TotalCount != nil && v.WorkflowRuns != nil
			})
			if err != nil {
				return p.wrap(err, "listing %s workflow runs of %s/%s", status, p.owner, repo)
			}
			for _, r := range runs.WorkflowRuns {
				if id := r.GetID(); id != 0 && !seen[id] {
					seen[id] = true
					runIDs = append(runIDs, id)
				}
			}
			page = gitHubNext(page, next)
		}
	}

	for _, id := range runIDs {
		// Every page: a matrix run easily has more than 100 jobs (KEDA reads only the first).
		for page := 1; page > 0; {
			path := fmt.Sprintf("%s/%d/jobs?%s", prefix, id, gitHubPageQuery(nil, page))
			jobs, next, err := gitHubGet(ctx, p, p.etags, used, path, func(v *github.Jobs) bool {
				return v.TotalCount != nil && v.Jobs != nil
			})
			if err != nil {
				return p.wrap(err, "listing jobs of run %d in %s/%s", id, p.owner, repo)
			}
			for _, j := range jobs.Jobs {
				if j != nil && gitHubLabelsMatch(j.Labels, p.labels) {
					visit(j)
				}
			}
			page = gitHubNext(page, next)
		}
	}
	return nil
}

// gitHubLabelsMatch reports whether have contains every label in want, ignoring case as
// GitHub does when it matches runs-on labels to runners.
func gitHubLabelsMatch(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
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
