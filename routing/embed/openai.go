package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// OpenAIConfig configures an OpenAI-compatible embeddings client (OpenAI, Ollama,
// text-embeddings-inference, vLLM, or one of the gateway's own upstreams).
type OpenAIConfig struct {
	// BaseURL is the API root that /embeddings is appended to, e.g. "http://127.0.0.1:11434/v1".
	BaseURL string
	// APIKey is sent as a Bearer token; empty sends no Authorization header.
	APIKey string
	// Model is the embedding model name sent in every request.
	Model string
	// Dim is the expected vector length; 0 learns it from the first answer. A mismatch is
	// an error, never a silently truncated vector.
	Dim int
	// Threshold is the cosine for a semantic hit with this model; 0 means 0.92, a
	// conservative starting point for neural embedders (measure with your own data).
	Threshold float32
	// Timeout bounds one request when ctx has no earlier deadline; 0 means 10 s.
	Timeout time.Duration
	// Client is the HTTP client; nil uses a dedicated client with keep-alives.
	Client *http.Client
}

// OpenAIClient calls POST {BaseURL}/embeddings. It is safe for concurrent use.
type OpenAIClient struct {
	cfg    OpenAIConfig
	url    string
	client *http.Client
	dim    atomic.Int64
}

var _ Embedder = (*OpenAIClient)(nil)

// NewOpenAIClient validates cfg and returns a client. It does no I/O.
func NewOpenAIClient(cfg OpenAIConfig) (*OpenAIClient, error) {
	if !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("embed: base URL %q must start with http:// or https://", cfg.BaseURL)
	}
	if cfg.Model == "" {
		return nil, errors.New("embed: model is empty")
	}
	if cfg.Dim < 0 {
		return nil, fmt.Errorf("embed: dim must not be negative, got %d", cfg.Dim)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = 0.92
	}
	c := &OpenAIClient{cfg: cfg, url: strings.TrimRight(cfg.BaseURL, "/") + "/embeddings", client: cfg.Client}
	if c.client == nil {
		c.client = &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
			ForceAttemptHTTP2: true,
		}}
	}
	c.dim.Store(int64(cfg.Dim))
	return c, nil
}

// ID is "openai:<model>": the same model behind two servers gives the same vectors.
func (c *OpenAIClient) ID() string { return "openai:" + c.cfg.Model }

// Dim returns the configured or learned dimension (0 before the first answer if unconfigured).
func (c *OpenAIClient) Dim() int { return int(c.dim.Load()) }

// DefaultThreshold returns the configured threshold.
func (c *OpenAIClient) DefaultThreshold() float32 { return c.cfg.Threshold }

type embeddingsRequest struct {
	Model          string `json:"model"`
	Input          string `json:"input"`
	EncodingFormat string `json:"encoding_format"`
}

type embeddingsResponse struct {
	Data []struct {
		Embedding []float32 `json:"embedding"`
		Index     int       `json:"index"`
	} `json:"data"`
}

// maxErrorBody bounds how much of an error answer is quoted in the returned error.
const maxErrorBody = 512

// Embed sends text, checks the dimension, and returns the L2-normalised vector in dst.
func (c *OpenAIClient) Embed(ctx context.Context, text string, dst []float32) ([]float32, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	payload, err := json.Marshal(embeddingsRequest{Model: c.cfg.Model, Input: text, EncodingFormat: "float"})
	if err != nil {
		return nil, fmt.Errorf("embed: encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("embed: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("embed: %s: %w", c.ID(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, fmt.Errorf("embed: %s: status %d: %s", c.ID(), resp.StatusCode, bytes.TrimSpace(msg))
	}
	var out embeddingsResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("embed: %s: decode answer: %w", c.ID(), err)
	}
	if len(out.Data) != 1 || len(out.Data[0].Embedding) == 0 {
		return nil, fmt.Errorf("embed: %s: answer has %d embeddings, want 1", c.ID(), len(out.Data))
	}
	v := out.Data[0].Embedding
	want := int(c.dim.Load())
	if want == 0 {
		c.dim.CompareAndSwap(0, int64(len(v)))
		want = int(c.dim.Load())
	}
	if len(v) != want {
		return nil, fmt.Errorf("embed: %s: answer has dimension %d, want %d", c.ID(), len(v), want)
	}
	dst = append(dst[:0], v...)
	Normalize(dst)
	return dst, nil
}
