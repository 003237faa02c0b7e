package queue

import (
	"context"
	"encoding/json"
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

	clocktesting "k8s.io/utils/clock/testing"
)

var gitLabTestEpoch = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)

const gitLabTestToken = "glpat-AbCdEf0123456789test"

type gitLabFakeJob struct {
	ID     int64
	Status string // created, pending, running, success, failed, manual, ...
	Tags   []string
}

type gitLabFakeProject struct {
	ID             int64
	Path           string // path_with_namespace
	Archived       bool
	BuildsDisabled bool
	SharedWith     []string // groups the project is shared into
	Jobs           []*gitLabFakeJob
}

type gitLabFakeRequest struct {
	Method, Path string
	Query        url.Values
	Token        string
	Status       int
}

// gitLabFake is a GitLab REST API v4 on 127.0.0.1 with GitLab's offset pagination headers
// (X-Page, X-Next-Page, X-Total-Pages, Link) and RateLimit-* headers.
type gitLabFake struct {
	t   *testing.T
	clk *clocktesting.FakeClock
	srv *httptest.Server

	mu        sync.Mutex
	groups    map[string]string // group ID -> full path
	projects  []*gitLabFakeProject
	pageSize  int
	remaining int
	intercept func(w http.ResponseWriter, r *http.Request) bool
	log       []gitLabFakeRequest
}

