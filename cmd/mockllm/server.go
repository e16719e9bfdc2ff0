package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	// maxBody bounds what one request may upload; larger bodies get 413.
	maxBody = 64 << 20
	// maxSeenModels and maxFailKeys bound the maps that grow with request
	// content, so a long load test with random model names cannot grow the
	// process without limit.
	maxSeenModels = 1024
	maxFailKeys   = 1 << 16
	// modelsCreated is the fixed "created" of listed models: a constant keeps
	// /v1/models byte-for-byte stable across runs.
	modelsCreated = 1700000000
)

// defaultModels are always listed by GET /v1/models.
var defaultModels = []string{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "mock-1"}

// Shared header values; net/http never mutates them, so one slice serves all
// requests without allocating.
var (
	hdrJSON    = []string{"application/json"}
	hdrSSE     = []string{"text/event-stream"}
	hdrNoCache = []string{"no-cache"}
)

type route int

const (
	routeUnknown route = iota
	routeChat
	routeText
	routeEmbeddings
	routeModels
	routeModel
)

// server is the mock upstream. It is an http.Handler; Close ends requests
// that hang on purpose so a graceful shutdown does not wait for them.
type server struct {
	cfg config
	log hclog.Logger
	rec *recorder

	reply       string
	replyQuoted []byte   // reply as a JSON string literal
	replyWords  int      // completion_tokens
	pieces      [][]byte // JSON string literals of the reply split into cfg.Chunks

	idBase string // random per process, so ids from two mocks do not collide
	ids    atomic.Uint64

	modelsMu sync.RWMutex
	seen     map[string]struct{}

	failMu    sync.Mutex
	failCount map[string]int

	stop     chan struct{}
	stopOnce sync.Once
}

var _ http.Handler = (*server)(nil)

// newServer builds the handler. cfg must have passed validate.
func newServer(cfg config) *server {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails on supported platforms
	s := &server{
		cfg:         cfg,
		log:         log,
		rec:         newRecorder(cfg.Record),
		reply:       cfg.Reply,
		replyQuoted: appendString(nil, cfg.Reply),
		replyWords:  countWords(cfg.Reply),
		idBase:      hex.EncodeToString(rnd[:]),
		seen:        map[string]struct{}{},
		failCount:   map[string]int{},
		stop:        make(chan struct{}),
	}
	s.pieces = quotePieces(splitReply(cfg.Reply, cfg.Chunks))
	return s
}

// Close makes requests blocked in the hang fault answer 503 at once. It does
// not stop the listener; that is the http.Server's job.
func (s *server) Close() { s.stopOnce.Do(func() { close(s.stop) }) }

func quotePieces(pieces []string) [][]byte {
	out := make([][]byte, len(pieces))
	for i, p := range pieces {
		out[i] = appendString(nil, p)
	}
	return out
}

// request is what the handlers need from a decoded body.
type request struct {
	model        string
	stream       bool
	includeUsage bool
	promptTokens int
	inputs       []string // embeddings
	dims         int      // embeddings; 0: server default
	base64       bool     // embeddings: encoding_format "base64"
}

// call is the state of one /v1 request.
type call struct {
	w     http.ResponseWriter
	r     *http.Request
	start time.Time
	route route
	req   request
	f     faults
	out   outcome
}

// apiError is a response that ends a request early.
type apiError struct {
	status int
	typ    string
	code   string
	msg    string
}

func notAllowed(r *http.Request) *apiError {
	return &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error",
		msg: "Method " + r.Method + " not allowed on " + r.URL.Path + "."}
}

func badRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", msg: msg}
}

