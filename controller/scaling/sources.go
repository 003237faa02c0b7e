package scaling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

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

func (s *Sources) pollSpec(ctx context.Context, key queue.Key, src *config.Source) (queue.PollSpec, error) {
	spec := queue.PollSpec{Key: key}
	var err error
	switch {
	case src.GitHub != nil:
		g := src.GitHub
		auth := queue.GitHubAuth{}
		if g.TokenSecretRef != nil {
			tok, terr := s.secret(ctx, *g.TokenSecretRef)
			auth.Token, err = string(tok), terr
		} else {
			pem, perr := s.secret(ctx, g.App.PrivateKeySecretRef)
			auth.App, err = &queue.GitHubAppCredentials{AppID: g.App.AppID, InstallationID: g.App.InstallationID, PrivateKeyPEM: pem}, perr
		}
		if err == nil {
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
