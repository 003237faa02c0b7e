package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

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
	"warmpool.io/warmpool/controller/state"
)

// Sources turns a config's queue sources into running pollers and webhook routes. It follows
// the config in force (ConfigApplied) and the Secrets it names (Register); the runner keeps a
// poller whose settings and credential did not change, so ETag caches and rate-limit state
// survive unrelated edits. It owns the GitHub webhook handler, whose secret it reads.
type Sources struct {
	kube      client.Reader // Secrets in warmpool's namespace (cached)
	apiReader client.Reader // ARC objects, read uncached so no watch starts on types that may not exist
	cluster   *state.Cluster
	namespace string
	tracker   *Tracker
	runner    *Runner
	webhook   *Webhook

	// applyMu serializes Apply: a config change and a Secret change may both re-apply.
	applyMu sync.Mutex

	mu            sync.Mutex
	webhookSecret []byte
}

// NewSources wires sources into runner and a new webhook handler (see Webhook), which verifies
// deliveries with the secret the config in force names.
func NewSources(kube, apiReader client.Reader, cluster *state.Cluster, namespace string, tracker *Tracker, runner *Runner, clk clock.PassiveClock, log logr.Logger) *Sources {
	s := &Sources{kube: kube, apiReader: apiReader, cluster: cluster, namespace: namespace, tracker: tracker, runner: runner}
	s.webhook = NewWebhook(s.WebhookSecret, tracker, clk, log)
	s.webhook.OnError = ObserveError
	return s
}

// Webhook is the GitHub webhook handler the sources route deliveries through.
func (s *Sources) Webhook() *Webhook { return s.webhook }

// WebhookSecret is the HMAC secret deliveries must be signed with; empty rejects them all.
func (s *Sources) WebhookSecret() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookSecret
}

// ConfigApplied declares each pool's sources to the tracker and builds them. Errors are
// recorded per source (their pools stay unknown) and logged by Apply.
func (s *Sources) ConfigApplied(ctx context.Context, cfg *config.Config) {
	s.tracker.SetSources(sourceNames(cfg))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = s.Apply(ctx, cfg)
}