func routeOf(path string) (route, string) {
	switch path {
	case "/v1/chat/completions":
		return routeChat, path
	case "/v1/completions":
		return routeText, path
	case "/v1/embeddings":
		return routeEmbeddings, path
	case "/v1/models":
		return routeModels, path
	}
	if strings.HasPrefix(path, "/v1/models/") && len(path) > len("/v1/models/") {
		return routeModel, "/v1/models/{model}"
	}
	// Unknown paths share one stats key so random paths cannot grow by_path.
	return routeUnknown, "other"
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/debug/") {
		s.serveDebug(w, r)
		return
	}
	c := call{w: w, r: r, start: time.Now(), f: noFaults()}
	rt, statsPath := routeOf(r.URL.Path)
	c.route = rt

	var early *apiError
	var body []byte
	switch {
	case rt == routeUnknown:
		early = &apiError{status: http.StatusNotFound, typ: "invalid_request_error", code: "unknown_url",
			msg: "Unknown request URL: " + r.Method + " " + r.URL.Path + "."}
	case rt == routeModels || rt == routeModel:
		if r.Method != http.MethodGet {
			early = notAllowed(r)
		}
	case r.Method != http.MethodPost:
		early = notAllowed(r)
	default:
		bp := getBuf()
		defer putBuf(bp)
		if err := readBody(r.Body, bp, r.ContentLength); err != nil {
			early = badRequest("could not read request body: " + err.Error())
			if errors.Is(err, errBodyTooLarge) {
				early.status = http.StatusRequestEntityTooLarge
			}
		} else {
			body = *bp
			early = decodeRequest(rt, body, &c.req)
		}
	}

	faultSpec := r.Header.Get("X-Mock-Fault")
	if early == nil {
		var modelSpec string
		c.req.model, modelSpec = splitModel(c.req.model)
		if modelSpec != "" {
			if faultSpec != "" {
				faultSpec += ","
			}
			faultSpec += modelSpec
		}
		if err := parseFaults(&c.f, faultSpec); err != nil {
			early = badRequest("mockllm: " + err.Error())
		} else if rt != routeModels && rt != routeModel && c.req.model == "" {
			early = badRequest("you must provide a model parameter")
		}
	}

	seq := s.rec.begin(s.newEntry(r, body, &c, faultSpec), statsPath)
	defer func() {
		// Deferred so that an aborted stream (panic(http.ErrAbortHandler))
		// is still recorded.
		c.out.duration = time.Since(c.start)
		s.rec.finish(seq, c.out)
		if s.cfg.LogRequests {
			s.log.Info("request", "method", r.Method, "path", r.URL.Path, "model", c.req.model,
				"stream", c.req.stream, "status", c.out.status, "completed", c.out.completed,
				"client_closed", c.out.clientClosed, "duration", c.out.duration)
		}
	}()

	if !s.pause(&c, s.cfg.Latency) {
		return
	}
	if early != nil {
		c.fail(early, "")
		return
	}
	s.noteModel(c.req.model)
	if !s.pause(&c, c.f.slowFirst) {
		return
	}
	if c.f.hang {
		s.hang(&c)
		return
	}
	if c.f.failFirst > 0 && s.failNow(&c) {
		c.fail(&apiError{status: http.StatusServiceUnavailable, typ: "server_error",
			msg: "mockllm: injected fault fail_first"}, c.f.retryAfter)
		return
	}
	if c.f.status != 0 {
		c.fail(faultError(c.f.status), c.f.retryAfter)
		return
	}

	switch rt {
	case routeChat, routeText:
		s.serveCompletion(&c)
	case routeEmbeddings:
		s.serveEmbeddings(&c)
	case routeModels:
		s.serveModels(&c)
	case routeModel:
		s.serveModel(&c, strings.TrimPrefix(r.URL.Path, "/v1/models/"))
	}
}

func (s *server) newEntry(r *http.Request, body []byte, c *call, faultSpec string) entry {
	if s.cfg.Record == 0 {
		return entry{}
	}
	h := make(map[string]string, len(r.Header)+1)
	for k, v := range r.Header {
		if len(v) > 0 {
			h[k] = v[0]
		}
	}
	if r.Host != "" {
		h["Host"] = r.Host
	}
	e := entry{
		Time: c.start, Method: r.Method, Path: r.URL.Path, Headers: h,
		Model: c.req.model, Fault: faultSpec, Stream: c.req.stream,
	}
	if len(body) > maxRecordedBody {
		body = body[:maxRecordedBody]
		e.BodyTruncated = true
	}
	e.Body = string(body)
	return e
}

// pause waits d unless the client goes away first; false means it went away
// (and that is recorded).
func (s *server) pause(c *call, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.r.Context().Done():
		c.gone()
		return false
	}
}

