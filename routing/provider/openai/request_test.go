package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
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
		{"messages null", `{"model":"m","messages":null}`, "m", false, false, ""},
		{"upstream-like key nested is data", `{"model":"m","metadata":{"api_base":"x","base_url":"y"}}`, "m", false, false, ""},
		{"upstream-like key in a different case", `{"model":"m","API_BASE":"x"}`, "m", false, false, ""},
		{"same key in two nested objects", `{"a":{"k":1},"b":{"k":2},"model":"m"}`, "m", false, false, ""},
		{"nested duplicate is the upstream's business", `{"model":"m","a":{"k":1,"k":2}}`, "m", false, false, ""},
		{"many top-level keys", manyKeys(40, ""), "m", false, false, ""},
		{"depth 64", `{"model":"m","x":` + nest(63) + `}`, "m", false, false, ""},
		{"2048 messages", `{"model":"m","messages":` + messages(2048) + `}`, "m", false, false, ""},
		{"valid multi-byte UTF-8", `{"model":"m","messages":[{"content":"żółć 😀 ∑"}]}`, "m", false, false, ""},
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
		{"field error but malformed later", `{"model":"m","stream":"yes",}`, ErrInvalidJSON},
		{"bad escape", `{"model":"m\x"}`, ErrInvalidJSON},
		{"short unicode escape", `{"model":"m\u12"}`, ErrInvalidJSON},
		{"raw control character", "{\"model\":\"m\x01\"}", ErrInvalidJSON},
		{"leading zero", `{"model":"m","n":01}`, ErrInvalidJSON},
		{"bare minus", `{"model":"m","n":-}`, ErrInvalidJSON},
		{"dot without digits", `{"model":"m","n":1.}`, ErrInvalidJSON},
		{"exponent without digits", `{"model":"m","n":1e+}`, ErrInvalidJSON},
		{"bad literal", `{"model":"m","x":nul}`, ErrInvalidJSON},
		{"missing colon", `{"model" "m"}`, ErrInvalidJSON},
		{"unclosed nested", `{"model":"m","x":[1,2}`, ErrInvalidJSON},
		{"two values", `{"model":"m"}{}`, ErrInvalidJSON},
		{"duplicate model", `{"model":"first","model":"second"}`, ErrDuplicateKey},
		{"duplicate after escapes", `{"model":"allowed","mod\u0065l":"other"}`, ErrDuplicateKey},
		{"duplicate messages", `{"model":"m","messages":[],"messages":[]}`, ErrDuplicateKey},
		{"duplicate past the inline set", manyKeys(40, `"k39":0`), ErrDuplicateKey},
		{"api_base", `{"model":"m","api_base":"http://169.254.169.254/"}`, ErrUpstreamOverride},
		{"base_url", `{"base_url":"http://10.0.0.1/","model":"m"}`, ErrUpstreamOverride},
		{"api_key", `{"model":"m","api_key":"sk-stolen"}`, ErrUpstreamOverride},
		{"api_version", `{"model":"m","api_version":"2024-01-01"}`, ErrUpstreamOverride},
		{"organization", `{"model":"m","organization":"org-1"}`, ErrUpstreamOverride},
		{"escaped api_base", `{"model":"m","api\u005fbase":"x"}`, ErrUpstreamOverride},
		{"depth 65", `{"model":"m","x":` + nest(64) + `}`, ErrTooDeep},
		{"deep object bomb", `{"model":"m","x":` + strings.Repeat(`{"a":`, 100000), ErrTooDeep},
		{"deep array at top", strings.Repeat("[", 100000), ErrTooDeep},
		{"2049 messages", `{"model":"m","messages":` + messages(2049) + `}`, ErrTooManyMessages},
		{"messages string", `{"model":"m","messages":"hi"}`, ErrMessagesType},
		{"messages object", `{"model":"m","messages":{"role":"user"}}`, ErrMessagesType},
		{"invalid UTF-8 in value", "{\"model\":\"m\",\"messages\":[{\"content\":\"\xff\"}]}", ErrInvalidUTF8},
		{"invalid UTF-8 in key", "{\"model\":\"m\",\"\xc3\x28\":1}", ErrInvalidUTF8},
		{"truncated UTF-8", "{\"model\":\"m\xe2\x82\"}", ErrInvalidUTF8},
		{"overlong UTF-8", "{\"model\":\"\xc0\xafm\"}", ErrInvalidUTF8},
		{"UTF-8 surrogate", "{\"model\":\"\xed\xa0\x80\"}", ErrInvalidUTF8},
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

