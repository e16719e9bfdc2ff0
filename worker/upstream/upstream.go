// Package upstream is the gateway's HTTP/1.1 client for provider calls.
//
// It writes and parses messages with fasthttp's wire types (Request.Write,
// Response.ReadLimitBody, StreamBody) but owns its connections, so that
// cancelling a call is nothing more than closing its socket: a context
// registered with context.AfterFunc closes the connection the moment it is
// done, which unblocks whatever read or write the calling goroutine is in. There
// is no goroutine per request or per connection (net/http's Transport runs a
// readLoop and a writeLoop per connection and hands every request between them),
// and no header maps: the reuse path costs a handful of allocations at most.
//
// A Client keeps one pool per scheme+host:port. Connections are reused LIFO;
// an idle connection is closed once it has been idle for Config.IdleTimeout, or
// when the upstream has closed it (checked with a non-blocking peek before
// reuse, the way nginx watches its cached upstream connections for a close).
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Config holds the upstream client's limits. Zero values mean the default
// given in each field's comment, except MaxConnsPerHost, where zero means no
// limit.
type Config struct {
	// ConnectTimeout bounds TCP connect plus TLS handshake (default 10s).
	ConnectTimeout time.Duration `envconfig:"UPSTREAM_CONNECT_TIMEOUT" default:"10s" desc:"TCP connect plus TLS handshake timeout to upstreams"`
	// ResponseHeaderTimeout bounds the time from starting to write a request
	// until its response headers are read; for a buffered (non-stream)
	// response it bounds the whole response (default 300s).
	ResponseHeaderTimeout time.Duration `envconfig:"UPSTREAM_TIMEOUT" default:"300s" desc:"how long to wait for an upstream's response headers (and a non-stream body) before answering 504"`
	// IdleTimeout: a keep-alive connection idle longer than this is closed and
	// never reused (default 90s). Keep it below the providers' own idle
	// timeouts so the gateway, not the provider, closes idle connections.
	IdleTimeout time.Duration `envconfig:"UPSTREAM_IDLE_TIMEOUT" default:"90s" desc:"idle upstream keep-alive connections older than this are closed"`
	// MaxConnsPerHost bounds the connections (in use, idle or being dialled)
	// to one scheme+host:port; a request that finds none free waits for one
	// until its context is done. Zero means no limit (default 0).
	MaxConnsPerHost int `envconfig:"UPSTREAM_MAX_CONNS_PER_HOST" default:"0" desc:"most connections to one upstream host; requests wait for a free one (0 = no limit)"`
	// MaxIdleConnsPerHost bounds the idle connections kept per host; the
	// oldest is closed first (default 256).
	MaxIdleConnsPerHost int `envconfig:"UPSTREAM_MAX_IDLE_CONNS_PER_HOST" default:"256" desc:"most idle keep-alive connections kept to one upstream host"`
	// MaxResponseBytes bounds a buffered (non-stream) response body; streams
	// are not bounded (default 64 MiB).
	MaxResponseBytes int `envconfig:"UPSTREAM_MAX_RESPONSE_BYTES" default:"67108864" desc:"largest non-stream upstream response body in bytes (default 64 MiB)"`
	// AllowPrivate says which non-public addresses upstream connections may go
	// to; see AddressPolicy. "loopback" (the default, also for ""), "true" or
	// "false". Checked on the address actually dialled, after DNS. An invalid
	// value refuses like "false": a typo must not open the internal network.
	AllowPrivate string `envconfig:"ALLOW_PRIVATE_UPSTREAMS" default:"loopback" desc:"which non-public upstream addresses may be dialled: loopback (default: this machine only, for local model servers and mockllm), true (also private, link-local and CGNAT ranges), false (public addresses only)"`
	// RootCAs verifies upstream certificates; nil means the system roots.
	// Tests set it to trust their own server.
	RootCAs *x509.CertPool `ignored:"true" desc:"certificate pool for upstream TLS; nil means the system roots"`
}

// Defaults for zero Config fields.
const (
	DefaultConnectTimeout        = 10 * time.Second
	DefaultResponseHeaderTimeout = 300 * time.Second
	DefaultIdleTimeout           = 90 * time.Second
	DefaultMaxIdleConnsPerHost   = 256
	DefaultMaxResponseBytes      = 64 << 20
)

// Validate reports a field value New would not use as given.
func (c Config) Validate() error {
	_, err := ParsePolicy(c.AllowPrivate)
	return err
}

