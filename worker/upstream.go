package worker

import (
	"net"
	"net/http"
	"time"
)

// newUpstreamClient builds the HTTP client every upstream call goes through.
// net/http (not fasthttp's client) because cancelling a request's context closes
// its upstream connection at once, which is how a client disconnect stops a paid
// generation, and because providers speak HTTP/2.
func newUpstreamClient(cfg Config) *http.Client {
	dialer := &net.Dialer{Timeout: cfg.UpstreamConnectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.UpstreamConnectTimeout,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		ExpectContinueTimeout: time.Second,
		// Bodies pass through as the upstream sent them; no gzip round trip.
		DisableCompression: true,
	}
	return &http.Client{
		Transport: tr,
		// An upstream redirect is never followed: it could point the request, with
		// the provider key, somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
