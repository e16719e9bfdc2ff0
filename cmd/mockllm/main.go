package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kelseyhightower/envconfig"
)

// config is mockllm's configuration. Every field can be set by an
// environment variable (MOCKLLM_<envconfig name>) or by the flag of the same
// name in lower case with dashes (CHUNK_DELAY → --chunk-delay); flags win.
type config struct {
	Addr         string        `envconfig:"ADDR" default:"127.0.0.1:9000" desc:"listen address; port 0 picks a free port (the listening line shows it)"`
	Chunks       int           `envconfig:"CHUNKS" default:"10" desc:"content chunks per streamed answer (at most one per word of the reply)"`
	ChunkDelay   time.Duration `envconfig:"CHUNK_DELAY" default:"0s" desc:"pause between streamed content chunks"`
	Latency      time.Duration `envconfig:"LATENCY" default:"0s" desc:"pause before every /v1 response"`
	Reply        string        `envconfig:"REPLY" default:"This is a mock answer from mockllm for your request." desc:"the answer to every completion"`
	EmbeddingDim int           `envconfig:"EMBEDDING_DIM" default:"16" desc:"embedding length when the request has no dimensions"`
	Record       int           `envconfig:"RECORD" default:"1000" desc:"requests kept for GET /debug/requests (0 disables recording)"`
	LogRequests  bool          `envconfig:"LOG_REQUESTS" default:"false" desc:"log one line per request to stderr"`

	// Logger receives request logs; nil discards them.
	Logger hclog.Logger `ignored:"true"`
}

func (c config) validate() error {
	switch {
	case c.Chunks < 1:
		return fmt.Errorf("mockllm: chunks must be at least 1, got %d", c.Chunks)
	case c.ChunkDelay < 0 || c.Latency < 0:
		return errors.New("mockllm: chunk-delay and latency must not be negative")
	case c.EmbeddingDim < 1 || c.EmbeddingDim > maxDims:
		return fmt.Errorf("mockllm: embedding-dim must be in [1, %d], got %d", maxDims, c.EmbeddingDim)
	case c.Record < 0:
		return fmt.Errorf("mockllm: record must not be negative, got %d", c.Record)
	}
	return nil
}

// parseConfig reads the environment, then args. Flags are generated from the
// struct tags so the two spellings can never drift apart.
func parseConfig(args []string, output io.Writer) (config, error) {
	var cfg config
	if err := envconfig.Process("MOCKLLM", &cfg); err != nil {
		return cfg, fmt.Errorf("mockllm: environment: %w", err)
	}
	fs := flag.NewFlagSet("mockllm", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprintf(output, "Usage: mockllm [flags]\n\nAn OpenAI-compatible fake LLM upstream. See `go doc ./cmd/mockllm` for faults and debug endpoints.\n\nFlags (environment variable in brackets):\n")
		fs.PrintDefaults()
	}
	v := reflect.ValueOf(&cfg).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		env := f.Tag.Get("envconfig")
		if env == "" {
			continue
		}
		name := strings.ReplaceAll(strings.ToLower(env), "_", "-")
		usage := f.Tag.Get("desc") + " [MOCKLLM_" + env + "]"
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *bool:
			fs.BoolVar(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		default:
			return cfg, fmt.Errorf("mockllm: config field %s has no flag type", f.Name)
		}
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("mockllm: unexpected argument %q", fs.Arg(0))
	}
	return cfg, cfg.validate()
}

// shutdownTimeout bounds how long SIGTERM waits for in-flight answers (slow
// streams); requests in the hang fault are ended at once.
const shutdownTimeout = 5 * time.Second

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "mockllm", Output: stderr, Level: hclog.Info})
	cfg.Logger = logger

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("mockllm: listen: %w", err)
	}
	s := newServer(cfg)
	srv := &http.Server{
		Handler: s,
		// No write timeout: slow streams are the point of this server.
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// Tests and scripts wait for this exact line.
	fmt.Fprintf(stdout, "mockllm listening on %s\n", ln.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("mockllm: serve: %w", err)
	case <-ctx.Done():
	}
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close() // deadline passed: drop the remaining connections
	}
	<-errc
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
