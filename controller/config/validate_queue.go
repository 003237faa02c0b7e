package config

// The queue section: pools[].queue.sources and their credentials.

import (
	"net/url"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateQueue(q *Queue, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i := range q.Sources {
		s := &q.Sources[i]
		sp := fp.Child("sources").Index(i)
		switch kinds := s.kinds(); len(kinds) {
		case 0:
			errs = append(errs, field.Required(sp, "one of githubWebhook, github, arc, gitlab, buildkite, prometheus"))
			continue
		case 1:
		default:
			errs = append(errs, field.Forbidden(sp, "exactly one source kind per entry, got "+strings.Join(kinds, ", ")))
			continue
		}
		if names.Has(s.Name) {
			errs = append(errs, field.Duplicate(sp.Child("name"), s.Name))
		}
		names.Insert(s.Name)
		for _, msg := range validation.IsDNS1123Label(s.Name) {
			errs = append(errs, field.Invalid(sp.Child("name"), s.Name, msg))
		}
		errs = append(errs, validateSource(s, sp)...)
	}
	return errs
}

func validateSource(s *Source, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	poll := func(d *metav1.Duration, p *field.Path) {
		if d.Duration < 5*time.Second {
			errs = append(errs, field.Invalid(p.Child("pollInterval"), d.Duration.String(), "must be >= 5s"))
		}
	}
	nonEmpty := func(v string, p *field.Path) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, field.Required(p, ""))
		}
	}
	switch {
	case s.GitHubWebhook != nil:
		p := fp.Child("githubWebhook")
		if len(s.GitHubWebhook.Labels) == 0 {
			errs = append(errs, field.Required(p.Child("labels"), "the runner labels whose jobs this pool runs"))
		}
		if r := s.GitHubWebhook.Resync; r != nil {
			rp := p.Child("resync")
			nonEmpty(r.Owner, rp.Child("owner"))
			errs = append(errs, validateGitHubAPI(r.URL, r.Repos, r.TokenSecretRef, r.App, rp)...)
			// A listing walks every run of every repository: minutes, not seconds.
			if r.Interval.Duration < time.Minute {
				errs = append(errs, field.Invalid(rp.Child("interval"), r.Interval.Duration.String(), "must be >= 1m"))
			}
		}
	case s.GitHub != nil:
		g, p := s.GitHub, fp.Child("github")
		nonEmpty(g.Owner, p.Child("owner"))
		if len(g.Labels) == 0 {
			errs = append(errs, field.Required(p.Child("labels"), "the runner labels whose jobs this pool runs"))
		}
		errs = append(errs, validateGitHubAPI(g.URL, g.Repos, g.TokenSecretRef, g.App, p)...)
		poll(g.PollInterval, p)
	case s.ARC != nil:
		p := fp.Child("arc")
		for _, msg := range validation.IsDNS1123Label(s.ARC.Namespace) {
			errs = append(errs, field.Invalid(p.Child("namespace"), s.ARC.Namespace, msg))
		}
		nonEmpty(s.ARC.ScaleSetName, p.Child("scaleSetName"))
	case s.GitLab != nil:
		g, p := s.GitLab, fp.Child("gitlab")
		if g.URL != "" {
			errs = append(errs, validateURL(g.URL, p.Child("url"))...)
		}
		if (len(g.ProjectIDs) == 0) == (g.GroupID == "") {
			errs = append(errs, field.Required(p.Child("projectIDs"), "exactly one of projectIDs or groupID"))
		}
		errs = append(errs, validateSecretRef(&g.TokenSecretRef, p.Child("tokenSecretRef"))...)
		poll(g.PollInterval, p)
	case s.Buildkite != nil:
		b, p := s.Buildkite, fp.Child("buildkite")
		if b.URL != "" {
			errs = append(errs, validateURL(b.URL, p.Child("url"))...)
		}
		nonEmpty(b.Queue, p.Child("queue"))
		errs = append(errs, validateSecretRef(&b.TokenSecretRef, p.Child("tokenSecretRef"))...)
		poll(b.PollInterval, p)
	case s.Prometheus != nil:
		pr, p := s.Prometheus, fp.Child("prometheus")
		errs = append(errs, validateURL(pr.URL, p.Child("url"))...)
		nonEmpty(pr.Query, p.Child("query"))
		if !sourceStates.Has(pr.State) {
			errs = append(errs, field.NotSupported(p.Child("state"), pr.State, sets.List(sourceStates)))
		}
		poll(pr.PollInterval, p)
	}
	return errs
}

// validateGitHubAPI checks what the github source and a webhook resync share: the API URL,
// repository names and exactly one credential.
func validateGitHubAPI(url string, repos []string, token *SecretKeyRef, app *GitHubAppAuth, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if url != "" {
		errs = append(errs, validateURL(url, fp.Child("url"))...)
	}
	for i, r := range repos {
		if strings.TrimSpace(r) == "" || strings.Contains(r, "/") {
			errs = append(errs, field.Invalid(fp.Child("repos").Index(i), r, "must be a repository name under owner"))
		}
	}
	switch {
	case token == nil && app == nil:
		errs = append(errs, field.Required(fp.Child("tokenSecretRef"), "one of tokenSecretRef or app"))
	case token != nil && app != nil:
		errs = append(errs, field.Forbidden(fp.Child("app"), "set tokenSecretRef or app, not both"))
	case token != nil:
		errs = append(errs, validateSecretRef(token, fp.Child("tokenSecretRef"))...)
	default:
		if app.AppID < 1 {
			errs = append(errs, field.Invalid(fp.Child("app", "appID"), app.AppID, "must be >= 1"))
		}
		if app.InstallationID < 1 {
			errs = append(errs, field.Invalid(fp.Child("app", "installationID"), app.InstallationID, "must be >= 1"))
		}
		errs = append(errs, validateSecretRef(&app.PrivateKeySecretRef, fp.Child("app", "privateKeySecretRef"))...)
	}
	return errs
}

func validateSecretRef(r *SecretKeyRef, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.Name == "" {
		errs = append(errs, field.Required(fp.Child("name"), "the Secret's name"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(r.Name) {
			errs = append(errs, field.Invalid(fp.Child("name"), r.Name, msg))
		}
	}
	if r.Key == "" {
		errs = append(errs, field.Required(fp.Child("key"), "the key within the Secret"))
	} else {
		for _, msg := range validation.IsConfigMapKey(r.Key) {
			errs = append(errs, field.Invalid(fp.Child("key"), r.Key, msg))
		}
	}
	return errs
}

func validateURL(raw string, fp *field.Path) field.ErrorList {
	u, err := url.Parse(raw)
	if raw == "" {
		return field.ErrorList{field.Required(fp, "")}
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return field.ErrorList{field.Invalid(fp, raw, "must be an absolute http(s) URL")}
	}
	return nil
}
