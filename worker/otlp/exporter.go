package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of ExporterOptions' zero fields; the batch and queue sizes and the
// timeout are those of the OpenTelemetry SDK's batch span processor and exporter.
const (
	DefaultBatchTimeout = 5 * time.Second
	DefaultMaxBatch     = 512
	DefaultQueueSize    = 2048
	DefaultTimeout      = 10 * time.Second
)

// maxTries bounds the POSTs of one batch: a collector that restarts or sheds load
// (429, 502, 503, 504, or no connection) gets two more chances.
const maxTries = 3

// retryBackoff is the wait before the second try; it doubles for the third.
const retryBackoff = 500 * time.Millisecond

// ExporterOptions configure an Exporter; the zero value of each field means its default.
type ExporterOptions struct {
	// URL is the collector's traces endpoint, e.g. http://127.0.0.1:4318/v1/traces.
	URL string
	// BatchTimeout is the longest a finished span waits before it is sent
	// (default DefaultBatchTimeout).
	BatchTimeout time.Duration
	// MaxBatch is the most spans in one request (default DefaultMaxBatch).
	MaxBatch int
	// QueueSize is the most finished spans waiting to be sent; spans finished
	// while it is full are dropped and counted (default DefaultQueueSize).
	QueueSize int
	// Timeout bounds one POST to the collector (default DefaultTimeout).
	Timeout time.Duration
	// Gzip compresses request bodies (Content-Encoding: gzip).
	Gzip bool
	// Headers are sent with every export (a collector's API key, for example).
	Headers map[string]string
	// OnError, when set, learns of each batch that could not be delivered. It is
	// called from the export goroutine and must not block long.
	OnError func(error)
}

// Stats count what became of the spans handed to an Exporter.
type Stats struct {
	Exported uint64 // accepted by the collector
	Dropped  uint64 // not queued: the queue was full or the exporter shut down
	Failed   uint64 // in batches the collector did not accept
}

// Exporter batches finished spans and POSTs them to an OTLP/HTTP collector from
// one goroutine, so that finishing a span never waits on the network. The
// goroutine starts with the first span; Shutdown sends what is queued and stops it.
type Exporter struct {
	opts   ExporterOptions
	src    Source
	client *http.Client

	queue    chan *Span
	pool     sync.Pool
	start    sync.Once
	stop     chan struct{} // closed by Shutdown
	stopOnce sync.Once
	done     chan struct{} // closed when the export goroutine returned
	// ctx is the parent of every POST; cancel aborts them when Shutdown's own
	// deadline passes.
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	// backoff is retryBackoff; tests shorten it.
	backoff time.Duration

	exported, dropped, failed atomic.Uint64

	// Owned by the export goroutine.
	batch   []*Span
	buf     []byte
	zbuf    bytes.Buffer
	zw      *gzip.Writer
	lastErr error // the last failure; read by Shutdown after done is closed
}

// NewExporter returns an exporter of spans from src to the collector at opts.URL.
func NewExporter(opts ExporterOptions, src Source) *Exporter {
	if opts.BatchTimeout <= 0 {
		opts.BatchTimeout = DefaultBatchTimeout
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Exporter{
		opts:    opts,
		src:     src,
		client:  &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		queue:   make(chan *Span, opts.QueueSize),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		backoff: retryBackoff,
	}
	e.pool.New = func() any { return &Span{} }
	return e
}

// NewSpan returns an empty span that Finish hands back to e.
func (e *Exporter) NewSpan() *Span {
	s := e.pool.Get().(*Span)
	s.exp = e
	return s
}

// Stats reports the exporter's counters so far.
func (e *Exporter) Stats() Stats {
	return Stats{Exported: e.exported.Load(), Dropped: e.dropped.Load(), Failed: e.failed.Load()}
}

// enqueue queues a finished span, or drops it when the queue is full: the request
// path must never wait for a slow collector.
func (e *Exporter) enqueue(s *Span) {
	if e.closed.Load() {
		e.drop(s)
		return
	}
	e.start.Do(e.launch)
	select {
	case e.queue <- s:
	default:
		e.drop(s)
	}
}

func (e *Exporter) drop(s *Span) {
	e.dropped.Add(1)
	e.release(s)
}

// release resets s and returns it to the pool, keeping its attribute slice.
func (e *Exporter) release(s *Span) {
	clear(s.Attrs) // let the strings go
	*s = Span{Attrs: s.Attrs[:0]}
	e.pool.Put(s)
}

func (e *Exporter) launch() { go e.run() }

// Shutdown sends the queued spans and stops the export goroutine. When ctx ends
// first the POST in flight is abandoned and ctx's error returned; otherwise the
// error is the last failed delivery, if any, of the exporter's lifetime.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.closed.Store(true)
	e.start.Do(e.launch)
	e.stopOnce.Do(func() { close(e.stop) })
	defer e.client.CloseIdleConnections()
	select {
	case <-e.done:
	case <-ctx.Done():
		e.cancel()
		<-e.done
		return fmt.Errorf("otlp: shutdown: %w", ctx.Err())
	}
	e.cancel()
	return e.lastErr
}

