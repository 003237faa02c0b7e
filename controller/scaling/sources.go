package scaling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"warmpool.io/warmpool/controller/config"
	"warmpool.io/warmpool/controller/queue"
)

// Sources turns a config's queue sources into running pollers and webhook routes. It is
// re-applied on every config change; the runner keeps a poller whose settings and credential
// did not change, so ETag caches and rate-limit state survive unrelated edits.
type Sources struct {
	kube      client.Reader // Secrets in warmpool's namespace (cached)
	apiReader client.Reader // ARC objects, read uncached so no watch starts on types that may not exist
	namespace string
	tracker   *queue.Tracker
	runner    *queue.Runner
	webhook   *queue.Webhook

	// applyMu serializes Apply: a config change and a Secret change may both re-apply.
	applyMu sync.Mutex

	mu            sync.Mutex
	webhookSecret []byte
}

// NewSources wires sources into runner and webhook. The webhook's secret comes from here.
func NewSources(kube, apiReader client.Reader, namespace string, tracker *queue.Tracker, runner *queue.Runner, webhook *queue.Webhook) *Sources {
	return &Sources{kube: kube, apiReader: apiReader, namespace: namespace, tracker: tracker, runner: runner, webhook: webhook}
}

// WebhookSecret is the HMAC secret deliveries must be signed with; empty rejects them all.
func (s *Sources) WebhookSecret() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookSecret
}

// Apply builds every source of cfg. A source that cannot be built (a missing Secret) is
// recorded as failing, so its pool stays unknown rather than reading as an empty queue.
func (s *Sources) Apply(ctx context.Context, cfg *config.Config) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.apply(ctx, cfg)
}

func (s *Sources) apply(ctx context.Context, cfg *config.Config) error {
	var (
		specs  []queue.PollSpec
		routes []queue.WebhookRoute
		errs   []error
	)
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		for j := range p.Queue.Sources {
			src := &p.Queue.Sources[j]
			key := queue.Key{Pool: p.Name, Source: src.Name}
			if src.GitHubWebhook != nil {
				routes = append(routes, queue.WebhookRoute{Pool: p.Name, Source: src.Name, Labels: src.GitHubWebhook.Labels})
				if src.GitHubWebhook.Resync == nil {
					continue
				}
				spec, err := s.resyncSpec(ctx, key, src.GitHubWebhook)
				if err != nil {
					// The webhook still counts; only its correction is missing.
					queue.ObserveError(queue.SourceLabel(key), queue.ReasonOf(err))
					errs = append(errs, fmt.Errorf("pool %s source %s resync: %w", p.Name, src.Name, err))
					continue
				}
				specs = append(specs, spec)
				continue
			}
			spec, err := s.pollSpec(ctx, key, src)
			if err != nil {
				s.tracker.Record(key, queue.Counts{}, err)
				queue.ObserveError(key.Pool+"/"+key.Source, queue.ReasonOf(err))
				errs = append(errs, fmt.Errorf("pool %s source %s: %w", p.Name, src.Name, err))
				continue
			}
			specs = append(specs, spec)
		}
	}
	s.runner.Set(specs)
	s.webhook.SetRoutes(routes)

	var secret []byte
	if ref := cfg.Webhook.SecretRef; ref != nil {
		v, err := s.secret(ctx, *ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook secret: %w", err))
		}
		secret = v
	}
	s.mu.Lock()
	s.webhookSecret = secret
	s.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		log.FromContext(ctx).Error(err, "some queue sources cannot run; their pools hold their size")
		return err
	}
	return nil
}

// resyncSpec runs a webhook source's REST resync in the Runner, under the source's own key.
func (s *Sources) resyncSpec(ctx context.Context, key queue.Key, w *config.GitHubWebhookSource) (queue.PollSpec, error) {
	r := w.Resync
	auth, err := s.gitHubAuth(ctx, r.TokenSecretRef, r.App)
	if err != nil {
		return queue.PollSpec{}, err
	}
	lister, err := queue.NewGitHubPoller(r.URL, r.Owner, r.Repos, w.Labels, auth)
	if err != nil {
		return queue.PollSpec{}, err
	}
	return queue.PollSpec{
		Key: key, Poller: queue.NewWebhookResync(s.webhook, key, lister, nil),
		Interval: r.Interval.Duration, SelfRecording: true,
		// The labels are part of what is listed.
		Fingerprint: queue.SpecFingerprint("resync", r, w.Labels, auth),
	}, nil
}

// gitHubAuth reads a GitHub credential: a token, or a GitHub App's private key.
func (s *Sources) gitHubAuth(ctx context.Context, token *config.SecretKeyRef, app *config.GitHubAppAuth) (queue.GitHubAuth, error) {
	if token != nil {
		tok, err := s.secret(ctx, *token)
		return queue.GitHubAuth{Token: string(tok)}, err
	}
	if app == nil {
		return queue.GitHubAuth{}, queue.Errorf(queue.ReasonConfig, "no GitHub credentials configured")
	}
	pem, err := s.secret(ctx, app.PrivateKeySecretRef)
	return queue.GitHubAuth{App: &queue.GitHubAppCredentials{AppID: app.AppID, InstallationID: app.InstallationID, PrivateKeyPEM: pem}}, err
}

