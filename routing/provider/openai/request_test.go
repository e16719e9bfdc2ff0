package openai

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestScanRequest(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		model        string
		stream       bool
		includeUsage bool
		user         string
	}{
		{"model first", `{"model":"gpt-4o","messages":[]}`, "gpt-4o", false, false, ""},
		{"model last", `{"messages":[{"role":"user","content":"say \"model\": \"x\""}],"model":"m-last"}`, "m-last", false, false, ""},
		{"nested model keys ignored", `{"a":{"model":"inner"},"model":"outer","b":[{"model":"x"},"model"]}`, "outer", false, false, ""},
		{"escaped hyphen", `{"model":"gpt\u002d4o"}`, "gpt-4o", false, false, ""},
		{"escaped slash", `{"model":"org\/model"}`, "org/model", false, false, ""},
		{"escaped quote", `{"model":"q\"uote"}`, `q"uote`, false, false, ""},
		{"escaped non-ASCII", `{"model":"caf\u00e9"}`, "café", false, false, ""},
		{"surrogate pair", `{"model":"emoji-\ud83d\ude00"}`, "emoji-😀", false, false, ""},
		{"raw unicode", `{"model":"模型-1"}`, "模型-1", false, false, ""},
		{"stream true", `{"model":"m","stream":true}`, "m", true, false, ""},
		{"stream false", `{"model":"m","stream":false}`, "m", false, false, ""},
		{"stream null", `{"model":"m","stream":null}`, "m", false, false, ""},
		{"include_usage true", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, "m", true, true, ""},
		{"include_usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, "m", true, false, ""},
		{"stream_options empty", `{"model":"m","stream":true,"stream_options":{}}`, "m", true, false, ""},
		{"stream_options null", `{"model":"m","stream":true,"stream_options":null}`, "m", true, false, ""},
		{"stream_options other keys", `{"stream_options":{"x":[1,{"include_usage":false}],"include_usage":true,"y":"z"},"model":"m"}`, "m", false, true, ""},
		{"nested include_usage ignored", `{"model":"m","stream_options":{"x":{"include_usage":true}}}`, "m", false, false, ""},
		{"user", `{"model":"m","user":"user-123"}`, "m", false, false, "user-123"},
		{"user not a string", `{"model":"m","user":42}`, "m", false, false, ""},
		{"whitespace everywhere", " \n\t{ \r\n \"model\" :\t\"m\" ,\n \"stream\"  :  true ,\"stream_options\" : { \"include_usage\" : true } } \n", "m", true, true, ""},
		{"duplicate model: last wins like encoding/json", `{"model":"first","model":"second"}`, "second", false, false, ""},
		{"big numbers and nesting", `{"temperature":1.5e-3,"n":1,"logit_bias":{"50256":-100},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"model":"m"}`, "m", false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if err := ScanRequest([]byte(tt.body), &r); err != nil {
				t.Fatalf("ScanRequest() error = %v", err)
			}
			if got := string(r.Model); got != tt.model {
				t.Errorf("Model = %q, want %q", got, tt.model)
			}
			if r.Stream != tt.stream {
				t.Errorf("Stream = %v, want %v", r.Stream, tt.stream)
			}
			if r.IncludeUsage != tt.includeUsage {
				t.Errorf("IncludeUsage = %v, want %v", r.IncludeUsage, tt.includeUsage)
			}
			if got := string(r.User); got != tt.user {
				t.Errorf("User = %q, want %q", got, tt.user)
			}
		})
	}
}

func TestScanRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"empty", ``, ErrInvalidJSON},
		{"truncated", `{"model":"m"`, ErrInvalidJSON},
		{"trailing garbage", `{"model":"m"} x`, ErrInvalidJSON},
		{"single quotes", `{'model':'m'}`, ErrInvalidJSON},
		{"trailing comma", `{"model":"m",}`, ErrInvalidJSON},
		{"array", `[{"model":"m"}]`, ErrNotObject},
		{"string", `"model"`, ErrNotObject},
		{"null", `null`, ErrNotObject},
		{"number", ` 12 `, ErrNotObject},
		{"empty object", `{}`, ErrModelMissing},
		{"empty object with spaces", ` { } `, ErrModelMissing},
		{"no model", `{"messages":[]}`, ErrModelMissing},
		{"model only nested", `{"x":{"model":"m"}}`, ErrModelMissing},
		{"model null", `{"model":null}`, ErrModelMissing},
		{"model empty", `{"model":""}`, ErrModelMissing},
		{"model number", `{"model":5}`, ErrModelType},
		{"model array", `{"model":["m"]}`, ErrModelType},
		{"model object", `{"model":{"name":"m"}}`, ErrModelType},
		{"model bool", `{"model":true}`, ErrModelType},
		{"stream string", `{"model":"m","stream":"true"}`, ErrStreamType},
		{"stream number", `{"model":"m","stream":1}`, ErrStreamType},
		{"stream object", `{"model":"m","stream":{}}`, ErrStreamType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if err := ScanRequest([]byte(tt.body), &r); !errors.Is(err, tt.want) {
				t.Errorf("ScanRequest(%q) error = %v, want %v", tt.body, err, tt.want)
			}
		})
	}
}

func TestScanRequestReuse(t *testing.T) {
	// One Request is reused across requests in a worker: no field may leak.
	var r Request
	if err := ScanRequest([]byte(`{"model":"caf\u00e9","stream":true,"stream_options":{"include_usage":true},"user":"u"}`), &r); err != nil {
		t.Fatal(err)
	}
	if err := ScanRequest([]byte(`{"model":"plain"}`), &r); err != nil {
		t.Fatal(err)
	}
	if string(r.Model) != "plain" || r.Stream || r.IncludeUsage || r.User != nil {
		t.Errorf("after reuse: Model=%q Stream=%v IncludeUsage=%v User=%q, want plain/false/false/nil",
			r.Model, r.Stream, r.IncludeUsage, r.User)
	}
}

// TestScanRequestEscapedKeys: JSON decoders (encoding/json, Python's json, ...)
// unescape object keys, so "mod\u0065l" is the key "model" to the upstream. The
// gateway must see the same model the upstream will use, or a key restricted to
// one model can reach another (allow-list and alias bypass).
func TestScanRequestEscapedKeys(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		model string
	}{
		{"escaped key only", `{"mod\u0065l":"secret-model"}`, "secret-model"},
		{"plain then escaped", `{"model":"allowed","mod\u0065l":"secret-model"}`, "secret-model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var decoded map[string]any
			if err := json.Unmarshal([]byte(tt.body), &decoded); err != nil {
				t.Fatal(err)
			}
			if decoded["model"] != tt.model {
				t.Fatalf("test premise: encoding/json model = %v, want %q", decoded["model"], tt.model)
			}
			var r Request
			err := ScanRequest([]byte(tt.body), &r)
			if err == nil && string(r.Model) != tt.model {
				t.Errorf("ScanRequest model = %q but the upstream decodes %q; want them equal (or an error)", r.Model, tt.model)
			}
			if err == nil {
				out := AppendRewrite(nil, []byte(tt.body), &r, "rewritten", false)
				var got map[string]any
				if err := json.Unmarshal(out, &got); err != nil {
					t.Fatalf("rewrite is not JSON: %v", err)
				}
				if got["model"] != "rewritten" {
					t.Errorf("after rewrite the upstream decodes model %v, want %q: %s", got["model"], "rewritten", out)
				}
			}
		})
	}
}

// decodeObject decodes a JSON object, failing the test if it is not one.
func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, b)
	}
	return m
}