// nest returns n nested arrays around a number: nest(2) is [[1]].
func nest(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }

// messages returns a messages array of n entries.
func messages(n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat(`{"role":"user","content":"x"},`, n), ",") + "]"
}

// manyKeys returns an object with model, n distinct keys k0... and, if extra is
// not empty, the member extra last.
func manyKeys(n int, extra string) string {
	var b strings.Builder
	b.WriteString(`{"model":"m"`)
	for i := range n {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	if extra != "" {
		b.WriteString("," + extra)
	}
	return b.String() + "}"
}

func TestScanRequestErrorMessages(t *testing.T) {
	tests := []struct {
		body string
		want string
	}{
		{`{"model":"a","model":"b"}`, "duplicate key 'model'"},
		{`{"model":"m","api_base":"http://x"}`, "the request may not choose the upstream: 'api_base' is not accepted"},
		{`{"model":"m","x":` + nest(80) + `}`, ErrTooDeep.Error()},
		{`{"model":"m","messages":` + messages(3000) + `}`, "'messages' may hold at most 2048 entries"},
	}
	for _, tt := range tests {
		var r Request
		err := ScanRequest([]byte(tt.body), &r)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ScanRequest(%.40q...) error = %v, want %q", tt.body, err, tt.want)
		}
	}
}

// TestScanRequestAgreesWithEncodingJSON: on well-formed input within the limits,
// the validator accepts exactly what encoding/json accepts.
func TestScanRequestAgreesWithEncodingJSON(t *testing.T) {
	bodies := []string{
		`{"model":"m","n":-0.5e10,"x":[true,false,null,{},[],""],"s":"\u00e9\n\t\/"}`,
		`{"model":"m","n":1E5}`, `{"model":"m","n":-0}`, `{"model":"m","n":0.0}`,
		`{"model":"m","n":+1}`, `{"model":"m","n":.5}`, `{"model":"m","n":0x10}`,
		`{"model":"m","x":[1,]}`, `{"model":"m","x":[,1]}`, `{"model":"m","x":{"a"}}`,
		`{"model":"m","x":tru}`, `{"model":"m","x":"\ud800"}`, "{\"model\":\"m\"}\n\t ",
	}
	for _, body := range bodies {
		var r Request
		err := ScanRequest([]byte(body), &r)
		if got, want := err == nil, json.Valid([]byte(body)); got != want {
			t.Errorf("ScanRequest(%s) accepted = %v (err %v), encoding/json Valid = %v", body, got, err, want)
		}
	}
}

// TestScanRequestBombs: the bodies a hostile client sends to burn CPU or memory
// are refused quickly; 10 MB in well under the 100 ms the gateway allows itself.
func TestScanRequestBombs(t *testing.T) {
	const size = 10 << 20
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"deep arrays", []byte(strings.Repeat("[", size)), ErrTooDeep},
		{"deep objects", []byte(`{"model":"m","x":` + strings.Repeat(`{"a":`, size/5)), ErrTooDeep},
		{"huge messages", []byte(`{"model":"m","messages":[` + strings.Repeat(`{},`, size/3) + `{}]}`), ErrTooManyMessages},
		{"huge other array", []byte(`{"model":"m","x":[` + strings.Repeat(`0,`, size/2) + `0],"api_key":"k"}`), ErrUpstreamOverride},
		{"huge string with a bad byte at the end", []byte(`{"model":"m","x":"` + strings.Repeat("a", size) + "\xff\"}"), ErrInvalidUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			start := time.Now()
			err := ScanRequest(tt.body, &r)
			took := time.Since(start)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			// Generous for -race and a loaded CI machine; without them it is a few ms.
			if took > time.Second {
				t.Errorf("refusing a %d-byte bomb took %s", len(tt.body), took)
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

// BenchmarkScanBomb measures the refusal of a 10 MB body that is valid JSON up to
// its last byte; the validator reads all of it, so this is the worst case.
func BenchmarkScanBomb(b *testing.B) {
	body := []byte(`{"model":"m","x":[` + strings.Repeat(`"abc",1.5,{"k":[true]},`, 10<<20/22) + `0],"api_key":"k"}`)
	var r Request
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ScanRequest(body, &r); !errors.Is(err, ErrUpstreamOverride) {
			b.Fatal(err)
		}
	}
}
