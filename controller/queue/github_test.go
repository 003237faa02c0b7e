package queue

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	clocktesting "k8s.io/utils/clock/testing"
)

// gitHubTestEpoch is the fake clock's start: a whole second, so X-RateLimit-Reset (epoch
// seconds) round-trips exactly.
var gitHubTestEpoch = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)

const gitHubTestPAT = "github_pat_11AAAAAAA0test"

type gitHubFakeJob struct {
	ID     int64
	Status string // queued, in_progress, completed, waiting
	Labels []string
}

type gitHubFakeRun struct {
	ID     int64
	Status string
	// ListedAs, when set, are the status filters the run shows up under (a run that moved
	// from queued to in_progress between two list calls shows up under both).
	ListedAs []string
	Jobs     []gitHubFakeJob
}

type gitHubFakeRepo struct {
	ID       int64
	Name     string
	Archived bool
	Runs     []*gitHubFakeRun
}

type gitHubFakeRequest struct {
	Method        string
	Path          string
	Query         url.Values
	IfNoneMatch   string
	Authorization string
	Status        int
}

// gitHubFake is a GitHub REST API (Enterprise layout: /api/v3/...) on 127.0.0.1 serving
// payloads shaped as GitHub's: Link pagination, weak ETags and 304s, X-RateLimit-* headers.
type gitHubFake struct {
	t   *testing.T
	clk *clocktesting.FakeClock
	srv *httptest.Server

	mu        sync.Mutex
	owner     string
	ownerKind string // "orgs" or "users"
	repos     []*gitHubFakeRepo
	pageSize  int
	remaining int // X-RateLimit-Remaining on answered requests
	// intercept, when set, may answer a request itself (return true) before auth and routing.
	intercept func(w http.ResponseWriter, r *http.Request) bool
	log       []gitHubFakeRequest

	// GitHub App: the fake verifies the JWT and mints installation tokens.
	appID          int64
	installationID int64
	appKey         *rsa.PublicKey
	tokenTTLs      []time.Duration // per mint, in order; the last repeats
	minted         []string
}