func TestAppendRewrite(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		model      string
		forceUsage bool
		// want is the exact output; "" checks only the decoded object.
		want string
	}{
		{"model only", `{"model":"a","messages":[]}`, "upstream-a", false, `{"model":"upstream-a","messages":[]}`},
		{"model kept when empty", `{"model":"a","x":1}`, "", false, `{"model":"a","x":1}`},
		{"odd spacing kept", "{ \"model\" :  \"a\" ,\n \"x\" : [ 1 , 2 ] }", "b", false, "{ \"model\" :  \"b\" ,\n \"x\" : [ 1 , 2 ] }"},
		{"escaped old model", `{"model":"caf\u00e9","x":"\u00e9"}`, "cafe", false, `{"model":"cafe","x":"\u00e9"}`},
		{"new model needs escaping", `{"model":"a"}`, "we\"ird\\name\n", false, `{"model":"we\"ird\\name\u000a"}`},
		{"new model non-ASCII", `{"model":"a"}`, "модель", false, `{"model":"модель"}`},
		{"usage: no stream_options", `{"model":"a","stream":true}`, "b", true, `{"model":"b","stream":true,"stream_options":{"include_usage":true}}`},
		{"usage: no stream_options, space before brace", "{\"model\":\"a\",\"stream\":true }", "", true, "{\"model\":\"a\",\"stream\":true ,\"stream_options\":{\"include_usage\":true}}"},
		{"usage: empty stream_options", `{"model":"a","stream":true,"stream_options":{}}`, "b", true, `{"model":"b","stream":true,"stream_options":{"include_usage":true}}`},
		{"usage: empty stream_options with space", `{"model":"a","stream_options":{ },"stream":true}`, "b", true, ""},
		{"usage: other keys", `{"model":"a","stream":true,"stream_options":{"continuous":true}}`, "b", true, `{"model":"b","stream":true,"stream_options":{"include_usage":true,"continuous":true}}`},
		{"usage: false", `{"model":"a","stream":true,"stream_options":{"include_usage":false}}`, "b", true, `{"model":"b","stream":true,"stream_options":{"include_usage":true}}`},
		{"usage: null value", `{"model":"a","stream":true,"stream_options":{"x":1,"include_usage":null}}`, "b", true, `{"model":"b","stream":true,"stream_options":{"x":1,"include_usage":true}}`},
		{"usage: stream_options null", `{"model":"a","stream":true,"stream_options":null}`, "b", true, `{"model":"b","stream":true,"stream_options":{"include_usage":true}}`},
		{"usage: already true", `{"model":"a","stream":true,"stream_options":{"include_usage":true}}`, "b", true, `{"model":"b","stream":true,"stream_options":{"include_usage":true}}`},
		{"usage: stream_options before model", `{"stream_options":{"include_usage":false},"stream":true,"model":"a"}`, "bbbbbbbb", true, `{"stream_options":{"include_usage":true},"stream":true,"model":"bbbbbbbb"}`},
		{"usage: stream_options null before model", `{"stream_options":null,"model":"a","stream":true}`, "b", true, `{"stream_options":{"include_usage":true},"model":"b","stream":true}`},
		{"usage: only model", `{"model":"a"}`, "", true, `{"model":"a","stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			var r Request
			if err := ScanRequest(body, &r); err != nil {
				t.Fatalf("ScanRequest: %v", err)
			}
			orig := string(body)
			dst := []byte("prefix:")
			out := AppendRewrite(dst, body, &r, tt.model, tt.forceUsage)
			if !strings.HasPrefix(string(out), "prefix:") {
				t.Fatalf("AppendRewrite did not append to dst: %q", out)
			}
			out = out[len("prefix:"):]
			if string(body) != orig {
				t.Errorf("AppendRewrite modified the input body: %q", body)
			}
			if tt.want != "" && string(out) != tt.want {
				t.Errorf("AppendRewrite =\n%s\nwant\n%s", out, tt.want)
			}
			if !json.Valid(out) {
				t.Fatalf("result is not valid JSON: %s", out)
			}
			// Decoded, the result equals the input with only the rewritten fields changed.
			want := decodeObject(t, body)
			if tt.model != "" {
				want["model"] = tt.model
			}
			if tt.forceUsage {
				so, _ := want["stream_options"].(map[string]any)
				if so == nil {
					so = map[string]any{}
				}
				so["include_usage"] = true
				want["stream_options"] = so
			}
			if got := decodeObject(t, out); !reflect.DeepEqual(got, want) {
				t.Errorf("decoded result = %v, want %v", got, want)
			}
		})
	}
}

func BenchmarkScanRewrite(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2,"stream":true}`)
	var r Request
	dst := make([]byte, 0, 4096)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ScanRequest(body, &r); err != nil {
			b.Fatal(err)
		}
		dst = AppendRewrite(dst[:0], body, &r, "gpt-4o-mini-2024-07-18", true)
	}
}