// run collects spans into batches: a batch goes out when it is full or when its
// first span has waited BatchTimeout.
func (e *Exporter) run() {
	defer close(e.done)
	e.batch = make([]*Span, 0, min(e.opts.MaxBatch, 64))
	timer := time.NewTimer(e.opts.BatchTimeout)
	timer.Stop()
	defer timer.Stop()
	add := func(s *Span) {
		e.batch = append(e.batch, s)
		if len(e.batch) >= e.opts.MaxBatch {
			timer.Stop()
			e.flush()
		} else if len(e.batch) == 1 {
			timer.Reset(e.opts.BatchTimeout)
		}
	}
	for {
		select {
		case s := <-e.queue:
			add(s)
		case <-timer.C:
			e.flush()
		case <-e.stop:
			for {
				select {
				case s := <-e.queue:
					add(s)
				default:
					e.flush()
					return
				}
			}
		}
	}
}

// flush sends the batch and returns its spans to the pool.
func (e *Exporter) flush() {
	if len(e.batch) == 0 {
		return
	}
	n := uint64(len(e.batch))
	if err := e.send(); err != nil {
		e.failed.Add(n)
		e.lastErr = err
		if e.opts.OnError != nil {
			e.opts.OnError(err)
		}
	} else {
		e.exported.Add(n)
	}
	for i, s := range e.batch {
		e.release(s)
		e.batch[i] = nil
	}
	e.batch = e.batch[:0]
}

// send encodes the batch and POSTs it, retrying what a collector answers when it
// is briefly unable to take data.
func (e *Exporter) send() error {
	e.buf = AppendExportRequest(e.buf[:0], e.src, e.batch)
	body := e.buf
	if e.opts.Gzip {
		e.zbuf.Reset()
		if e.zw == nil {
			e.zw = gzip.NewWriter(&e.zbuf)
		} else {
			e.zw.Reset(&e.zbuf)
		}
		if _, err := e.zw.Write(body); err != nil {
			return fmt.Errorf("otlp: compress: %w", err)
		}
		if err := e.zw.Close(); err != nil {
			return fmt.Errorf("otlp: compress: %w", err)
		}
		body = e.zbuf.Bytes()
	}
	if cap(e.buf) > 4<<20 {
		e.buf = nil // do not keep one huge batch's buffer forever
	}
	wait := e.backoff
	var err error
	for try := 1; ; try++ {
		var retry bool
		retry, err = e.post(body)
		if err == nil || !retry || try == maxTries {
			return err
		}
		select {
		case <-time.After(wait):
		case <-e.ctx.Done():
			return err
		}
		wait *= 2
	}
}

// post makes one export request; retry says whether another might succeed.
func (e *Exporter) post(body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.opts.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("otlp: export: %w", err)
	}
	for k, v := range e.opts.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if e.opts.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return !errors.Is(e.ctx.Err(), context.Canceled), fmt.Errorf("otlp: export: %w", err)
	}
	// Drain a little so the connection can be reused; the partial-success answer
	// of a 200 is not acted upon.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}
	err = fmt.Errorf("otlp: export: collector answered %s", resp.Status)
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, err
	}
	return false, err
}
