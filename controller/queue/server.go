package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"warmpool.io/warmpool/controller/config"
)

// WebhookServer serves the GitHub webhook endpoint. It runs on the leader only: the queue
// counts it feeds live in that replica's tracker, so a delivery to a standby would be lost.
type WebhookServer struct {
	Addr    string
	Handler http.Handler

	// Bound is closed once the listener is up; BoundAddr is then its address (tests use ":0").
	Bound     chan struct{}
	BoundAddr string

	// path is the config's webhook.path, read per request so edits apply at once.
	path atomic.Pointer[string]
}

// NewWebhookServer serves handler on addr, at config.DefaultWebhookPath until a config says
// otherwise (ConfigApplied).
func NewWebhookServer(addr string, handler http.Handler) *WebhookServer {
	s := &WebhookServer{Addr: addr, Handler: handler, Bound: make(chan struct{})}
	path := config.DefaultWebhookPath
	s.path.Store(&path)
	return s
}

// Enabled says whether Addr asks for a listener ("" or "0" disables the endpoint).
func (s *WebhookServer) Enabled() bool { return s.Addr != "" && s.Addr != "0" }

// ConfigApplied serves at the config's webhook.path from now on.
func (s *WebhookServer) ConfigApplied(_ context.Context, cfg *config.Config) {
	path := cfg.Webhook.Path
	s.path.Store(&path)
}

// NeedLeaderElection keeps the endpoint on the leader.
func (s *WebhookServer) NeedLeaderElection() bool { return true }

// Start serves until ctx ends.
func (s *WebhookServer) Start(ctx context.Context) error {
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("webhook listener on %s, %w", s.Addr, err)
	}
	s.BoundAddr = l.Addr().String()
	if s.Bound != nil {
		close(s.Bound)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != *s.path.Load() {
				http.NotFound(w, r)
				return
			}
			s.Handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
	}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook server, %w", err)
	}
	return nil
}