// sourceNames lists each pool's queue sources, for the tracker.
func sourceNames(cfg *config.Config) map[string][]string {
	out := make(map[string][]string, len(cfg.Pools))
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		names := make([]string, 0, len(p.Queue.Sources))
		for _, s := range p.Queue.Sources {
			names = append(names, s.Name)
		}
		out[p.Name] = names
	}
	return out
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
		specs  []PollSpec
		routes []WebhookRoute
		errs   []error
	)
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		for j := range p.Queue.Sources {
			src := &p.Queue.Sources[j]
			key := Key{Pool: p.Name, Source: src.Name}
			if src.GitHubWebhook != nil {
				routes = append(routes, WebhookRoute{Pool: p.Name, Source: src.Name, Labels: src.GitHubWebhook.Labels})
				if src.GitHubWebhook.Resync == nil {
					continue
				}
				spec, err := s.resyncSpec(ctx, key, src.GitHubWebhook)
				if err != nil {
					// The webhook still counts; only its correction is missing.
					ObserveError(SourceLabel(key), ReasonOf(err))
					errs = append(errs, fmt.Errorf("pool %s source %s resync: %w", p.Name, src.Name, err))
					continue
				}
				specs = append(specs, spec)
				continue
			}
			spec, err := s.pollSpec(ctx, key, src)
			if err != nil {
				s.tracker.Record(key, Counts{}, err)
				ObserveError(SourceLabel(key), ReasonOf(err))
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
func (s *Sources) resyncSpec(ctx context.Context, key Key, w *config.GitHubWebhookSource) (PollSpec, error) {
	r := w.Resync
	auth, err := s.gitHubAuth(ctx, r.TokenSecretRef, r.App)
	if err != nil {
		return PollSpec{}, err
	}
	lister, err := NewGitHubPoller(r.URL, r.Owner, r.Repos, w.Labels, auth)
	if err != nil {
		return PollSpec{}, err
	}
	return PollSpec{
		Key: key, Poller: NewWebhookResync(s.webhook, key, lister, nil),
		Interval: r.Interval.Duration, SelfRecording: true,
		// The labels are part of what is listed.
		Fingerprint: SpecFingerprint("resync", r, w.Labels, auth),
	}, nil
}

// gitHubAuth reads a GitHub credential: a token, or a GitHub App's private key.
func (s *Sources) gitHubAuth(ctx context.Context, token *config.SecretKeyRef, app *config.GitHubAppAuth) (GitHubAuth, error) {
	if token != nil {
		tok, err := s.secret(ctx, *token)
		return GitHubAuth{Token: string(tok)}, err
	}
	if app == nil {
		return GitHubAuth{}, Errorf(ReasonConfig, "no GitHub credentials configured")
	}
	pem, err := s.secret(ctx, app.PrivateKeySecretRef)
	return GitHubAuth{App: &GitHubAppCredentials{AppID: app.AppID, InstallationID: app.InstallationID, PrivateKeyPEM: pem}}, err
}

func (s *Sources) pollSpec(ctx context.Context, key Key, src *config.Source) (PollSpec, error) {
	spec := PollSpec{Key: key}
	var err error
	switch {
	case src.GitHub != nil:
		g := src.GitHub
		var auth GitHubAuth
		if auth, err = s.gitHubAuth(ctx, g.TokenSecretRef, g.App); err == nil {
			spec.Poller, err = NewGitHubPoller(g.URL, g.Owner, g.Repos, g.Labels, auth)
		}
		spec.Interval, spec.Fingerprint = g.PollInterval.Duration, SpecFingerprint(g, auth)
	case src.GitLab != nil:
		g := src.GitLab
		tok, terr := s.secret(ctx, g.TokenSecretRef)
		if err = terr; err == nil {
			spec.Poller, err = NewGitLabPoller(g.URL, string(tok), g.ProjectIDs, g.GroupID, g.Tags)
		}
		spec.Interval, spec.Fingerprint = g.PollInterval.Duration, SpecFingerprint(g, string(tok))
	case src.Buildkite != nil:
		b := src.Buildkite
		tok, terr := s.secret(ctx, b.TokenSecretRef)
		if err = terr; err == nil {
			spec.Poller, err = NewBuildkite(b.URL, b.Queue, string(tok), nil)
		}
		spec.Interval, spec.Fingerprint = b.PollInterval.Duration, SpecFingerprint(b, string(tok))
	case src.Prometheus != nil:
		pr := src.Prometheus
		spec.Poller, err = NewPrometheus(pr.URL, pr.Query, pr.State, nil)
		spec.Interval, spec.Fingerprint = pr.PollInterval.Duration, SpecFingerprint(pr)
	case src.ARC != nil:
		// In-cluster objects: cheap to read, so read them often.
		spec.Poller, spec.Fingerprint = NewARC(s.apiReader, src.ARC.Namespace, src.ARC.ScaleSetName), SpecFingerprint(src.ARC)
	default:
		err = Errorf(ReasonConfig, "source %s has no kind", src.Name)
	}
	return spec, err
}

// secret reads one key of a Secret in warmpool's namespace. Credentials never come from the
// ConfigMap itself.
func (s *Sources) secret(ctx context.Context, ref config.SecretKeyRef) ([]byte, error) {
	sec := &corev1.Secret{}
	if err := s.kube.Get(ctx, types.NamespacedName{Namespace: s.namespace, Name: ref.Name}, sec); err != nil {
		return nil, Errorf(ReasonConfig, "reading Secret %s/%s: %v", s.namespace, ref.Name, err)
	}
	// A Secret made from a file usually ends in a newline that is not part of the credential
	// (GitHub signs with the secret as typed).
	v := bytes.TrimRight(sec.Data[ref.Key], "\r\n")
	if len(v) == 0 {
		return nil, Errorf(ReasonConfig, "Secret %s/%s has no key %q", s.namespace, ref.Name, ref.Key)
	}
	return v, nil
}

// Register watches the Secrets of warmpool's namespace and re-applies the sources of the config
// in force whenever one it refers to changes: a Secret created after the config (a source that
// could not start now can), or a rotated credential (pollers restart with it, the webhook
// verifies with the new secret at once). Without it either would wait for the next config edit.
func (s *Sources) Register(_ context.Context, mgr ctrl.Manager) error {
	referenced := predicate.NewPredicateFuncs(func(o client.Object) bool {
		cfg := s.cluster.Config()
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
			if cfg := s.cluster.Config(); cfg != nil {
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