func (c Config) withDefaults() Config {
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxIdleConnsPerHost <= 0 {
		c.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.MaxConnsPerHost < 0 {
		c.MaxConnsPerHost = 0
	}
	if c.AllowPrivate == "" {
		c.AllowPrivate = AllowLoopback
	}
	return c
}

// Ops named in Error.Op.
const (
	OpDial       = "dial"          // TCP connect or TLS handshake
	OpWrite      = "write request" // sending the request
	OpReadHeader = "read response" // reading the status line, headers and a buffered body
	OpReadBody   = "read body"     // reading a streamed body
)

var (
	// ErrDial matches (errors.Is) every failure to connect to the upstream:
	// DNS, TCP connect, TLS handshake. The gateway answers 502, or 504 when the
	// error's Timeout() is true (connect timeout, as nginx does).
	ErrDial = errors.New("upstream: cannot connect")
	// ErrResponseHeaderTimeout is wrapped when ResponseHeaderTimeout passes;
	// its Timeout() is true.
	ErrResponseHeaderTimeout error = timeoutError{}
	// errBadScheme is returned for a URI that is neither http nor https.
	errBadScheme = errors.New("upstream: URI scheme must be http or https")
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout awaiting the upstream response" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Error is every error Do and Stream.Read return. Classify it with:
//
//   - errors.Is(err, context.Canceled): the caller's context was cancelled
//     (the client went away); context.DeadlineExceeded likewise for a
//     deadline, and then Timeout() is true as well.
//   - Timeout(): connect timeout, response header timeout (504).
//   - errors.Is(err, ErrDial): could not connect (502).
//   - anything else: the upstream broke the exchange (502);
//     errors.Is(err, fasthttp.ErrBodyTooLarge) for MaxResponseBytes.
//
// It implements net.Error so code that classifies net errors keeps working.
type Error struct {
	Op   string // one of the Op constants
	Addr string // upstream host:port
	Err  error
}

func (e *Error) Error() string { return "upstream: " + e.Op + " " + e.Addr + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDial) true for connect failures, but not for a
// context that ended while connecting or waiting for a connection.
func (e *Error) Is(target error) bool {
	return target == ErrDial && e.Op == OpDial &&
		!errors.Is(e.Err, context.Canceled) && !errors.Is(e.Err, context.DeadlineExceeded)
}

// Timeout reports whether the failure was a timeout.
func (e *Error) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}

// Temporary is Timeout; it exists only to satisfy net.Error.
func (e *Error) Temporary() bool { return e.Timeout() }

var _ net.Error = (*Error)(nil)

// Client sends requests to upstreams over pooled HTTP/1.1 connections. It is
// safe for concurrent use; a worker process needs one.
type Client struct {
	cfg    Config
	dialer net.Dialer
	// tlsSessions lets reconnects to the same provider resume TLS sessions.
	tlsSessions tls.ClientSessionCache

	// pools is an immutable map replaced on insert, so the per-request lookup
	// takes no lock and, indexed with string(bytes), allocates nothing.
	pools   atomic.Pointer[map[string]*hostPool]
	poolsMu sync.Mutex

	// The reaper closes connections idle past IdleTimeout even when their host
	// gets no more traffic; it is a timer armed only while idle connections
	// exist, not a goroutine.
	reapMu    sync.Mutex
	reapTimer *time.Timer
	reapArmed bool

	retries atomic.Int64

	// now tells idle ages; tests replace it to age connections without
	// sleeping. Socket deadlines always use the real clock.
	now func() time.Time
}

// Retries returns how many requests were sent a second time after a stale
// keep-alive connection (see shouldRetry); a number worth exporting as a metric.
func (c *Client) Retries() int64 { return c.retries.Load() }

// New returns a Client with cfg's zero fields set to their defaults.
func New(cfg Config) *Client {
	cfg = cfg.withDefaults()
	policy, err := ParsePolicy(cfg.AllowPrivate)
	if err != nil {
		policy = AddressPolicy{} // public only; Config.Validate reports the value
	}
	c := &Client{
		cfg: cfg,
		// Control sees the numeric address after DNS, right before connect(2).
		dialer:      net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second, Control: policy.control},
		tlsSessions: tls.NewLRUClientSessionCache(256),
		now:         time.Now,
	}
	m := map[string]*hostPool{}
	c.pools.Store(&m)
	return c
}

// CloseIdle closes every idle connection. Connections in use are not touched;
// they close or return to the pool when their request ends.
func (c *Client) CloseIdle() {
	for _, p := range *c.pools.Load() {
		p.closeIdle(func(*conn) bool { return true })
	}
}

