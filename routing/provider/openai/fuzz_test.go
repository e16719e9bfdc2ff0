package openai

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"unicode/utf8"
)

// FuzzScanRewrite: ScanRequest never panics, and for any body it accepts, the
// rewrite is valid JSON that a standard decoder reads with the new model (and
// include_usage true when forced), everything else unchanged.
func FuzzScanRewrite(f *testing.F) {
	seeds := []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		`{"messages":[],"model":"m","stream":true}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
		`{"model":"m","stream":true,"stream_options":{}}`,
		`{"model":"m","stream":true,"stream_options":null}`,
		`{"stream_options":{"a":[1,{"b":"}"}],"include_usage":null},"model":"m"}`,
		`{"model":"caf\u00e9","user":"u\"1"}`,
		`{"model":"a\/b","x":"\\","y":[[[]]],"z":{}}`,
		" \t{ \"model\" : \"m\" , \"stream\" : null }\n",
		`{"model":"m","model":"n"}`,
		`{}`, `[]`, `null`, `"x"`, `{"model":5}`, `{"model":"m","stream":"yes"}`, `{"model"`,
		`{"model":"m","api_base":"http://169.254.169.254"}`, `{"model":"m","mod\u0065l":"n"}`,
		`{"model":"m","messages":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		"{\"model\":\"m\",\"x\":\"\xff\"}", `{"model":"m","n":-1.5e+3,"t":true,"f":false}`,
	}
	for i, s := range seeds {
		f.Add([]byte(s), "upstream-model", i%2 == 0)
	}
	f.Add([]byte(`{"model":"m"}`), "", true)
	f.Add([]byte(`{"model":"m"}`), "we\"ird\\\n", false)

	f.Fuzz(func(t *testing.T, body []byte, model string, force bool) {
		var r Request
		if err := ScanRequest(body, &r); err != nil {
			return
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("ScanRequest accepted %q, which is not valid UTF-8 JSON", body)
		}
		if len(r.Model) == 0 {
			t.Fatalf("ScanRequest accepted %q with an empty model", body)
		}
		in := append([]byte(nil), body...)
		out := AppendRewrite(nil, body, &r, model, force)
		if string(in) != string(body) {
			t.Fatalf("AppendRewrite modified its input")
		}
		if !json.Valid(out) {
			t.Fatalf("rewrite of %q is not valid JSON: %q", body, out)
		}
		// UseNumber: JSON allows numbers float64 cannot hold (1e700), and the
		// rewrite passes every value through untouched.
		var got map[string]any
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("rewrite of %q is not a JSON object: %v", body, err)
		}
		if model != "" && utf8.ValidString(model) && got["model"] != model {
			t.Fatalf("rewrite of %q with model %q decodes to model %v: %q", body, model, got["model"], out)
		}
		if force {
			so, _ := got["stream_options"].(map[string]any)
			if so == nil || so["include_usage"] != true {
				t.Fatalf("forced rewrite of %q has stream_options %v: %q", body, got["stream_options"], out)
			}
		}
	})
}

// FuzzParseUsage: the usage reader never panics on an upstream's bytes (a
// response body or an SSE data line), never reports negative token counts
// (they become negative costs), and on a well-formed chunk whose only "usage"
// key is the top-level one it reads what encoding/json reads.
func FuzzParseUsage(f *testing.F) {
	seeds := []string{
		`{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}`,
		`{"choices":[{"delta":{"content":"\"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
		`{"usage":{"prompt_tokens_details":{"cached_tokens":5},"completion_tokens":7,"prompt_tokens":8}}`,
		`{"usage":null}`, `{"usage":{"prompt_tokens":`, `"usage":`, `{"usage":{"prompt_tokens":-1}}`,
		`{"usage":{"prompt_tokens":99999999999999999999999,"completion_tokens":1}}`,
		`{"choices":[],"usage":{"prompt_tokens":1}}`, `{"choices" : [ ] , "usage":{"prompt_tokens":0}}`,
		``, `[DONE]`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		u, ok := ParseUsage(b)
		only := IsUsageOnlyChunk(b)
		if !ok {
			if u != (Usage{}) {
				t.Fatalf("ParseUsage(%q) = %+v with ok false", b, u)
			}
			if only {
				t.Fatalf("IsUsageOnlyChunk(%q) is true without a usage object", b)
			}
			return
		}
		if u.PromptTokens < 0 || u.CompletionTokens < 0 {
			t.Fatalf("ParseUsage(%q) = %+v: negative token count", b, u)
		}
		// Case-sensitive, as upstreams and every other decoder read keys;
		// encoding/json's struct matching would fold "Completion_tokens".
		var chunk map[string]json.RawMessage
		var usage map[string]json.RawMessage
		if bytes.Count(b, []byte(`"usage"`)) != 1 || bytes.Count(b, []byte(`"prompt_tokens"`)) != 1 ||
			bytes.Count(b, []byte(`"completion_tokens"`)) > 1 || bytes.IndexByte(b, '\\') >= 0 ||
			json.Unmarshal(b, &chunk) != nil || json.Unmarshal(chunk["usage"], &usage) != nil {
			return
		}
		for key, got := range map[string]int{"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens} {
			raw, ok := usage[key]
			if !ok {
				continue
			}
			want, err := strconv.Atoi(string(raw))
			if err != nil || want < 0 || len(raw) > maxUsageDigits {
				continue
			}
			if got != want {
				t.Fatalf("ParseUsage(%q) %s = %d, encoding/json reads %d", b, key, got, want)
			}
		}
	})
}
