package limits

import (
	"strconv"
	"time"
)

// HeaderSetter receives response headers; fasthttp's *ResponseHeader is one.
// The names given are already in canonical form, so no normalising is needed.
type HeaderSetter interface {
	SetCanonical(key, value []byte)
}

// The rate-limit header names OpenAI sends, in the canonical form fasthttp
// writes (header names are case-insensitive).
var (
	hdrLimitRequests     = []byte("X-Ratelimit-Limit-Requests")
	hdrRemainingRequests = []byte("X-Ratelimit-Remaining-Requests")
	hdrResetRequests     = []byte("X-Ratelimit-Reset-Requests")
	hdrLimitTokens       = []byte("X-Ratelimit-Limit-Tokens")
	hdrRemainingTokens   = []byte("X-Ratelimit-Remaining-Tokens")
	hdrResetTokens       = []byte("X-Ratelimit-Reset-Tokens")
	hdrRetryAfter        = []byte("Retry-After")
	hdrRetryAfterMs      = []byte("Retry-After-Ms")
)

// Headers sets each rate-limit header OpenAI sends, for the limits that apply:
// x-ratelimit-{limit,remaining,reset}-{requests,tokens}, and on refusal Retry-After
// (whole seconds, rounded up) and retry-after-ms (which OpenAI's SDKs prefer). Reset
// values use Go duration syntax at millisecond precision like OpenAI's ("1s", "6m0s",
// "17.497s"). Values are formatted into buf, reused for each header, so h must copy
// value (fasthttp's ResponseHeader does); the grown buf is returned for reuse. It runs
// on every limited request, so it takes an interface, not a closure (no allocation).
func (d *Decision) Headers(buf []byte, h HeaderSetter) []byte {
	if q := d.Requests; q.Limit > 0 {
		buf = strconv.AppendInt(buf[:0], q.Limit, 10)
		h.SetCanonical(hdrLimitRequests, buf)
		buf = strconv.AppendInt(buf[:0], q.Remaining, 10)
		h.SetCanonical(hdrRemainingRequests, buf)
		buf = appendDuration(buf[:0], q.Reset)
		h.SetCanonical(hdrResetRequests, buf)
	}
	if q := d.Tokens; q.Limit > 0 {
		buf = strconv.AppendInt(buf[:0], q.Limit, 10)
		h.SetCanonical(hdrLimitTokens, buf)
		buf = strconv.AppendInt(buf[:0], q.Remaining, 10)
		h.SetCanonical(hdrRemainingTokens, buf)
		buf = appendDuration(buf[:0], q.Reset)
		h.SetCanonical(hdrResetTokens, buf)
	}
	if !d.Allowed && d.RetryAfter > 0 {
		sec := (d.RetryAfter + time.Second - 1) / time.Second
		buf = strconv.AppendInt(buf[:0], int64(sec), 10)
		h.SetCanonical(hdrRetryAfter, buf)
		ms := (d.RetryAfter + time.Millisecond - 1) / time.Millisecond
		buf = strconv.AppendInt(buf[:0], int64(ms), 10)
		h.SetCanonical(hdrRetryAfterMs, buf)
	}
	return buf
}

// appendDuration writes d rounded up to the millisecond the way time.Duration.String
// does ("20ms", "1.5s", "6m0s", "1h0m0s"), without allocating.
func appendDuration(b []byte, d time.Duration) []byte {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms <= 0 {
		return append(b, "0s"...)
	}
	if ms < 1000 {
		return append(strconv.AppendInt(b, ms, 10), "ms"...)
	}
	h, m, s, frac := ms/3_600_000, ms/60_000%60, ms/1000%60, ms%1000
	if h > 0 {
		b = append(strconv.AppendInt(b, h, 10), 'h')
	}
	if h > 0 || m > 0 {
		b = append(strconv.AppendInt(b, m, 10), 'm')
	}
	b = strconv.AppendInt(b, s, 10)
	if frac > 0 {
		b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
	}
	return append(b, 's')
}
