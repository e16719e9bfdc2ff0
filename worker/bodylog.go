package worker

import (
	"regexp"

	"github.com/llm-proxy/llm-proxy/store"
)

// BodyLogConfig turns on request body logging. Embedded in Config.
type BodyLogConfig struct {
	LogBodies       bool `envconfig:"LOG_BODIES" default:"false" desc:"store request and response bodies (redacted, truncated) in request_bodies; keys with log_bodies=0 are never logged"`
	LogBodyMaxBytes int  `envconfig:"LOG_BODY_MAX_BYTES" default:"16384" desc:"bytes kept of each logged request and response body; the rest is cut off"`
}

// Body logging keeps "no request waits on SQLite": the worker appends one redacted,
// truncated record per request to its own body spool (Deps.BodySpool, a spool.Writer on
// a directory of its own: one write(2), no fsync), beside the request record; the primary
// moves those files into request_bodies (store.IngestBodySpools). Bodies stay out of the
// request-record spool so its small fixed-shape lines keep their fast parser and the
// request_logs ingest never carries megabytes.

// bodyLogOn reports whether bodies are captured at all in this worker.
func (w *Worker) bodyLogOn() bool {
	return w.cfg.LogBodies && w.deps.BodySpool != nil
}

// captureRequest starts capturing x's bodies unless logging is off or the key opted out.
func (w *Worker) captureRequest(x *exchange, key *keyEntry, body []byte) {
	if !w.bodyLogOn() || key.noBodies {
		return
	}
	x.bodies = true
	x.reqBody, x.reqTrunc = appendCapped(x.reqBody[:0], body, w.cfg.LogBodyMaxBytes)
}

// captureResponse appends b to x's captured answer, up to the limit.
func (w *Worker) captureResponse(x *exchange, b []byte) {
	if !x.bodies {
		return
	}
	var cut bool
	x.respBody, cut = appendCapped(x.respBody, b, w.cfg.LogBodyMaxBytes)
	x.respTrunc = x.respTrunc || cut
}

// appendCapped appends b to dst without dst growing past limit; cut reports a loss.
func appendCapped(dst, b []byte, limit int) ([]byte, bool) {
	room := limit - len(dst)
	if room <= 0 {
		return dst, len(b) > 0
	}
	if len(b) > room {
		return append(dst, b[:room]...), true
	}
	return append(dst, b...), false
}

// writeBodies appends x's captured bodies to the body spool; finish calls it.
func (w *Worker) writeBodies(x *exchange) {
	if !x.bodies {
		return
	}
	rec := store.BodyRecord{
		RequestID:         x.rec.RequestID,
		TsMs:              x.rec.TsMs,
		KeyID:             x.rec.KeyID,
		Request:           string(redact(x.reqBody)),
		Response:          string(redact(x.respBody)),
		RequestTruncated:  x.reqTrunc,
		ResponseTruncated: x.respTrunc,
	}
	line, err := store.AppendBodyRecord(nil, &rec)
	if err == nil {
		err = w.deps.BodySpool.Append(line)
	}
	if err != nil {
		w.logger.Warn("append request bodies", "request_id", x.rec.RequestID, "error", err)
	}
	x.bodies, x.reqTrunc, x.respTrunc = false, false, false
	x.reqBody, x.respBody = x.reqBody[:0], x.respBody[:0]
}

// redactions hide credentials that clients (and sometimes upstreams) put in bodies:
// provider and gateway keys, bearer tokens, and JSON fields named like secrets, also
// inside JSON that is itself escaped in a string.
var redactions = []struct {
	re   *regexp.Regexp
	with []byte
}{
	{regexp.MustCompile(`(?i)(\\?"(?:api[_-]?key|x[_-]api[_-]key|authorization|proxy[_-]authorization|access[_-]?token|refresh[_-]?token|client[_-]?secret|secret|password)\\?"\s*:\s*\\?")[^"\\]*`), []byte("${1}[REDACTED]")},
	{regexp.MustCompile(`(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+`), []byte("${1}[REDACTED]")},
	{regexp.MustCompile(`(?i)((?:x-api-key|api[_-]?key)\s*[:=]\s*)[^\s,"'\\]+`), []byte("${1}[REDACTED]")},
	{regexp.MustCompile(`\b(sk|lpa|rk|pk)-[A-Za-z0-9_-]{8,}`), []byte("${1}-[REDACTED]")},
	{regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{20,}`), []byte("[REDACTED]")},
}

// redact returns b with every credential-looking value replaced by [REDACTED].
func redact(b []byte) []byte {
	for _, r := range redactions {
		b = r.re.ReplaceAll(b, r.with)
	}
	return b
}
