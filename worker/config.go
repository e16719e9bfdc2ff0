package worker

import (
	"fmt"
	"time"

	"github.com/llm-proxy/llm-proxy/worker/upstream"
)

// Config holds the worker's HTTP and upstream settings.
type Config struct {
	MaxBodyBytes int `envconfig:"MAX_BODY_BYTES" default:"33554432" desc:"largest accepted request body in bytes (default 32 MiB); larger bodies get 413"`
	// Upstream holds the upstream client's settings (UPSTREAM_TIMEOUT, UPSTREAM_CONNECT_TIMEOUT, ...).
	upstream.Config
	FirstByteTimeout   time.Duration `envconfig:"FIRST_BYTE_TIMEOUT" default:"300s" desc:"a stream whose first bytes take longer fails over to another deployment"`
	StreamIdleTimeout  time.Duration `envconfig:"STREAM_IDLE_TIMEOUT" default:"120s" desc:"a stream silent this long is ended with an SSE error event and [DONE]"`
	RequestTimeout     time.Duration `envconfig:"REQUEST_TIMEOUT" default:"600s" desc:"bound on one request's attempt chain (every retry and fallback) until an answer starts; a stream that has started is not cut by it"`
	ReadTimeout        time.Duration `envconfig:"READ_TIMEOUT" default:"60s" desc:"time allowed to read one client request (headers and body)"`
	IdleTimeout        time.Duration `envconfig:"IDLE_TIMEOUT" default:"120s" desc:"keep-alive connections idle longer than this are closed"`
	MaxHeaderBytes     int           `envconfig:"MAX_HEADER_BYTES" default:"16384" desc:"largest accepted request header block in bytes; larger ones get 431"`
	MaxConnsPerIP      int           `envconfig:"MAX_CONNS_PER_IP" default:"0" desc:"open client connections allowed per client IP, per worker process (0: unlimited)"`
	DefaultRPM         int64         `envconfig:"DEFAULT_RPM" default:"0" desc:"requests per minute allowed to a key that sets none (0: unlimited)"`
	DefaultTPM         int64         `envconfig:"DEFAULT_TPM" default:"0" desc:"tokens per minute allowed to a key that sets none (0: unlimited)"`
	DefaultMaxParallel int64         `envconfig:"DEFAULT_MAX_PARALLEL" default:"0" desc:"requests in flight allowed to a key that sets none (0: unlimited)"`
	RetryBudgetPercent int           `envconfig:"RETRY_BUDGET_PERCENT" default:"20" desc:"retries allowed per worker, as a percentage of its requests over 10 s"`
	RetryBudgetMin     int           `envconfig:"RETRY_BUDGET_MIN" default:"3" desc:"retries always allowed per worker per 10 s, whatever the percentage"`
	PprofAddr          string        `envconfig:"PPROF_ADDR" default:"" desc:"if set (loopback host:port), each worker serves net/http/pprof at port + its slot number; off by default"`
	ShutdownTimeout    time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"on SIGTERM, how long in-flight requests and open streams may take to finish"`
	// TraceConfig: OpenTelemetry export (OTEL_ENDPOINT, ...), off by default (tracing.go).
	TraceConfig
	// BodyLogConfig: request body logging (LOG_BODIES, LOG_BODY_MAX_BYTES), off by default (bodylog.go).
	BodyLogConfig
}

// Validate reports the first invalid field, naming its environment variable.
func (c Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.RetryBudgetPercent < 0 || c.RetryBudgetPercent > 100 {
		return fmt.Errorf("LLM_PROXY_RETRY_BUDGET_PERCENT=%d is invalid: must be from 0 to 100", c.RetryBudgetPercent)
	}
	if c.RetryBudgetMin < 0 {
		return fmt.Errorf("LLM_PROXY_RETRY_BUDGET_MIN=%d is invalid: must be 0 or more", c.RetryBudgetMin)
	}
	if c.LogBodyMaxBytes < 0 {
		return fmt.Errorf("LLM_PROXY_LOG_BODY_MAX_BYTES=%d is invalid: must be 0 or more", c.LogBodyMaxBytes)
	}
	if c.OTelSampleRatio < 0 || c.OTelSampleRatio > 1 {
		return fmt.Errorf("LLM_PROXY_OTEL_SAMPLE_RATIO=%v is invalid: must be from 0 to 1", c.OTelSampleRatio)
	}
	if c.MaxHeaderBytes < 1024 {
		return fmt.Errorf("LLM_PROXY_MAX_HEADER_BYTES=%d is invalid: must be at least 1024", c.MaxHeaderBytes)
	}
	if c.MaxConnsPerIP < 0 {
		return fmt.Errorf("LLM_PROXY_MAX_CONNS_PER_IP=%d is invalid: must be 0 (unlimited) or more", c.MaxConnsPerIP)
	}
	if c.MaxBodyBytes < 1024 {
		return fmt.Errorf("LLM_PROXY_MAX_BODY_BYTES=%d is invalid: must be at least 1024", c.MaxBodyBytes)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"UPSTREAM_TIMEOUT", c.ResponseHeaderTimeout},
		{"UPSTREAM_CONNECT_TIMEOUT", c.ConnectTimeout},
		{"FIRST_BYTE_TIMEOUT", c.FirstByteTimeout},
		{"STREAM_IDLE_TIMEOUT", c.StreamIdleTimeout},
		{"REQUEST_TIMEOUT", c.RequestTimeout},
		{"READ_TIMEOUT", c.ReadTimeout},
		{"IDLE_TIMEOUT", c.IdleTimeout},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("LLM_PROXY_%s=%s is invalid: must be a positive duration such as 30s", d.name, d.v)
		}
	}
	return nil
}
