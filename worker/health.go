package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/coordinator"
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/provider/anthropic"
	"github.com/llm-proxy/llm-proxy/routing/provider/azure"
	"github.com/llm-proxy/llm-proxy/store"
)

// Active health check parameters.
const (
	// unhealthyAfter consecutive failed probes mark an upstream unhealthy. One lost
	// probe (a dropped packet, a provider's brief 502 during a deploy) must not take an
	// upstream out of rotation for a whole interval, and the passive circuit breaker in
	// every worker already reacts to real failures within a few requests. One
	// successful probe marks it healthy again: traffic then tells the circuit breaker
	// at once whether the recovery is real.
	unhealthyAfter = 2
	// healthParallel bounds the probes in flight, so a gateway with many upstreams
	// does not open a burst of connections every interval.
	healthParallel = 8
	// healthBodyLimit is how much of a probe's answer is read (and discarded) so the
	// connection can be reused; a model list is a few KB.
	healthBodyLimit = 1 << 20
	// healthErrorMax bounds the error text stored per upstream.
	healthErrorMax = 300
	// disabledInterval is how often a primary with health checks disabled looks for
	// verdicts left over from when they were enabled.
	disabledInterval = time.Hour
)

// HealthChecker probes every enabled upstream with a cheap request (its model list,
// never a paid completion) and records the verdicts in the store, fenced on the
// primary's lease epoch. Workers read them through the 'health' change counter, which
// moves only when an upstream's verdict flips, so a steady state costs them nothing.
// It is a primary-only duty: run it through Task.
type HealthChecker struct {
	st      *store.Store
	logger  hclog.Logger
	client  *http.Client
	enabled bool
	// interval between rounds and timeout of one probe (including reading its body).
	interval time.Duration
	timeout  time.Duration
	// now stamps checked_at; tests replace it.
	now func() time.Time
}

// NewHealthChecker returns a checker configured by cfg's HEALTH_CHECK_* settings.
// logger may be nil.
func NewHealthChecker(st *store.Store, cfg routing.Config, logger hclog.Logger) *HealthChecker {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	dialer := &net.Dialer{Timeout: time.Duration(cfg.HealthCheckTimeout) * time.Second, KeepAlive: 30 * time.Second}
	return &HealthChecker{
		st:       st,
		logger:   logger.Named("health"),
		enabled:  cfg.HealthCheckEnabled,
		interval: time.Duration(cfg.HealthCheckInterval) * time.Second,
		timeout:  time.Duration(cfg.HealthCheckTimeout) * time.Second,
		now:      time.Now,
		client: &http.Client{
			// Its own small pool: probes are rare, and keeping them apart from the data
			// path means a probe never waits behind (or takes) a request's connection.
			// No proxy from the environment: probes take the path requests take.
			Transport: &http.Transport{
				DialContext:         dialer.DialContext,
				ForceAttemptHTTP2:   true,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     2 * time.Duration(max(cfg.HealthCheckInterval, 1)) * time.Second,
				TLSHandshakeTimeout: time.Duration(cfg.HealthCheckTimeout) * time.Second,
				DisableCompression:  true,
			},
			// A redirect would carry the provider key to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Task is the coordinator duty: a round of probes at once on gaining the lease and
// then every HEALTH_CHECK_INTERVAL. With health checks disabled it only resets, once
// an hour, verdicts that an earlier enabled run left unhealthy — otherwise an
// upstream marked down before the operator turned checks off would stay down.
func (h *HealthChecker) Task() coordinator.Task {
	if !h.enabled {
		return coordinator.Task{Name: "health", Interval: disabledInterval, Run: h.ClearVerdicts}
	}
	return coordinator.Task{Name: "health", Interval: h.interval, Run: h.CheckAll}
}

// CheckAll probes every enabled upstream once, in parallel (at most healthParallel at
// a time), and records each result fenced on epoch. A round cut short by ctx (the
// lease was lost) records nothing. An error wrapping store.ErrFenced means another
// worker is primary now.
func (h *HealthChecker) CheckAll(ctx context.Context, epoch int64) error {
	ups, err := h.st.ListUpstreams(ctx)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	// The previous verdicts carry the consecutive-failure counts, so a new primary
	// continues the count where the old one left it.
	prev, err := h.st.UpstreamHealths(ctx)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	var targets []store.Upstream
	for _, u := range ups {
		if u.Enabled {
			targets = append(targets, u)
		}
	}
	results := make([]store.UpstreamHealth, len(targets))
	sem := make(chan struct{}, healthParallel)
	var wg sync.WaitGroup
	for i, u := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			results[i] = h.check(ctx, u, prev[u.ID])
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	var errs []error
	for i, r := range results {
		if err := h.st.RecordHealth(ctx, epoch, r); err != nil {
			if errors.Is(err, store.ErrFenced) {
				return fmt.Errorf("health: %w", err)
			}
			errs = append(errs, err)
			continue
		}
		h.logTransition(targets[i].Name, prev[r.UpstreamID], r)
	}
	if len(errs) > 0 {
		return fmt.Errorf("health: %w", errors.Join(errs...))
	}
	return nil
}

// check probes one upstream and returns its new verdict given the previous one
// (zero when it was never probed).
func (h *HealthChecker) check(ctx context.Context, u store.Upstream, prev store.UpstreamHealth) store.UpstreamHealth {
	start := time.Now()
	perr := h.probe(ctx, u)
	r := store.UpstreamHealth{
		UpstreamID: u.ID,
		CheckedAt:  h.now(),
		Latency:    time.Since(start),
	}
	if perr == nil {
		r.Healthy = true
		return r
	}
	r.Failures = prev.Failures + 1
	r.Healthy = r.Failures < unhealthyAfter
	r.Error = perr.Error()
	if len(r.Error) > healthErrorMax {
		r.Error = r.Error[:healthErrorMax]
	}
	h.logger.Debug("probe failed", "upstream", u.Name, "failures", r.Failures, "error", r.Error)
	return r
}

// probe sends the provider's model-list request; nil means a 2xx answer.
func (h *HealthChecker) probe(ctx context.Context, u store.Upstream) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := probeRequest(ctx, u)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("GET %s: no answer within %s", req.URL.Path, h.timeout)
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is known; keep the cause
		}
		return fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	defer resp.Body.Close()
	// Read the answer so the connection is reused for the next probe.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, healthBodyLimit))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: status %d", req.URL.Path, resp.StatusCode)
	}
	return nil
}