func newGitHubFake(t *testing.T) *gitHubFake {
	t.Helper()
	f := &gitHubFake{
		t:         t,
		clk:       clocktesting.NewFakeClock(gitHubTestEpoch),
		owner:     "acme",
		ownerKind: "orgs",
		pageSize:  2,
		remaining: 4999,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v3/{kind}/{owner}/repos", f.listRepos)
	mux.HandleFunc("GET /api/v3/repos/{owner}/{repo}/actions/runs", f.listRuns)
	mux.HandleFunc("GET /api/v3/repos/{owner}/{repo}/actions/runs/{run}/jobs", f.listJobs)
	mux.HandleFunc("POST /api/v3/app/installations/{id}/access_tokens", f.mintToken)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &gitHubStatusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			f.mu.Lock()
			f.log = append(f.log, gitHubFakeRequest{
				Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(),
				IfNoneMatch: r.Header.Get("If-None-Match"), Authorization: r.Header.Get("Authorization"),
				Status: rec.status,
			})
			f.mu.Unlock()
		}()
		f.mu.Lock()
		intercept := f.intercept
		f.mu.Unlock()
		if intercept != nil && intercept(rec, r) {
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/access_tokens") && !f.authorized(r) {
			gitHubWriteError(rec, http.StatusUnauthorized, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`)
			return
		}
		mux.ServeHTTP(rec, r)
	}))
	f.srv.Listener.Close()
	f.srv.Listener = l
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

type gitHubStatusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *gitHubStatusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (f *gitHubFake) authorized(r *http.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	got := r.Header.Get("Authorization")
	if f.appKey == nil {
		return got == "Bearer "+gitHubTestPAT
	}
	// An installation token is good until the next one is minted (enough for these tests).
	return len(f.minted) > 0 && got == "token "+f.minted[len(f.minted)-1]
}

func gitHubWriteError(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (f *gitHubFake) rateHeaders(h http.Header) {
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Remaining", strconv.Itoa(f.remaining))
	h.Set("X-RateLimit-Used", strconv.Itoa(5000-f.remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(f.clk.Now().Add(time.Hour).Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

// writeList answers a paginated GET as GitHub does: the page of items (wrap turns them into
// the body), a Link header with prev/next/last/first built on linkPath (GitHub links
// repository lists by numeric ID), a weak ETag, and 304 when If-None-Match matches.
func (f *gitHubFake) writeList(w http.ResponseWriter, r *http.Request, linkPath string, items []any, wrap func(page []any) any) {
	q := r.URL.Query()
	size := f.pageSize
	if pp, err := strconv.Atoi(q.Get("per_page")); err == nil && pp > 0 && pp < size {
		size = pp
	}
	page := 1
	if p, err := strconv.Atoi(q.Get("page")); err == nil && p > 0 {
		page = p
	}
	last := (len(items) + size - 1) / size
	if last == 0 {
		last = 1
	}
	start, end := min((page-1)*size, len(items)), min(page*size, len(items))
	body, err := json.Marshal(wrap(items[start:end]))
	if err != nil {
		f.t.Errorf("marshal: %v", err)
	}
	sum := sha256.Sum256(body)
	etag := fmt.Sprintf(`W/"%x"`, sum[:16])

	h := w.Header()
	f.rateHeaders(h)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, max-age=60, s-maxage=60")
	h.Set("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	if r.Header.Get("If-None-Match") == etag {
		// GitHub's 304 repeats the ETag and rate headers; the Link header is not relied on.
		w.WriteHeader(http.StatusNotModified)
		return
	}
	link := func(p int, rel string) string {
		lq := url.Values{}
		for k, v := range q {
			lq[k] = v
		}
		lq.Set("page", strconv.Itoa(p))
		return fmt.Sprintf(`<%s/api/v3%s?%s>; rel="%s"`, f.srv.URL, linkPath, lq.Encode(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		h.Set("Link", strings.Join(links, ", "))
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(body)
}

func (f *gitHubFake) repo(r *http.Request) *gitHubFakeRepo {
	if r.PathValue("owner") != f.owner {
		return nil
	}
	for _, repo := range f.repos {
		if repo.Name == r.PathValue("repo") {
			return repo
		}
	}
	return nil
}

func (f *gitHubFake) listRepos(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.PathValue("kind") != f.ownerKind || r.PathValue("owner") != f.owner {
		gitHubWriteError(w, http.StatusNotFound, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest/repos/repos#list-organization-repositories","status":"404"}`)
		return
	}
	ownerType := map[string]string{"orgs": "Organization", "users": "User"}[f.ownerKind]
	var items []any
	for _, repo := range f.repos {
		items = append(items, map[string]any{
			"id": repo.ID, "node_id": fmt.Sprintf("R_kgDO%d", repo.ID), "name": repo.Name,
			"full_name": f.owner + "/" + repo.Name, "private": true,
			"owner":    map[string]any{"login": f.owner, "id": 9001, "type": ownerType},
			"html_url": "https://github.example/" + f.owner + "/" + repo.Name,
			"url":      f.srv.URL + "/api/v3/repos/" + f.owner + "/" + repo.Name,
			"fork":     false, "archived": repo.Archived, "disabled": false, "visibility": "private",
			"default_branch": "main", "created_at": "2024-01-02T03:04:05Z", "pushed_at": "2025-03-01T10:00:00Z",
		})
	}
	linkPath := "/organizations/9001/repos"
	if f.ownerKind == "users" {
		linkPath = "/user/9001/repos"
	}
	f.writeList(w, r, linkPath, items, func(page []any) any { return gitHubNonNil(page) })
}

