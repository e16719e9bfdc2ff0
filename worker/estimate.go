package worker

import (
	"github.com/llm-proxy/llm-proxy/routing/provider"
)

// streamTextCap bounds the chunk text kept per stream for estimation; an answer
// longer than this is counted from what was kept (a lower bound).
const streamTextCap = 4 << 20

// keepStreamChunk keeps a pass-through stream chunk for estimateUsage, in case
// the upstream never reports usage. It is a copy into a reused buffer: the
// usage normally arrives in the last chunk, so there is no knowing earlier.
func (x *exchange) keepStreamChunk(data []byte) {
	if len(x.streamText)+len(data) < streamTextCap {
		x.streamText = append(x.streamText, data...)
		x.streamText = append(x.streamText, '\n')
	}
}

// estimateUsage counts a successful exchange's tokens with the tokenizer when
// the OpenAI-compatible upstream reported no usage, and marks the record as
// estimated. resp is the answer body, or nil for a stream (the kept chunks).
func (x *exchange) estimateUsage(resp []byte) {
	if x.rec.PromptTokens != 0 || x.rec.CompletionTokens != 0 {
		return
	}
	kind := provider.KindChat
	switch x.rec.Endpoint {
	case endpointCompletions.name:
		kind = provider.KindCompletions
	case endpointEmbeddings.name:
		kind = provider.KindEmbeddings
	}
	stream := resp == nil
	if stream {
		resp = x.streamText
	}
	model := x.rec.UpstreamModel
	if model == "" {
		model = x.rec.Model
	}
	u := provider.EstimateUsage(model, kind, x.body, resp, stream)
	x.rec.PromptTokens, x.rec.CompletionTokens, x.estimated = u.PromptTokens, u.CompletionTokens, true
}
