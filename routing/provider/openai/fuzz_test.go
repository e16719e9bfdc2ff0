package openai

import (
	"encoding/json"
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
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
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