func (f *gitHubFake) listRuns(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	repo := f.repo(r)
	if repo == nil {
		gitHubWriteError(w, http.StatusNotFound, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest/actions/workflow-runs#list-workflow-runs-for-a-repository","status":"404"}`)
		return
	}
	status := r.URL.Query().Get("status")
	var items []any
	for _, run := range repo.Runs {
		listed := []string{run.Status}
		if run.ListedAs != nil {
			listed = run.ListedAs
		}
		if status != "" && !gitHubContains(listed, status) {
			continue
		}
		items = append(items, map[string]any{
			"id": run.ID, "name": "CI", "node_id": fmt.Sprintf("WFR_kwLO%d", run.ID),
			"head_branch": "main", "head_sha": "9f2c4b1d8e7a6f5c4b3a2918d7e6f5a4b3c2d1e0",
			"path": ".github/workflows/ci.yml", "run_number": run.ID % 1000, "run_attempt": 1,
			"event": "push", "status": run.Status, "conclusion": nil, "workflow_id": 161335,
			"url":        fmt.Sprintf("%s/api/v3/repos/%s/%s/actions/runs/%d", f.srv.URL, f.owner, repo.Name, run.ID),
			"jobs_url":   fmt.Sprintf("%s/api/v3/repos/%s/%s/actions/runs/%d/jobs", f.srv.URL, f.owner, repo.Name, run.ID),
			"created_at": "2025-03-04T08:58:00Z", "updated_at": "2025-03-04T08:59:00Z",
			"repository": map[string]any{"id": repo.ID, "name": repo.Name, "full_name": f.owner + "/" + repo.Name},
		})
	}
	f.writeList(w, r, fmt.Sprintf("/repositories/%d/actions/runs", repo.ID), items, func(page []any) any {
		return map[string]any{"total_count": len(items), "workflow_runs": gitHubNonNil(page)}
	})
}

func (f *gitHubFake) listJobs(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	repo := f.repo(r)
	var run *gitHubFakeRun
	if repo != nil {
		for _, candidate := range repo.Runs {
			if strconv.FormatInt(candidate.ID, 10) == r.PathValue("run") {
				run = candidate
			}
		}
	}
	if run == nil {
		gitHubWriteError(w, http.StatusNotFound, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest/actions/workflow-jobs#list-jobs-for-a-workflow-run","status":"404"}`)
		return
	}
	var items []any
	for _, j := range run.Jobs {
		job := map[string]any{
			"id": j.ID, "run_id": run.ID, "run_attempt": 1, "node_id": fmt.Sprintf("CR_kwDO%d", j.ID),
			"head_sha": "9f2c4b1d8e7a6f5c4b3a2918d7e6f5a4b3c2d1e0", "head_branch": "main",
			"url":    fmt.Sprintf("%s/api/v3/repos/%s/%s/actions/jobs/%d", f.srv.URL, f.owner, repo.Name, j.ID),
			"status": j.Status, "conclusion": nil, "name": fmt.Sprintf("build (%d)", j.ID),
			"created_at": "2025-03-04T08:58:01Z", "started_at": "2025-03-04T08:58:01Z", "completed_at": nil,
			"steps": []any{}, "labels": j.Labels, "workflow_name": "CI",
			"runner_id": nil, "runner_name": nil, "runner_group_id": nil, "runner_group_name": nil,
			"check_run_url": fmt.Sprintf("%s/api/v3/repos/%s/%s/check-runs/%d", f.srv.URL, f.owner, repo.Name, j.ID),
		}
		if j.Status != "queued" && j.Status != "waiting" {
			job["runner_id"], job["runner_name"] = 77, "nvme-runner-x7k2p"
			job["runner_group_id"], job["runner_group_name"] = 1, "Default"
		}
		if j.Status == "completed" {
			job["conclusion"], job["completed_at"] = "success", "2025-03-04T08:59:30Z"
		}
		items = append(items, job)
	}
	f.writeList(w, r, fmt.Sprintf("/repositories/%d/actions/runs/%d/jobs", repo.ID, run.ID), items, func(page []any) any {
		return map[string]any{"total_count": len(items), "jobs": gitHubNonNil(page)}
	})
}

func (f *gitHubFake) mintToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	claims := &jwt.RegisteredClaims{}
	var err error
	if !ok {
		err = fmt.Errorf("no bearer JWT")
	} else {
		_, err = jwt.ParseWithClaims(raw, claims, func(tk *jwt.Token) (any, error) {
			if _, ok := tk.Method.(*jwt.SigningMethodRSA); !ok {
				return nil, fmt.Errorf("unexpected signing method %v", tk.Header["alg"])
			}
			return f.appKey, nil
		})
	}
	if err == nil && claims.Issuer != strconv.FormatInt(f.appID, 10) {
		err = fmt.Errorf("iss %q is not app %d", claims.Issuer, f.appID)
	}
	if err != nil {
		f.t.Logf("fake GitHub rejected app JWT: %v", err)
		gitHubWriteError(w, http.StatusUnauthorized, `{"message":"A JSON web token could not be decoded","documentation_url":"https://docs.github.com/rest","status":"401"}`)
		return
	}
	if r.PathValue("id") != strconv.FormatInt(f.installationID, 10) {
		gitHubWriteError(w, http.StatusNotFound, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app","status":"404"}`)
		return
	}
	ttl := time.Hour
	if n := len(f.tokenTTLs); n > 0 {
		ttl = f.tokenTTLs[min(len(f.minted), n-1)]
	}
	token := fmt.Sprintf("ghs_fakeInstallationToken%d", len(f.minted)+1)
	f.minted = append(f.minted, token)
	// Installation tokens expire on GitHub's (wall) clock, which is what ghinstallation reads.
	body, _ := json.Marshal(map[string]any{
		"token": token, "expires_at": time.Now().Add(ttl).UTC().Format(time.RFC3339),
		"permissions":          map[string]string{"actions": "read", "metadata": "read"},
		"repository_selection": "all",
	})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
}

func (f *gitHubFake) setIntercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intercept = fn
}

// requests returns the logged requests whose path contains substr.
func (f *gitHubFake) requests(substr string) []gitHubFakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gitHubFakeRequest
	for _, r := range f.log {
		if strings.Contains(r.Path, substr) {
			out = append(out, r)
		}
	}
	return out
}