func (s *server) hang(c *call) {
	select {
	case <-c.r.Context().Done():
		c.gone()
	case <-s.stop:
		c.fail(&apiError{status: http.StatusServiceUnavailable, typ: "server_error",
			msg: "mockllm is shutting down"}, "")
	}
}

// failNow counts this request against its fail_first key and reports
// whether it is still among the first N.
func (s *server) failNow(c *call) bool {
	key := c.r.Header.Get("X-Mock-Key")
	if key == "" {
		key = "model:" + c.req.model
	} else {
		key = "key:" + key
	}
	s.failMu.Lock()
	defer s.failMu.Unlock()
	n, ok := s.failCount[key]
	if !ok && len(s.failCount) >= maxFailKeys {
		s.failCount = map[string]int{}
	}
	n++
	s.failCount[key] = n
	return n <= c.f.failFirst
}

func (s *server) resetFailFirst() {
	s.failMu.Lock()
	s.failCount = map[string]int{}
	s.failMu.Unlock()
}

func (s *server) noteModel(name string) {
	if name == "" || slices.Contains(defaultModels, name) {
		return
	}
	s.modelsMu.RLock()
	_, ok := s.seen[name]
	s.modelsMu.RUnlock()
	if ok {
		return
	}
	s.modelsMu.Lock()
	if len(s.seen) < maxSeenModels {
		s.seen[name] = struct{}{}
	}
	s.modelsMu.Unlock()
}

func (c *call) gone() {
	if !c.out.clientClosed {
		c.out.clientClosed = true
		c.out.closedAfter = time.Since(c.start)
	}
}

// send writes a complete response.
func (c *call) send(status int, ct []string, b []byte) {
	c.w.Header()["Content-Type"] = ct
	c.w.WriteHeader(status)
	c.out.status = status
	if _, err := c.w.Write(b); err != nil {
		c.gone()
		return
	}
	c.out.completed = true
}

func (c *call) fail(e *apiError, retryAfter string) {
	if retryAfter != "" {
		c.w.Header().Set("Retry-After", retryAfter)
	}
	bp := getBuf()
	defer putBuf(bp)
	*bp = appendError(*bp, e)
	c.send(e.status, hdrJSON, *bp)
}

// faultError is the body OpenAI sends for a status, so clients classify the
// injected error the way they would classify the real one.
func faultError(status int) *apiError {
	e := &apiError{status: status, typ: "invalid_request_error",
		msg: "mockllm: injected fault status=" + strconv.Itoa(status) + "."}
	switch {
	case status == http.StatusTooManyRequests:
		e.typ, e.code = "requests", "rate_limit_exceeded"
		e.msg = "mockllm: injected rate limit (status=429). Please try again later."
	case status >= 500:
		e.typ = "server_error"
		e.msg = "mockllm: injected server error (status=" + strconv.Itoa(status) + ")."
	case status == http.StatusUnauthorized:
		e.code = "invalid_api_key"
	case status == http.StatusNotFound:
		e.code = "model_not_found"
	}
	return e
}

func appendError(b []byte, e *apiError) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendString(b, e.msg)
	b = append(b, `,"type":`...)
	b = appendString(b, e.typ)
	b = append(b, `,"param":null,"code":`...)
	if e.code == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, e.code)
	}
	return append(b, "}}"...)
}

// writeError writes an OpenAI-shaped error outside a recorded call.
func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	b := appendError(nil, &apiError{status: status, typ: typ, code: code, msg: msg})
	w.Header()["Content-Type"] = hdrJSON
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var errBodyTooLarge = errors.New("body larger than 64 MiB")

// readBody reads r into *bp, reusing its capacity.
func readBody(r io.Reader, bp *[]byte, contentLength int64) error {
	b := (*bp)[:0]
	if contentLength > maxBody {
		return errBodyTooLarge
	}
	if contentLength > 0 && int(contentLength) >= cap(b) {
		// +1 so the read that reports EOF does not force a regrowth.
		b = make([]byte, 0, contentLength+1)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > maxBody {
			*bp = b
			return errBodyTooLarge
		}
		if err == io.EOF {
			*bp = b
			return nil
		}
		if err != nil {
			*bp = b
			return err
		}
	}
}