// Do sends req and reads the response headers into resp.
//
// req must be fully built: method, full URI with scheme and host (the pool and
// the dial address come from it), headers, body. Redirects are never followed:
// a 3xx is returned like any response.
//
// stream=false: the whole body is read into resp (at most MaxResponseBytes)
// and the connection goes back to the pool unless either side asked for
// Connection: close; the returned *Stream is nil.
//
// stream=true: only the headers are read; the returned Stream yields the body
// as it arrives, with chunked framing removed. The caller must Close the Stream
// when done, and must not reset or reuse resp before that. resp.BodyStream()
// must not be read directly: the Stream tracks whether the body was read to
// the end, which decides whether the connection can be reused.
//
// Cancelling ctx closes the connection at once, unblocking any read or write
// in Do or in Stream.Read; the error then satisfies errors.Is(err,
// context.Canceled) (or DeadlineExceeded). Errors are always *Error; see its
// doc for how to classify them.
func (c *Client) Do(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, stream bool) (*Stream, error) {
	p, err := c.pool(req)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: OpDial, Addr: p.addr, Err: err}
	}
	fresh := false
	for {
		cn, err := p.get(ctx, fresh)
		if err != nil {
			return nil, err
		}
		s, retry, err := cn.roundTrip(ctx, req, resp, stream)
		if err == nil {
			return s, nil
		}
		if !retry || fresh || req.IsBodyStream() {
			// A body stream was consumed by the first attempt.
			return nil, err
		}
		// One retry, on a connection dialled for it: see shouldRetry.
		c.retries.Add(1)
		fresh = true
	}
}

// pool returns the pool for req's scheme and host, creating it on first use.
func (c *Client) pool(req *fasthttp.Request) (*hostPool, error) {
	uri := req.URI()
	scheme, host := uri.Scheme(), uri.Host()
	var kb [256]byte
	key := append(kb[:0], scheme...)
	key = append(key, "://"...)
	key = append(key, host...)
	if p := (*c.pools.Load())[string(key)]; p != nil {
		return p, nil
	}
	return c.newPool(string(key), string(scheme), string(host))
}

func (c *Client) newPool(key, scheme, host string) (*hostPool, error) {
	c.poolsMu.Lock()
	defer c.poolsMu.Unlock()
	old := *c.pools.Load()
	if p := old[key]; p != nil {
		return p, nil
	}
	if host == "" {
		return nil, &Error{Op: OpDial, Addr: host, Err: errors.New("request URI has no host")}
	}
	p := &hostPool{client: c, addr: host}
	switch scheme {
	case "http":
		if !hasPort(host) {
			p.addr = net.JoinHostPort(host, "80")
		}
	case "https":
		if !hasPort(host) {
			p.addr = net.JoinHostPort(host, "443")
		}
		serverName, _, err := net.SplitHostPort(p.addr)
		if err != nil {
			return nil, &Error{Op: OpDial, Addr: host, Err: err}
		}
		p.tls = &tls.Config{
			ServerName:         serverName,
			RootCAs:            c.cfg.RootCAs,
			NextProtos:         []string{"http/1.1"},
			ClientSessionCache: c.tlsSessions,
			MinVersion:         tls.VersionTLS12,
		}
	default:
		return nil, &Error{Op: OpDial, Addr: host, Err: errBadScheme}
	}
	// Numeric hosts in inet_aton spellings (127.1, 0x7f000001, 0177.0.0.1) are
	// dialled as the address they denote. Go's resolver would send them to DNS as
	// names, libc's would read them as numbers; dialling the number makes both
	// builds agree, keeps them out of DNS, and the address check sees it as is.
	if h, port, err := net.SplitHostPort(p.addr); err == nil {
		if ip, ok := ParseHostIP(h); ok {
			p.addr = net.JoinHostPort(ip.String(), port)
		}
	}
	m := make(map[string]*hostPool, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[key] = p
	c.pools.Store(&m)
	return p, nil
}

// hasPort reports whether host (as in a URI: name, IPv4 or [IPv6]) has a port.
func hasPort(host string) bool {
	for i := len(host) - 1; i >= 0; i-- {
		switch host[i] {
		case ':':
			return true
		case ']':
			return false
		}
	}
	return false
}

// dial opens a new connection to p's upstream, TLS included.
func (c *Client) dial(ctx context.Context, p *hostPool) (*conn, error) {
	start := time.Now()
	nc, err := c.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return nil, &Error{Op: OpDial, Addr: p.addr, Err: err}
	}
	cn := newConn(p, nc)
	if p.tls != nil {
		tc := tls.Client(nc, p.tls)
		// The handshake honours ctx the same way requests do: AfterFunc closes
		// the socket (tls.Conn.HandshakeContext would start a goroutine).
		stop := noStop
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, cn.abortFn)
		}
		_ = nc.SetDeadline(start.Add(c.cfg.ConnectTimeout))
		err := tc.Handshake()
		stopped := stop()
		if err == nil && !stopped {
			err = ctx.Err()
		}
		if err == nil {
			if proto := tc.ConnectionState().NegotiatedProtocol; proto != "" && proto != "http/1.1" {
				err = errors.New("upstream negotiated ALPN protocol " + proto)
			}
		}
		if err == nil {
			err = nc.SetDeadline(time.Time{})
		}
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				err = cerr
			}
			cn.release()
			_ = nc.Close()
			return nil, &Error{Op: OpDial, Addr: p.addr, Err: err}
		}
		cn.nc = tc
	}
	return cn, nil
}

// isConnReset reports a TCP reset.
func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