func (f *gitHubFake) poller(t *testing.T, repos, labels []string) *GitHubPoller {
	t.Helper()
	p, err := NewGitHubPoller(f.srv.URL, f.owner, repos, labels, GitHubAuth{Token: gitHubTestPAT}, WithClock(f.clk))
	if err != nil {
		t.Fatalf("NewGitHubPoller: %v", err)
	}
	return p
}

func gitHubNonNil(page []any) []any {
	if page == nil {
		return []any{}
	}
	return page
}

func gitHubContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var gitHubTestLabels = []string{"self-hosted", "linux", "nvme"}

// gitHubFixture: two repos; queued runs span two pages (page size 2), run 1001's jobs span
// three pages, run 1002 is listed under both statuses, run 1006 is completed.
// Matching queued: 3 (1001) + 1 (1002) + 3 (1003-1005) + 1 (2002) = 8; running: 1 + 3 = 4.
func gitHubFixture() []*gitHubFakeRepo {
	match := []string{"self-hosted", "linux", "nvme"}
	return []*gitHubFakeRepo{
		{ID: 101, Name: "alpha", Runs: []*gitHubFakeRun{
			{ID: 1001, Status: "queued", Jobs: []gitHubFakeJob{
				{ID: 1, Status: "queued", Labels: match},
				{ID: 2, Status: "queued", Labels: []string{"self-hosted", "Linux", "NVMe", "x64"}},
				{ID: 3, Status: "queued", Labels: []string{"ubuntu-latest"}},
				{ID: 4, Status: "queued", Labels: []string{"self-hosted", "linux"}},
				{ID: 5, Status: "queued", Labels: []string{"SELF-HOSTED", "LINUX", "NVME"}},
			}},
			{ID: 1002, Status: "in_progress", ListedAs: []string{"queued", "in_progress"}, Jobs: []gitHubFakeJob{
				{ID: 6, Status: "completed", Labels: match},
				{ID: 7, Status: "in_progress", Labels: match},
				{ID: 8, Status: "queued", Labels: match},
				{ID: 9, Status: "waiting", Labels: match},
			}},
			{ID: 1003, Status: "queued", Jobs: []gitHubFakeJob{{ID: 10, Status: "queued", Labels: match}}},
			{ID: 1004, Status: "queued", Jobs: []gitHubFakeJob{{ID: 11, Status: "queued", Labels: match}}},
			{ID: 1005, Status: "queued", Jobs: []gitHubFakeJob{{ID: 12, Status: "queued", Labels: match}}},
			{ID: 1006, Status: "completed", Jobs: []gitHubFakeJob{{ID: 13, Status: "queued", Labels: match}}},
		}},
		{ID: 102, Name: "beta", Runs: []*gitHubFakeRun{
			{ID: 2001, Status: "in_progress", Jobs: []gitHubFakeJob{
				{ID: 21, Status: "in_progress", Labels: match},
				{ID: 22, Status: "in_progress", Labels: match},
				{ID: 23, Status: "in_progress", Labels: match},
			}},
			{ID: 2002, Status: "queued", Jobs: []gitHubFakeJob{
				{ID: 24, Status: "queued", Labels: match},
				{ID: 25, Status: "queued", Labels: []string{"windows"}},
			}},
		}},
	}
}

var gitHubFixtureCounts = Counts{Queued: 8, Running: 4}

