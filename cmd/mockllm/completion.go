package main

import (
	"net/http"
	"slices"
	"strconv"
)

// appendHead appends `{"id":"...","object":"...","created":N,"model":"...",`,
// the part every completion object and chunk starts with.
func (s *server) appendHead(b []byte, c *call, id uint64, object string, created int64) []byte {
	b = append(b, `{"id":"`...)
	if c.route == routeChat {
		b = append(b, "chatcmpl-"...)
	} else {
		b = append(b, "cmpl-"...)
	}
	b = append(b, s.idBase...)
	b = strconv.AppendUint(b, id, 16)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = appendInt(b, created)
	b = append(b, `,"model":`...)
	b = appendString(b, c.req.model)
	return append(b, ',')
}

func (s *server) serveCompletion(c *call) {
	id := s.ids.Add(1)
	created := c.start.Unix()
	if c.req.stream {
		s.stream(c, id, created)
		return
	}
	bp := getBuf()
	defer putBuf(bp)
	b := *bp
	if c.route == routeChat {
		b = s.appendHead(b, c, id, "chat.completion", created)
		b = append(b, `"choices":[{"index":0,"message":{"role":"assistant","content":`...)
		b = append(b, s.replyQuoted...)
		b = append(b, `,"refusal":null},"logprobs":null,"finish_reason":"stop"}],`...)
	} else {
		b = s.appendHead(b, c, id, "text_completion", created)
		b = append(b, `"choices":[{"text":`...)
		b = append(b, s.replyQuoted...)
		b = append(b, `,"index":0,"logprobs":null,"finish_reason":"stop"}],`...)
	}
	b = appendUsage(b, c.req.promptTokens, s.replyWords, true)
	b = append(b, '}')
	*bp = b
	c.send(http.StatusOK, hdrJSON, b)
}

// badEvent is what the malformed fault injects: an SSE event whose data is
// not JSON.
const badEvent = "data: {not json\n\n"

// stream writes the answer as server-sent events, flushing each event so the
// client sees chunks arrive one by one.
func (s *server) stream(c *call, id uint64, created int64) {
	pieces := s.pieces
	if c.f.chunks > 0 && c.f.chunks != s.cfg.Chunks {
		pieces = quotePieces(splitReply(s.reply, c.f.chunks))
	}
	delay := s.cfg.ChunkDelay
	if c.f.delaySet {
		delay = c.f.delay
	}
	chat := c.route == routeChat

	object := "text_completion"
	if chat {
		object = "chat.completion.chunk"
	}
	prefix := append([]byte("data: "), s.appendHead(nil, c, id, object, created)...)

	h := c.w.Header()
	h["Content-Type"] = hdrSSE
	h["Cache-Control"] = hdrNoCache
	c.w.WriteHeader(http.StatusOK)
	c.out.status = http.StatusOK
	rc := http.NewResponseController(c.w)

	bp := getBuf()
	defer putBuf(bp)
	emit := func(b []byte) bool {
		*bp = b
		if _, err := c.w.Write(b); err != nil {
			c.gone()
			return false
		}
		if err := rc.Flush(); err != nil {
			c.gone()
			return false
		}
		return true
	}
	event := func(tail string) []byte {
		b := append((*bp)[:0], prefix...)
		return append(b, tail...)
	}

	if chat && !emit(event(`"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`+"\n\n")) {
		return
	}
	for i, p := range pieces {
		if i > 0 && !s.pause(c, delay) {
			return
		}
		if i == c.f.malformed && !emit(append((*bp)[:0], badEvent...)) {
			return
		}
		if i == c.f.cut {
			cutConnection(c)
			return
		}
		var b []byte
		if chat {
			b = event(`"choices":[{"index":0,"delta":{"content":`)
			b = append(b, p...)
			b = append(b, `},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
		} else {
			b = event(`"choices":[{"text":`)
			b = append(b, p...)
			b = append(b, `,"index":0,"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
		}
		if !emit(b) {
			return
		}
	}
	if c.f.malformed >= len(pieces) && !emit(append((*bp)[:0], badEvent...)) {
		return
	}
	if c.f.cut >= len(pieces) {
		cutConnection(c)
		return
	}
	if chat {
		if !emit(event(`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\n")) {
			return
		}
	} else if !emit(event(`"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}]}` + "\n\n")) {
		return
	}
	if c.req.includeUsage {
		b := event(`"choices":[],`)
		b = appendUsage(b, c.req.promptTokens, s.replyWords, true)
		b = append(b, "}\n\n"...)
		if !emit(b) {
			return
		}
	}
	if !emit(append((*bp)[:0], "data: [DONE]\n\n"...)) {
		return
	}
	c.out.completed = true
}

// cutConnection drops the connection mid-stream: no terminating chunk, no
// [DONE], no final empty HTTP chunk, which is what a crashed upstream or a
// broken proxy looks like to the client.
func cutConnection(c *call) {
	conn, _, err := http.NewResponseController(c.w).Hijack()
	if err != nil {
		// HTTP/2 and test recorders cannot be hijacked; aborting the
		// handler resets the stream instead.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// serveModels answers GET /v1/models: the fixed models, then every model
// seen in requests, sorted.
func (s *server) serveModels(c *call) {
	s.modelsMu.RLock()
	names := make([]string, 0, len(defaultModels)+len(s.seen))
	names = append(names, defaultModels...)
	for m := range s.seen {
		names = append(names, m)
	}
	s.modelsMu.RUnlock()
	slices.Sort(names[len(defaultModels):])

	b := append([]byte(nil), `{"object":"list","data":[`...)
	for i, m := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, m)
	}
	b = append(b, "]}"...)
	c.send(http.StatusOK, hdrJSON, b)
}

func (s *server) serveModel(c *call, name string) {
	known := slices.Contains(defaultModels, name)
	if !known {
		s.modelsMu.RLock()
		_, known = s.seen[name]
		s.modelsMu.RUnlock()
	}
	if !known {
		c.fail(&apiError{status: http.StatusNotFound, typ: "invalid_request_error", code: "model_not_found",
			msg: "The model '" + name + "' does not exist"}, "")
		return
	}
	c.send(http.StatusOK, hdrJSON, appendModel(nil, name))
}

func appendModel(b []byte, name string) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, name)
	b = append(b, `,"object":"model","created":`...)
	b = appendInt(b, modelsCreated)
	return append(b, `,"owned_by":"mockllm"}`...)
}
