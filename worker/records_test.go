package worker

import (
	"net/http"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

func TestRequestRecords(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	start := time.Now()

	type sent struct {
		id   string
		want spool.Record
	}
	var all []sent
	send := func(key, body string, want spool.Record) {
		t.Helper()
		resp, got := h.chat(t, key, body)
		if resp.StatusCode != want.Status {
			t.Fatalf("%s: status %d, want %d: %s", body, resp.StatusCode, want.Status, got)
		}
		all = append(all, sent{resp.Header.Get("X-Request-Id"), want})
	}
	all1, limited := h.keyIDs["all"], h.keyIDs["limited"]

	h.up.set(upstreamBehavior{}) // JSON with usage 11/7
	send(keyAll, `{"model":"alias","messages":[]}`, spool.Record{KeyID: all1, Endpoint: "chat", Model: "alias",
		Upstream: "fake", UpstreamModel: "real-model", Status: 200, PromptTokens: 11, CompletionTokens: 7})
	send(keyLimited, `{"model":"gpt-4o","messages":[]}`, spool.Record{KeyID: limited, Endpoint: "chat", Model: "gpt-4o",
		Upstream: "fake", UpstreamModel: "gpt-4o", Status: 200, PromptTokens: 11, CompletionTokens: 7})

	h.up.set(upstreamBehavior{kind: "stream", chunks: 3})
	send(keyAll, `{"model":"gpt-4o","stream":true,"messages":[]}`, spool.Record{KeyID: all1, Endpoint: "chat", Model: "gpt-4o",
		Upstream: "fake", UpstreamModel: "gpt-4o", Status: 200, Stream: true, PromptTokens: 9, CompletionTokens: 3})

	send(keyAll, `{"model":"no-such","stream":true}`, spool.Record{KeyID: all1, Endpoint: "chat", Model: "no-such",
		Status: 404, Stream: true, ErrorClass: classUnknownModel})
	send(keyLimited, `{"model":"alias"}`, spool.Record{KeyID: limited, Endpoint: "chat", Model: "alias",
		Status: 403, ErrorClass: classForbidden})
	send(keyAll, `{"model":`, spool.Record{KeyID: all1, Endpoint: "chat", Status: 400, ErrorClass: classBadRequest})

	// Refused keys are never recorded.
	for _, key := range []string{"", "sk-wrong", keyExpired, keyRevoked} {
		if resp, _ := h.chat(t, key, okChat); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("key %q: status %d, want 401", key, resp.StatusCode)
		}
	}

	recs := h.records(t)
	if len(recs) != len(all) {
		t.Errorf("spool holds %d records, want %d (one per request, none for 401s): %+v", len(recs), len(all), recs)
	}
	byID := map[string]spool.Record{}
	for _, r := range recs {
		if _, dup := byID[r.RequestID]; dup {
			t.Errorf("request id %s recorded twice", r.RequestID)
		}
		byID[r.RequestID] = r
	}
	for _, s := range all {
		got, ok := byID[s.id]
		if !ok {
			t.Errorf("no record for X-Request-Id %q (%+v)", s.id, s.want)
			continue
		}
		w := s.want
		if got.KeyID != w.KeyID || got.Endpoint != w.Endpoint || got.Model != w.Model || got.Upstream != w.Upstream ||
			got.UpstreamModel != w.UpstreamModel || got.Status != w.Status || got.Stream != w.Stream ||
			got.PromptTokens != w.PromptTokens || got.CompletionTokens != w.CompletionTokens || got.ErrorClass != w.ErrorClass {
			t.Errorf("record %s =\n %+v\nwant\n %+v", s.id, got, w)
		}
		if got.Worker != 3 {
			t.Errorf("record %s worker = %d, want slot 3", s.id, got.Worker)
		}
		if got.TsMs < start.UnixMilli()-1 || got.TsMs > time.Now().UnixMilli() {
			t.Errorf("record %s ts_ms = %d, outside the test", s.id, got.TsMs)
		}
		if got.LatencyUs < 0 || (w.Upstream != "" && (got.TtfbUs <= 0 || got.TtfbUs > got.LatencyUs)) {
			t.Errorf("record %s latency=%dus ttfb=%dus", s.id, got.LatencyUs, got.TtfbUs)
		}
	}
}