func TestGitHubPollerCountsAcrossPagesReposAndLabels(t *testing.T) {
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	p := f.poller(t, []string{"alpha", "beta"}, []string{"Self-Hosted", "linux", "NVME"})

	got, err := p.Poll(context.Background())
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if got != gitHubFixtureCounts {
		t.Errorf("counts = %+v, want %+v", got, gitHubFixtureCounts)
	}

	for _, r := range f.requests("/actions/runs") {
		if r.Query.Get("per_page") != "100" {
			t.Errorf("%s?%s: per_page = %q, want 100", r.Path, r.Query.Encode(), r.Query.Get("per_page"))
		}
		if r.Authorization != "Bearer "+gitHubTestPAT {
			t.Errorf("%s: Authorization = %q", r.Path, r.Authorization)
		}
	}
	var pages []string
	for _, r := range f.requests("/repos/acme/alpha/actions/runs/1001/jobs") {
		pages = append(pages, r.Query.Get("page"))
	}
	if want := []string{"", "2", "3"}; strings.Join(pages, ",") != strings.Join(want, ",") {
		t.Errorf("run 1001 jobs pages = %q, want %q (every page, not just the first)", pages, want)
	}
	var queuedPages []string
	for _, r := range f.requests("/repos/acme/alpha/actions/runs") {
		if strings.HasSuffix(r.Path, "/runs") && r.Query.Get("status") == "queued" {
			queuedPages = append(queuedPages, r.Query.Get("page"))
		}
	}
	if want := []string{"", "2", "3"}; strings.Join(queuedPages, ",") != strings.Join(want, ",") {
		t.Errorf("alpha queued runs pages = %q, want %q", queuedPages, want)
	}
	if n := len(f.requests("/runs/1002/jobs")); n != 2 {
		t.Errorf("run 1002 (listed under both statuses) jobs requests = %d, want 2 (one walk of two pages)", n)
	}
	if n := len(f.requests("/runs/1006/")); n != 0 {
		t.Errorf("completed run 1006 was asked for its jobs %d times", n)
	}
	if n := len(f.requests("/orgs/")); n != 0 {
		t.Errorf("configured repos still listed the org %d times", n)
	}
}

func TestGitHubPollerNoLabelsCountsEveryJob(t *testing.T) {
	f := newGitHubFake(t)
	f.repos = gitHubFixture()[1:] // beta: 3 running, 2 queued (one windows)
	p := f.poller(t, []string{"beta"}, nil)
	got, err := p.Poll(context.Background())
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if want := (Counts{Queued: 2, Running: 3}); got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
}

func TestGitHubPollerListsOrgReposAndCachesThem(t *testing.T) {
	f := newGitHubFake(t)
	repos := gitHubFixture()
	f.repos = append(repos,
		&gitHubFakeRepo{ID: 103, Name: "legacy", Archived: true, Runs: []*gitHubFakeRun{
			{ID: 3001, Status: "queued", Jobs: []gitHubFakeJob{{ID: 31, Status: "queued", Labels: gitHubTestLabels}}},
		}},
		&gitHubFakeRepo{ID: 104, Name: "docs"},
	)
	p := f.poller(t, nil, gitHubTestLabels)

	got, err := p.Poll(context.Background())
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if got != gitHubFixtureCounts {
		t.Errorf("counts = %+v, want %+v", got, gitHubFixtureCounts)
	}
	list := f.requests("/orgs/acme/repos")
	if len(list) != 2 || list[1].Query.Get("page") != "2" {
		t.Fatalf("org repo listing requests = %+v, want pages 1 and 2", list)
	}
	if n := len(f.requests("/repos/acme/docs/actions/runs")); n != 2 {
		t.Errorf("docs runs requests = %d, want 2 (queued, in_progress)", n)
	}
	if n := len(f.requests("/repos/acme/legacy/")); n != 0 {
		t.Errorf("archived repo polled %d times", n)
	}

	f.clk.Step(9 * time.Minute)
	if _, err := p.Poll(context.Background()); err != nil {
		t.Fatalf("second Poll: %v", err)
	}
	if n := len(f.requests("/orgs/acme/repos")); n != 2 {
		t.Errorf("org listed again within 10 minutes (%d requests)", n)
	}

	f.clk.Step(2 * time.Minute)
	if _, err := p.Poll(context.Background()); err != nil {
		t.Fatalf("third Poll: %v", err)
	}
	relist := f.requests("/orgs/acme/repos")[2:]
	if len(relist) != 2 {
		t.Fatalf("after 11 minutes the org was listed with %d requests, want 2", len(relist))
	}
	for _, r := range relist {
		if r.IfNoneMatch == "" || r.Status != http.StatusNotModified {
			t.Errorf("re-listing %s?%s: If-None-Match %q, status %d; want a conditional 304", r.Path, r.Query.Encode(), r.IfNoneMatch, r.Status)
		}
	}
}

func TestGitHubPollerListsUserReposWhenOwnerIsNotAnOrg(t *testing.T) {
	f := newGitHubFake(t)
	f.ownerKind = "users"
	f.repos = gitHubFixture()
	p := f.poller(t, nil, gitHubTestLabels)
	got, err := p.Poll(context.Background())
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if got != gitHubFixtureCounts {
		t.Errorf("counts = %+v, want %+v", got, gitHubFixtureCounts)
	}
	orgs, users := f.requests("/orgs/acme/repos"), f.requests("/users/acme/repos")
	if len(orgs) != 1 || orgs[0].Status != http.StatusNotFound || len(users) != 1 || users[0].Status != http.StatusOK {
		t.Errorf("want a 404 from /orgs then /users; got %+v and %+v", orgs, users)
	}
}