func newGitLabFake(t *testing.T) *gitLabFake {
	t.Helper()
	f := &gitLabFake{
		t:         t,
		clk:       clocktesting.NewFakeClock(gitLabTestEpoch),
		groups:    map[string]string{"70": "ci", "71": "ci/platform", "72": "ci/platform/gpu", "90": "other"},
		projects:  gitLabFixture(),
		pageSize:  2,
		remaining: 1999,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v4/projects/{id}/jobs", f.listJobs)
	mux.HandleFunc("GET /api/v4/groups/{id}/projects", f.listGroupProjects)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &gitHubStatusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			f.mu.Lock()
			f.log = append(f.log, gitLabFakeRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Token: r.Header.Get("PRIVATE-TOKEN"), Status: rec.status})
			f.mu.Unlock()
		}()
		f.mu.Lock()
		intercept := f.intercept
		f.mu.Unlock()
		if intercept != nil && intercept(rec, r) {
			return
		}
		if r.Header.Get("PRIVATE-TOKEN") != gitLabTestToken {
			gitLabWrite(rec, http.StatusUnauthorized, `{"message":"401 Unauthorized"}`)
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

func gitLabWrite(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (f *gitLabFake) rateHeaders(h http.Header) {
	h.Set("RateLimit-Name", "throttle_authenticated_api")
	h.Set("RateLimit-Limit", "2000")
	h.Set("RateLimit-Observed", strconv.Itoa(2000-f.remaining))
	h.Set("RateLimit-Remaining", strconv.Itoa(f.remaining))
	h.Set("RateLimit-Reset", strconv.FormatInt(f.clk.Now().Add(time.Minute).Unix(), 10))
}

// writePage answers an offset-paginated GET the way GitLab does.
func (f *gitLabFake) writePage(w http.ResponseWriter, r *http.Request, items []any) {
	q := r.URL.Query()
	size := f.pageSize
	if pp, err := strconv.Atoi(q.Get("per_page")); err == nil && pp > 0 && pp < size {
		size = pp
	}
	page := 1
	if p, err := strconv.Atoi(q.Get("page")); err == nil && p > 0 {
		page = p
	}
	total := (len(items) + size - 1) / size
	if total == 0 {
		total = 1
	}
	start, end := min((page-1)*size, len(items)), min(page*size, len(items))
	pageItems := items[start:end]
	if pageItems == nil {
		pageItems = []any{}
	}
	body, err := json.Marshal(pageItems)
	if err != nil {
		f.t.Errorf("marshal: %v", err)
	}
	h := w.Header()
	f.rateHeaders(h)
	link := func(p int, rel string) string {
		lq := url.Values{}
		for k, v := range q {
			lq[k] = v
		}
		lq.Set("page", strconv.Itoa(p))
		lq.Set("per_page", strconv.Itoa(size))
		return fmt.Sprintf(`<%s%s?%s>; rel="%s"`, f.srv.URL, r.URL.EscapedPath(), lq.Encode(), rel)
	}
	var links []string
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(size))
	h.Set("X-Total", strconv.Itoa(len(items)))
	h.Set("X-Total-Pages", strconv.Itoa(total))
	if page > 1 {
		h.Set("X-Prev-Page", strconv.Itoa(page-1))
		links = append(links, link(page-1, "prev"))
	} else {
		h.Set("X-Prev-Page", "")
	}
	if page < total {
		h.Set("X-Next-Page", strconv.Itoa(page+1))
		links = append(links, link(page+1, "next"))
	} else {
		h.Set("X-Next-Page", "")
	}
	links = append(links, link(1, "first"), link(total, "last"))
	h.Set("Link", strings.Join(links, ", "))
	h.Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func (f *gitLabFake) project(id string) *gitLabFakeProject {
	for _, p := range f.projects {
		if strconv.FormatInt(p.ID, 10) == id || p.Path == id {
			return p
		}
	}
	return nil
}

func (f *gitLabFake) listJobs(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.project(r.PathValue("id"))
	if p == nil {
		gitLabWrite(w, http.StatusNotFound, `{"message":"404 Project Not Found"}`)
		return
	}
	if p.BuildsDisabled {
		gitLabWrite(w, http.StatusForbidden, `{"message":"403 Forbidden"}`)
		return
	}
	scopes := r.URL.Query()["scope[]"]
	var items []any
	for _, j := range p.Jobs {
		if len(scopes) > 0 && !gitHubContains(scopes, j.Status) {
			continue
		}
		job := map[string]any{
			"id": j.ID, "status": j.Status, "stage": "build", "name": fmt.Sprintf("compile %d", j.ID),
			"ref": "main", "tag": false, "coverage": nil, "allow_failure": false,
			"created_at": "2025-03-04T08:58:00.000Z", "started_at": nil, "finished_at": nil, "erased_at": nil,
			"duration": nil, "queued_duration": 12.5,
			"user": map[string]any{"id": 1, "username": "dev", "name": "Dev", "state": "active"},
			"commit": map[string]any{
				"id": "6104942438c14ec7bd21c6cd5bd995272b3faff6", "short_id": "61049424",
				"title": "Build everything", "author_name": "Dev", "created_at": "2025-03-04T08:57:00.000Z",
			},
			"pipeline": map[string]any{
				"id": 9000 + p.ID, "project_id": p.ID, "ref": "main",
				"sha": "6104942438c14ec7bd21c6cd5bd995272b3faff6", "status": "running",
			},
			"web_url":   fmt.Sprintf("https://gitlab.example/%s/-/jobs/%d", p.Path, j.ID),
			"project":   map[string]any{"ci_job_token_scope_enabled": false},
			"artifacts": []any{}, "runner": nil, "runner_manager": nil,
			"tag_list": j.Tags,
		}
		if j.Status == "running" {
			job["started_at"] = "2025-03-04T08:58:12.000Z"
			job["runner"] = map[string]any{
				"id": 33, "description": "nvme-runner-x7k2p", "active": true, "paused": false,
				"is_shared": false, "runner_type": "group_type", "name": "gitlab-runner", "online": true, "status": "online",
			}
		}
		items = append(items, job)
	}
	f.writePage(w, r, items)
}

func (f *gitLabFake) listGroupProjects(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	group, ok := f.groups[r.PathValue("id")]
	if !ok {
		for _, path := range f.groups {
			if path == r.PathValue("id") {
				group, ok = path, true
			}
		}
	}
	if !ok {
		gitLabWrite(w, http.StatusNotFound, `{"message":"404 Group Not Found"}`)
		return
	}
	q := r.URL.Query()
	var items []any
	for _, p := range f.projects {
		ns := p.Path[:strings.LastIndex(p.Path, "/")]
		in := ns == group || (q.Get("include_subgroups") == "true" && strings.HasPrefix(ns, group+"/"))
		shared := q.Get("with_shared") != "false" && gitHubContains(p.SharedWith, group)
		if !in && !shared {
			continue
		}
		if q.Get("archived") == "false" && p.Archived {
			continue
		}
		builds := "enabled"
		if p.BuildsDisabled {
			builds = "disabled"
		}
		name := p.Path[strings.LastIndex(p.Path, "/")+1:]
		items = append(items, map[string]any{
			"id": p.ID, "name": name, "path": name, "path_with_namespace": p.Path,
			"name_with_namespace": strings.ReplaceAll(p.Path, "/", " / "),
			"description":         "", "default_branch": "main", "visibility": "private",
			"web_url":   "https://gitlab.example/" + p.Path,
			"namespace": map[string]any{"id": 70, "name": ns, "path": ns, "kind": "group", "full_path": ns},
			"archived":  p.Archived, "jobs_enabled": !p.BuildsDisabled, "builds_access_level": builds,
			"created_at": "2024-01-02T03:04:05.000Z", "last_activity_at": "2025-03-04T08:00:00.000Z",
		})
	}
	f.writePage(w, r, items)
}

func (f *gitLabFake) setIntercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intercept = fn
}

func (f *gitLabFake) requests(substr string) []gitLabFakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gitLabFakeRequest
	for _, r := range f.log {
		if strings.Contains(r.Path, substr) {
			out = append(out, r)
		}
	}
	return out
}