func (s *Sources) pollSpec(ctx context.Context, key queue.Key, src *config.Source) (queue.PollSpec, error) {
	spec := queue.PollSpec{Key: key}
	var err error
	switch {
	case src.GitHub != nil:
		g := src.GitHub
		var auth queue.GitHubAuth
		if auth, err = s.gitHubAuth(ctx, g.TokenSecretRef, g.App); err == nil {
			spec.Poller, err = queue.NewGitHubPoller(g.URL, g.Owner, g.Repos, g.Labels, auth)
		}
		spec.Interval, spec.Fingerprint = g.PollInterval.Duration, queue.SpecFingerprint(g, auth)
	case src.GitLab != nil:
		g := src.GitLab
		tok, terr := s.secret(ctx, g.TokenSecretRef)
		if err = terr; err == nil {
			spec.Poller, err = queue.NewGitLabPoller(g.URL, string(tok), g.ProjectIDs, g.GroupID, g.Tags)
		}
		spec.Interval, spec.Fingerprint = g.PollInterval.Duration, queue.SpecFingerprint(g, string(tok))
	case src.Buildkite != nil:
		b := src.Buildkite
		tok, terr := s.secret(ctx, b.TokenSecretRef)
		if err = terr; err == nil {
			spec.Poller, err = queue.NewBuildkite(b.URL, b.Queue, string(tok), nil)
		}
		spec.Interval, spec.Fingerprint = b.PollInterval.Duration, queue.SpecFingerprint(b, string(tok))
	case src.Prometheus != nil:
		pr := src.Prometheus
		spec.Poller, err = queue.NewPrometheus(pr.URL, pr.Query, pr.State, nil)
		spec.Interval, spec.Fingerprint = pr.PollInterval.Duration, queue.SpecFingerprint(pr)
	case src.ARC != nil:
		// In-cluster objects: cheap to read, so read them often.
		spec.Poller, spec.Fingerprint = queue.NewARC(s.apiReader, src.ARC.Namespace, src.ARC.ScaleSetName), queue.SpecFingerprint(src.ARC)
	default:
		err = queue.Errorf(queue.ReasonConfig, "source %s has no kind", src.Name)
	}
	return spec, err
}

// secret reads one key of a Secret in warmpool's namespace. Credentials never come from the
// ConfigMap itself.
func (s *Sources) secret(ctx context.Context, ref config.SecretKeyRef) ([]byte, error) {
	sec := &corev1.Secret{}
	if err := s.kube.Get(ctx, types.NamespacedName{Namespace: s.namespace, Name: ref.Name}, sec); err != nil {
		return nil, queue.Errorf(queue.ReasonConfig, "reading Secret %s/%s: %v", s.namespace, ref.Name, err)
	}
	// A Secret made from a file usually ends in a newline that is not part of the credential
	// (GitHub signs with the secret as typed).
	v := bytes.TrimRight(sec.Data[ref.Key], "\r\n")
	if len(v) == 0 {
		return nil, queue.Errorf(queue.ReasonConfig, "Secret %s/%s has no key %q", s.namespace, ref.Name, ref.Key)
	}
	return v, nil
}

// RegisterSecretWatch re-applies the sources of the config in force whenever a Secret in
// warmpool's namespace that it refers to changes: a Secret created after the config (a source
// that could not start now can), or a rotated credential (pollers restart with it, the webhook
// verifies with the new secret at once). Without it either would wait for the next config edit.
func (s *Sources) RegisterSecretWatch(mgr ctrl.Manager, current func() *config.Config) error {
	referenced := predicate.NewPredicateFuncs(func(o client.Object) bool {
		cfg := current()
		return cfg != nil && o.GetNamespace() == s.namespace && secretNames(cfg).Has(o.GetName())
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("queue-secrets").
		For(&corev1.Secret{}, builder.WithPredicates(referenced)).
		Complete(reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
			s.applyMu.Lock()
			defer s.applyMu.Unlock()
			// Read inside the lock: a config put in force meanwhile has been applied already
			// or is waiting for the lock with itself, never overtaken by an older one.
			if cfg := current(); cfg != nil {
				// Failures are recorded per source and logged by apply; retrying cannot fix them.
				_ = s.apply(ctx, cfg)
			}
			return reconcile.Result{}, nil
		}))
}

// secretNames are the Secrets a config's queue sources and webhook read.
func secretNames(cfg *config.Config) sets.Set[string] {
	names := sets.New[string]()
	add := func(r *config.SecretKeyRef) {
		if r != nil {
			names.Insert(r.Name)
		}
	}
	gitHub := func(token *config.SecretKeyRef, app *config.GitHubAppAuth) {
		add(token)
		if app != nil {
			add(&app.PrivateKeySecretRef)
		}
	}
	add(cfg.Webhook.SecretRef)
	for i := range cfg.Pools {
		for _, src := range cfg.Pools[i].Queue.Sources {
			switch {
			case src.GitHubWebhook != nil && src.GitHubWebhook.Resync != nil:
				gitHub(src.GitHubWebhook.Resync.TokenSecretRef, src.GitHubWebhook.Resync.App)
			case src.GitHub != nil:
				gitHub(src.GitHub.TokenSecretRef, src.GitHub.App)
			case src.GitLab != nil:
				add(&src.GitLab.TokenSecretRef)
			case src.Buildkite != nil:
				add(&src.Buildkite.TokenSecretRef)
			}
		}
	}
	return names
}