func TestGitHubPollerETagNotModifiedReusesResults(t *testing.T) {
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	p := f.poller(t, []string{"alpha", "beta"}, gitHubTestLabels)
	ctx := context.Background()

	if got, err := p.Poll(ctx); err != nil || got != gitHubFixtureCounts {
		t.Fatalf("first Poll = %+v, %v", got, err)
	}
	first := len(f.requests(""))

	got, err := p.Poll(ctx)
	if err != nil || got != gitHubFixtureCounts {
		t.Fatalf("second Poll = %+v, %v; want the cached %+v", got, err, gitHubFixtureCounts)
	}
	second := f.requests("")[first:]
	if len(second) != first {
		t.Errorf("second poll made %d requests, want the same %d (304s carry no Link, the cache does)", len(second), first)
	}
	for _, r := range second {
		if r.IfNoneMatch == "" || r.Status != http.StatusNotModified {
			t.Errorf("%s?%s: If-None-Match %q, status %d; want a conditional request answered 304", r.Path, r.Query.Encode(), r.IfNoneMatch, r.Status)
		}
	}

	// A job starts: only that page changes; the rest stay 304 and cached.
	f.mu.Lock()
	f.repos[0].Runs[0].Jobs[0].Status = "in_progress"
	f.mu.Unlock()
	got, err = p.Poll(ctx)
	if want := (Counts{Queued: 7, Running: 5}); err != nil || got != want {
		t.Fatalf("third Poll = %+v, %v; want %+v", got, err, want)
	}
	var fresh []string
	for _, r := range f.requests("")[2*first:] {
		if r.Status == http.StatusOK {
			fresh = append(fresh, r.Path+"?"+r.Query.Encode())
		}
	}
	if len(fresh) != 1 || !strings.Contains(fresh[0], "/runs/1001/jobs") {
		t.Errorf("fresh (200) responses = %q, want only run 1001's first jobs page", fresh)
	}

	// A run finishes: its cached pages are dropped.
	f.mu.Lock()
	f.repos[1].Runs[0].Status = "completed"
	f.mu.Unlock()
	if _, err := p.Poll(ctx); err != nil {
		t.Fatalf("fourth Poll: %v", err)
	}
	for k := range p.etags {
		if strings.Contains(k, "/runs/2001/") {
			t.Errorf("cache still holds %s after run 2001 completed", k)
		}
	}
}

func TestGitHubPollerPrimaryRateLimitStopsCallingUntilReset(t *testing.T) {
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	p := f.poller(t, []string{"alpha", "beta"}, gitHubTestLabels)
	ctx := context.Background()

	var limited atomic.Bool
	limited.Store(true)
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !limited.Load() {
			return false
		}
		h := w.Header()
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(gitHubTestEpoch.Add(120*time.Second).Unix(), 10))
		h.Set("X-RateLimit-Resource", "core")
		gitHubWriteError(w, http.StatusForbidden, `{"message":"API rate limit exceeded for user ID 9001. If you reach out to GitHub Support for help, please include the request ID ABCD:1234.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit"}`)
		return true
	})

	_, err := p.Poll(ctx)
	if ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != 120*time.Second {
		t.Fatalf("Poll error = %v (reason %q, retry after %s); want rate_limited, 2m0s", err, ReasonOf(err), RetryAfterOf(err))
	}
	if n := len(f.requests("")); n != 1 {
		t.Fatalf("requests = %d, want 1", n)
	}

	f.clk.Step(60 * time.Second)
	_, err = p.Poll(ctx)
	if ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != 60*time.Second {
		t.Errorf("Poll before reset = %v; want rate_limited, retry after 1m0s", err)
	}
	if n := len(f.requests("")); n != 1 {
		t.Errorf("Poll before the reset made %d more requests, want none", n-1)
	}

	f.clk.Step(60 * time.Second)
	limited.Store(false)
	if got, err := p.Poll(ctx); err != nil || got != gitHubFixtureCounts {
		t.Errorf("Poll after reset = %+v, %v; want %+v", got, err, gitHubFixtureCounts)
	}
}

func TestGitHubPollerSpentQuotaOnSuccessStopsNextCall(t *testing.T) {
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	f.remaining = 0 // the answered call was the last one allowed; reset is in an hour
	p := f.poller(t, []string{"alpha"}, gitHubTestLabels)

	_, err := p.Poll(context.Background())
	if ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != time.Hour {
		t.Fatalf("Poll = %v; want rate_limited, retry after 1h0m0s", err)
	}
	_, _ = p.Poll(context.Background())
	if n := len(f.requests("")); n != 1 {
		t.Errorf("requests = %d, want 1: none after the quota was spent", n)
	}
}

func TestGitHubPollerSecondaryRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		wait   time.Duration
	}{
		{"429 secondary", http.StatusTooManyRequests, `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`, 30 * time.Second},
		{"403 secondary", http.StatusForbidden, `{"message":"You have exceeded a secondary rate limit and have been temporarily blocked from content creation.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`, 60 * time.Second},
		{"429 without documentation_url", http.StatusTooManyRequests, `{"message":"Too Many Requests"}`, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGitHubFake(t)
			f.repos = gitHubFixture()
			p := f.poller(t, []string{"alpha", "beta"}, gitHubTestLabels)
			var limited atomic.Bool
			limited.Store(true)
			f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				if !limited.Load() {
					return false
				}
				f.rateHeaders(w.Header()) // the primary quota is fine
				w.Header().Set("Retry-After", strconv.Itoa(int(tc.wait/time.Second)))
				gitHubWriteError(w, tc.status, tc.body)
				return true
			})

			_, err := p.Poll(context.Background())
			if ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != tc.wait {
				t.Fatalf("Poll = %v; want rate_limited, retry after %s", err, tc.wait)
			}
			f.clk.Step(tc.wait - time.Second)
			if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != time.Second {
				t.Errorf("Poll inside Retry-After = %v; want rate_limited, retry after 1s", err)
			}
			if n := len(f.requests("")); n != 1 {
				t.Errorf("requests = %d, want 1", n)
			}
			f.clk.Step(time.Second)
			limited.Store(false)
			if got, err := p.Poll(context.Background()); err != nil || got != gitHubFixtureCounts {
				t.Errorf("Poll after Retry-After = %+v, %v", got, err)
			}
		})
	}
}

func TestGitHubPollerAuthErrors(t *testing.T) {
	t.Run("bad token", func(t *testing.T) {
		f := newGitHubFake(t)
		f.repos = gitHubFixture()
		p, err := NewGitHubPoller(f.srv.URL, "acme", []string{"alpha"}, nil, GitHubAuth{Token: "ghp_revoked"}, WithClock(f.clk))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonAuth {
			t.Errorf("Poll = %v (reason %q), want auth", err, ReasonOf(err))
		}
	})
	t.Run("403 without rate-limit headers", func(t *testing.T) {
		f := newGitHubFake(t)
		f.repos = gitHubFixture()
		p := f.poller(t, []string{"alpha"}, nil)
		f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
			gitHubWriteError(w, http.StatusForbidden, `{"message":"Resource not accessible by personal access token","documentation_url":"https://docs.github.com/rest/actions/workflow-runs#list-workflow-runs-for-a-repository","status":"403"}`)
			return true
		})
		if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonAuth {
			t.Errorf("Poll = %v (reason %q), want auth", err, ReasonOf(err))
		}
	})
	t.Run("unknown repo", func(t *testing.T) {
		f := newGitHubFake(t)
		f.repos = gitHubFixture()
		p := f.poller(t, []string{"gone"}, nil)
		if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonHTTP {
			t.Errorf("Poll = %v (reason %q), want http", err, ReasonOf(err))
		}
	})
}