func (f *gitLabFake) poller(t *testing.T, projects []string, group string, tags []string) *GitLabPoller {
	t.Helper()
	p, err := NewGitLabPoller(f.srv.URL, gitLabTestToken, projects, group, tags, WithClock(f.clk))
	if err != nil {
		t.Fatalf("NewGitLabPoller: %v", err)
	}
	return p
}

var gitLabTestTags = []string{"nvme", "linux"}

// gitLabFixture: group ci (70) > ci/platform (71) > ci/platform/gpu (72), plus other (90).
// Matching (nvme+linux) pending/running: ci/app 3/2, ci/platform/images 1/1,
// ci/platform/gpu/cuda 0/1; ci/old is archived, ci/docs has CI/CD disabled, and
// other/shared-lib is only shared into ci.
func gitLabFixture() []*gitLabFakeProject {
	match := []string{"nvme", "linux"}
	return []*gitLabFakeProject{
		{ID: 501, Path: "ci/app", Jobs: []*gitLabFakeJob{
			{ID: 1, Status: "pending", Tags: match},
			{ID: 2, Status: "pending", Tags: []string{"linux", "nvme", "docker"}},
			{ID: 3, Status: "running", Tags: match},
			{ID: 4, Status: "pending", Tags: []string{"docker"}},
			{ID: 5, Status: "running", Tags: []string{"nvme"}},
			{ID: 6, Status: "success", Tags: match},
			{ID: 7, Status: "pending", Tags: match},
			{ID: 8, Status: "running", Tags: match},
			{ID: 9, Status: "created", Tags: match},
			{ID: 10, Status: "manual", Tags: match},
		}},
		{ID: 502, Path: "ci/platform/images", Jobs: []*gitLabFakeJob{
			{ID: 11, Status: "pending", Tags: match},
			{ID: 12, Status: "running", Tags: match},
			{ID: 13, Status: "failed", Tags: match},
		}},
		{ID: 503, Path: "ci/platform/gpu/cuda", Jobs: []*gitLabFakeJob{
			{ID: 14, Status: "running", Tags: []string{"nvme", "linux", "gpu"}},
			{ID: 15, Status: "pending", Tags: []string{"gpu"}},
		}},
		{ID: 504, Path: "ci/old", Archived: true, Jobs: []*gitLabFakeJob{{ID: 16, Status: "pending", Tags: match}}},
		{ID: 505, Path: "ci/docs", BuildsDisabled: true},
		{ID: 506, Path: "other/shared-lib", SharedWith: []string{"ci"}, Jobs: []*gitLabFakeJob{{ID: 17, Status: "pending", Tags: match}}},
		{ID: 507, Path: "other/unrelated", Jobs: []*gitLabFakeJob{{ID: 18, Status: "pending", Tags: match}}},
	}
}

func TestGitLabPollerCountsProjectsAcrossPages(t *testing.T) {
	f := newGitLabFake(t)
	p := f.poller(t, []string{"501", "ci/platform/images"}, "", gitLabTestTags)

	got, err := p.Poll(context.Background())
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if want := (Counts{Queued: 4, Running: 3}); got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
	var pages []string
	for _, r := range f.requests("/api/v4/projects/501/jobs") {
		pages = append(pages, r.Query.Get("page"))
		if s := r.Query["scope[]"]; strings.Join(s, ",") != "pending,running" {
			t.Errorf("scope[] = %q, want pending and running", s)
		}
		if r.Query.Get("per_page") != "100" || r.Token != gitLabTestToken {
			t.Errorf("per_page %q, PRIVATE-TOKEN %q", r.Query.Get("per_page"), r.Token)
		}
	}
	// 7 jobs in scope, 2 a page: every page, as X-Next-Page says.
	if want := "1,2,3,4"; strings.Join(pages, ",") != want {
		t.Errorf("project 501 pages = %q, want %s", pages, want)
	}
	if n := len(f.requests("/api/v4/projects/ci/platform/images/jobs")); n != 1 {
		t.Errorf("project by path: %d requests, want 1", n)
	}
}