// probeRequest builds the model-list request of u's provider, authenticated the way
// its completions are. Listing models is free with every provider and proves the
// endpoint answers and the key is accepted.
func probeRequest(ctx context.Context, u store.Upstream) (*http.Request, error) {
	base := strings.TrimRight(u.BaseURL, "/")
	var target string
	hdr := http.Header{"User-Agent": {"llm-proxy-health"}, "Accept": {"application/json"}}
	switch u.Provider {
	case "azure":
		// The base is the resource endpoint; its model list is versioned like every
		// other data-plane call.
		target = base + "/openai/models?api-version=" + url.QueryEscape(azure.DefaultAPIVersion)
		if u.APIKey != "" {
			hdr.Set("api-key", u.APIKey)
		}
	case "anthropic":
		target = base + "/models"
		hdr.Set("anthropic-version", anthropic.Version)
		if u.APIKey != "" {
			hdr.Set("x-api-key", u.APIKey)
		}
	case "gemini":
		target = base + "/models"
		if u.APIKey != "" {
			hdr.Set("x-goog-api-key", u.APIKey)
		}
	default: // "openai" and every OpenAI-compatible server
		target = base + "/models"
		if u.APIKey != "" {
			hdr.Set("Authorization", "Bearer "+u.APIKey)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", u.Name, err)
	}
	req.Header = hdr
	return req, nil
}

func (h *HealthChecker) logTransition(name string, prev, cur store.UpstreamHealth) {
	wasHealthy := prev.UpstreamID == 0 || prev.Healthy
	switch {
	case wasHealthy && !cur.Healthy:
		h.logger.Warn("upstream marked unhealthy", "upstream", name, "failures", cur.Failures, "error", cur.Error)
	case !wasHealthy && cur.Healthy:
		h.logger.Info("upstream healthy again", "upstream", name, "latency", cur.Latency)
	}
}

// ClearVerdicts marks healthy, fenced on epoch, every upstream whose last recorded
// verdict is unhealthy. It is the whole duty when health checks are disabled.
func (h *HealthChecker) ClearVerdicts(ctx context.Context, epoch int64) error {
	prev, err := h.st.UpstreamHealths(ctx)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	for id, p := range prev {
		if p.Healthy {
			continue
		}
		err := h.st.RecordHealth(ctx, epoch, store.UpstreamHealth{
			UpstreamID: id, Healthy: true, CheckedAt: h.now(), Error: "health checks disabled",
		})
		if err != nil {
			return fmt.Errorf("health: %w", err)
		}
		h.logger.Info("health checks are disabled: upstream no longer marked unhealthy", "upstream_id", id)
	}
	return nil
}