func TestGitHubPollerMalformedBody(t *testing.T) {
	for name, body := range map[string]string{
		"truncated JSON":    `{"total_count": 2, "workflow_runs": [{"id": 1`,
		"HTML from a proxy": `<html><body>502 Bad Gateway</body></html>`,
		"not the shape":     `{"message":"hello"}`,
		"wrong types":       `{"total_count": 1, "workflow_runs": "none"}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := newGitHubFake(t)
			f.repos = gitHubFixture()
			p := f.poller(t, []string{"alpha"}, nil)
			f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				f.rateHeaders(w.Header())
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				_, _ = w.Write([]byte(body))
				return true
			})
			if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonMalformed {
				t.Errorf("Poll = %v (reason %q), want malformed", err, ReasonOf(err))
			}
		})
	}
}

func TestGitHubPollerSlowResponseTimesOut(t *testing.T) {
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	p := f.poller(t, []string{"alpha"}, nil)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the server closes
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Poll(ctx)
	if ReasonOf(err) != ReasonTimeout {
		t.Errorf("Poll = %v (reason %q), want timeout", err, ReasonOf(err))
	}
}

// gitHubTestAppKey is a fresh RSA key in the PKCS#1 PEM form GitHub hands out.
func gitHubTestAppKey(t *testing.T) (*rsa.PrivateKey, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

func TestGitHubPollerAppAuthMintsAndRefreshesInstallationTokens(t *testing.T) {
	key, pemBytes := gitHubTestAppKey(t)
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	f.appID, f.installationID, f.appKey = 424242, 8675309, &key.PublicKey
	// The first token is inside ghinstallation's one-minute refresh window from the start,
	// so the next request mints a new one; the second lasts an hour.
	f.tokenTTLs = []time.Duration{30 * time.Second, time.Hour}

	p, err := NewGitHubPoller(f.srv.URL, "acme", []string{"alpha", "beta"}, gitHubTestLabels,
		GitHubAuth{App: &GitHubAppCredentials{AppID: 424242, InstallationID: 8675309, PrivateKeyPEM: pemBytes}},
		WithClock(f.clk))
	if err != nil {
		t.Fatalf("NewGitHubPoller: %v", err)
	}
	for i := range 2 {
		if got, err := p.Poll(context.Background()); err != nil || got != gitHubFixtureCounts {
			t.Fatalf("Poll %d = %+v, %v; want %+v", i, got, err, gitHubFixtureCounts)
		}
	}

	mints := f.requests("/app/installations/8675309/access_tokens")
	if len(mints) != 2 {
		t.Fatalf("token mints = %d, want 2 (first, then a refresh of the expiring token)", len(mints))
	}
	var api []gitHubFakeRequest
	for _, r := range f.requests("/api/v3/repos/") {
		api = append(api, r)
	}
	if len(api) < 2 {
		t.Fatalf("API requests = %d", len(api))
	}
	if api[0].Authorization != "token ghs_fakeInstallationToken1" {
		t.Errorf("first API call Authorization = %q, want the first installation token", api[0].Authorization)
	}
	for _, r := range api[1:] {
		if r.Authorization != "token ghs_fakeInstallationToken2" {
			t.Errorf("%s Authorization = %q, want the refreshed installation token", r.Path, r.Authorization)
		}
	}
}

func TestGitHubPollerAppAuthRejected(t *testing.T) {
	key, pemBytes := gitHubTestAppKey(t)
	f := newGitHubFake(t)
	f.repos = gitHubFixture()
	f.appID, f.installationID, f.appKey = 424242, 8675309, &key.PublicKey
	for name, creds := range map[string]GitHubAppCredentials{
		"wrong app ID":         {AppID: 1, InstallationID: 8675309, PrivateKeyPEM: pemBytes},
		"unknown installation": {AppID: 424242, InstallationID: 5, PrivateKeyPEM: pemBytes},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := NewGitHubPoller(f.srv.URL, "acme", []string{"alpha"}, nil, GitHubAuth{App: &creds}, WithClock(f.clk))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonAuth {
				t.Errorf("Poll = %v (reason %q), want auth", err, ReasonOf(err))
			}
		})
	}
	if n := len(f.requests("/api/v3/repos/")); n != 0 {
		t.Errorf("%d API calls made without an installation token", n)
	}
}

func TestGitHubPollerConfigErrors(t *testing.T) {
	_, pemBytes := gitHubTestAppKey(t)
	for name, build := range map[string]func() error{
		"no owner": func() error {
			_, err := NewGitHubPoller("", "", nil, nil, GitHubAuth{Token: "x"})
			return err
		},
		"no auth": func() error {
			_, err := NewGitHubPoller("", "acme", nil, nil, GitHubAuth{})
			return err
		},
		"token and app": func() error {
			_, err := NewGitHubPoller("", "acme", nil, nil, GitHubAuth{Token: "x", App: &GitHubAppCredentials{AppID: 1, InstallationID: 2, PrivateKeyPEM: pemBytes}})
			return err
		},
		"bad key": func() error {
			_, err := NewGitHubPoller("", "acme", nil, nil, GitHubAuth{App: &GitHubAppCredentials{AppID: 1, InstallationID: 2, PrivateKeyPEM: []byte("nope")}})
			return err
		},
		"bad url": func() error {
			_, err := NewGitHubPoller("ghe.example.com", "acme", nil, nil, GitHubAuth{Token: "x"})
			return err
		},
		"repo with slash": func() error {
			_, err := NewGitHubPoller("", "acme", []string{"other/repo"}, nil, GitHubAuth{Token: "x"})
			return err
		},
	} {
		if err := build(); ReasonOf(err) != ReasonConfig {
			t.Errorf("%s: err = %v (reason %q), want config", name, err, ReasonOf(err))
		}
	}
}