func TestGitLabPollerTagFiltering(t *testing.T) {
	for _, tc := range []struct {
		tags []string
		want Counts
	}{
		{nil, Counts{Queued: 5, Running: 4}},              // every pending and running job
		{[]string{"nvme"}, Counts{Queued: 3, Running: 4}}, // 5 has only nvme
		{gitLabTestTags, Counts{Queued: 3, Running: 3}},   // all of them
		{[]string{"linux", "nvme", "docker"}, Counts{Queued: 1}},
		{[]string{"NVMe"}, Counts{}}, // GitLab tags are matched exactly
		{[]string{"gpu"}, Counts{Queued: 1, Running: 1}},
	} {
		t.Run(strings.Join(tc.tags, "+"), func(t *testing.T) {
			f := newGitLabFake(t)
			p := f.poller(t, []string{"501", "503"}, "", tc.tags)
			got, err := p.Poll(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("Poll = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestGitLabPollerGroupIncludesSubgroupProjects(t *testing.T) {
	f := newGitLabFake(t)
	p := f.poller(t, nil, "70", gitLabTestTags)
	ctx := context.Background()

	got, err := p.Poll(ctx)
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if want := (Counts{Queued: 4, Running: 4}); got != want {
		t.Errorf("counts = %+v, want %+v (ci/app + ci/platform/images + ci/platform/gpu/cuda)", got, want)
	}
	list := f.requests("/api/v4/groups/70/projects")
	if len(list) != 2 {
		t.Fatalf("group listing requests = %d, want 2 pages", len(list))
	}
	for _, r := range list {
		q := r.Query
		if q.Get("include_subgroups") != "true" || q.Get("archived") != "false" || q.Get("with_shared") != "false" || q.Get("per_page") != "100" {
			t.Errorf("group listing query = %s", q.Encode())
		}
	}
	for _, id := range []string{"504", "505", "506", "507"} {
		if n := len(f.requests("/api/v4/projects/" + id + "/")); n != 0 {
			t.Errorf("project %s polled %d times", id, n)
		}
	}

	f.clk.Step(9 * time.Minute)
	if _, err := p.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests("/groups/")); n != 2 {
		t.Errorf("group listed again within 10 minutes (%d requests)", n)
	}
	f.clk.Step(2 * time.Minute)
	if _, err := p.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests("/groups/")); n != 4 {
		t.Errorf("after 11 minutes group listing requests = %d, want 4", n)
	}
}

func TestGitLabPollerGroupByPathRelistsWhenAProjectGoes(t *testing.T) {
	f := newGitLabFake(t)
	p := f.poller(t, nil, "ci/platform", gitLabTestTags)
	ctx := context.Background()
	if got, err := p.Poll(ctx); err != nil || got != (Counts{Queued: 1, Running: 2}) {
		t.Fatalf("Poll = %+v, %v", got, err)
	}
	f.mu.Lock()
	f.projects = append(f.projects[:2], f.projects[3:]...) // delete ci/platform/gpu/cuda
	f.mu.Unlock()
	if _, err := p.Poll(ctx); ReasonOf(err) != ReasonHTTP {
		t.Errorf("Poll with a deleted project = %v (reason %q), want http", err, ReasonOf(err))
	}
	if got, err := p.Poll(ctx); err != nil || got != (Counts{Queued: 1, Running: 1}) {
		t.Errorf("Poll after re-listing = %+v, %v", got, err)
	}
	if n := len(f.requests("/groups/")); n != 2 {
		t.Errorf("group listing requests = %d, want 2 (the deletion forced a re-list)", n)
	}
}

func TestGitLabPollerRateLimited(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string]string
		wait    time.Duration
	}{
		{"Retry-After", map[string]string{"Retry-After": "45", "RateLimit-Remaining": "0", "RateLimit-Reset": strconv.FormatInt(gitLabTestEpoch.Add(45*time.Second).Unix(), 10)}, 45 * time.Second},
		{"RateLimit-Reset only", map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": strconv.FormatInt(gitLabTestEpoch.Add(90*time.Second).Unix(), 10)}, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGitLabFake(t)
			p := f.poller(t, []string{"501"}, "", gitLabTestTags)
			var limited atomic.Bool
			limited.Store(true)
			f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				if !limited.Load() {
					return false
				}
				w.Header().Set("RateLimit-Name", "throttle_authenticated_api")
				w.Header().Set("RateLimit-Limit", "2000")
				for k, v := range tc.headers {
					w.Header().Set(k, v)
				}
				gitLabWrite(w, http.StatusTooManyRequests, "Retry later\n")
				return true
			})
			_, err := p.Poll(context.Background())
			if ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != tc.wait {
				t.Fatalf("Poll = %v; want rate_limited, retry after %s", err, tc.wait)
			}
			f.clk.Step(tc.wait - time.Second)
			if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != time.Second {
				t.Errorf("Poll before the wait is over = %v; want rate_limited, retry after 1s", err)
			}
			if n := len(f.requests("")); n != 1 {
				t.Errorf("requests = %d, want 1 (no retries, no calls while limited)", n)
			}
			f.clk.Step(time.Second)
			limited.Store(false)
			if got, err := p.Poll(context.Background()); err != nil || got != (Counts{Queued: 3, Running: 2}) {
				t.Errorf("Poll after the wait = %+v, %v", got, err)
			}
		})
	}
}

func TestGitLabPollerSpentQuotaStopsNextCall(t *testing.T) {
	f := newGitLabFake(t)
	f.remaining = 0 // RateLimit-Reset is a minute ahead
	p := f.poller(t, []string{"501"}, "", gitLabTestTags)
	_, err := p.Poll(context.Background())
	if ReasonOf(err) != ReasonRateLimited || RetryAfterOf(err) != time.Minute {
		t.Fatalf("Poll = %v; want rate_limited, retry after 1m0s", err)
	}
	if n := len(f.requests("")); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestGitLabPollerBadTokenIsAuth(t *testing.T) {
	f := newGitLabFake(t)
	p, err := NewGitLabPoller(f.srv.URL, "glpat-revoked", []string{"501"}, "", nil, WithClock(f.clk))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonAuth {
		t.Errorf("Poll = %v (reason %q), want auth", err, ReasonOf(err))
	}
	if n := len(f.requests("")); n != 1 {
		t.Errorf("requests = %d, want 1 (no retries)", n)
	}
}

func TestGitLabPollerMalformedBody(t *testing.T) {
	for name, body := range map[string]string{
		"truncated":   `[{"id": 1, "status": "pending", "tag_list": ["nv`,
		"HTML":        `<!DOCTYPE html><html><body>Sign in</body></html>`,
		"object":      `{"message":"hello"}`,
		"null":        `null`,
		"wrong types": `[{"id": "one", "status": 2}]`,
	} {
		t.Run(name, func(t *testing.T) {
			f := newGitLabFake(t)
			p := f.poller(t, []string{"501"}, "", nil)
			f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				gitLabWrite(w, http.StatusOK, body)
				return true
			})
			if _, err := p.Poll(context.Background()); ReasonOf(err) != ReasonMalformed {
				t.Errorf("Poll = %v (reason %q), want malformed", err, ReasonOf(err))
			}
		})
	}
}

func TestGitLabPollerSlowResponseTimesOut(t *testing.T) {
	f := newGitLabFake(t)
	p := f.poller(t, nil, "70", nil)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Poll(ctx); ReasonOf(err) != ReasonTimeout {
		t.Errorf("Poll = %v (reason %q), want timeout", err, ReasonOf(err))
	}
}

func TestGitLabPollerConfigErrors(t *testing.T) {
	for name, build := range map[string]func() error{
		"no token": func() error {
			_, err := NewGitLabPoller("", "", []string{"1"}, "", nil)
			return err
		},
		"projects and group": func() error {
			_, err := NewGitLabPoller("", "t", []string{"1"}, "ci", nil)
			return err
		},
		"neither": func() error {
			_, err := NewGitLabPoller("", "t", nil, "", nil)
			return err
		},
		"bad url": func() error {
			_, err := NewGitLabPoller("gitlab.example.com", "t", []string{"1"}, "", nil)
			return err
		},
	} {
		if err := build(); ReasonOf(err) != ReasonConfig {
			t.Errorf("%s: err = %v (reason %q), want config", name, err, ReasonOf(err))
		}
	}
}
