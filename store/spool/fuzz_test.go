package spool

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseRecord: ParseRecord never panics on a corrupt spool line; a line it
// accepts has a request id and reads the same as encoding/json reads it (the fast
// path and the fallback agree); and every Record survives AppendRecord then
// ParseRecord unchanged, whatever its strings hold.
func FuzzParseRecord(f *testing.F) {
	typical := typicalRecord()
	escaped := typicalRecord()
	escaped.Model = "gpt \"4o\"\n\\"
	escaped.Attempts = `[{"upstream":"a","status":502}]`
	for _, r := range []Record{typical, escaped, {RequestID: "r"}, {RequestID: "r", TsMs: -1, KeyID: 1<<63 - 1}} {
		line := AppendRecord(nil, &r)
		f.Add(line, r.Model, r.TsMs, r.Stream)
		f.Add(line[:len(line)/2], "", int64(0), false)
	}
	f.Add([]byte(`{"ts_ms":1,"request_id":"a"}`), "m", int64(1), true)
	f.Add([]byte(`{"request_id":"a","ts_ms":01}`), "", int64(0), false)
	zero := AppendRecord(nil, &Record{RequestID: "r", TsMs: 5})
	f.Add([]byte(strings.Replace(string(zero), `"ts_ms":5`, `"ts_ms":05`, 1)), "", int64(0), false)
	f.Add([]byte(strings.Replace(string(zero), `"ts_ms":5`, `"ts_ms":-0`, 1)), "", int64(0), false)
	f.Add([]byte(`{"request_id":"a","ts_ms":99999999999999999999}`), "", int64(0), false)
	f.Add([]byte("{\"request_id\":\"\xff\"}"), "\xff", int64(-5), false)
	bad := AppendRecord(nil, &Record{RequestID: "r", Model: "MODEL"})
	f.Add([]byte(strings.Replace(string(bad), "MODEL", "a\xffb", 1)), "", int64(0), false)
	f.Add([]byte(`null`), "", int64(0), false)
	f.Add([]byte(``), "", int64(0), false)

	f.Fuzz(func(t *testing.T, line []byte, s string, n int64, b bool) {
		got, err := ParseRecord(line)
		if err == nil {
			if got.RequestID == "" {
				t.Fatalf("ParseRecord(%q) accepted a record without request_id", line)
			}
			var want Record
			if jerr := json.Unmarshal(line, &want); jerr != nil {
				t.Fatalf("ParseRecord accepted %q, which encoding/json refuses: %v", line, jerr)
			} else if got != want {
				t.Fatalf("ParseRecord(%q) = %+v, encoding/json reads %+v", line, got, want)
			}
		}
		if shared, serr := ParseRecordShared(line); (serr == nil) != (err == nil) || shared != got {
			t.Fatalf("ParseRecordShared(%q) = %+v, %v; ParseRecord %+v, %v", line, shared, serr, got, err)
		}

		in := Record{RequestID: "id-" + s, TsMs: n, Worker: int(n % 1000), KeyID: -n, Model: s, Upstream: s,
			Status: int(n & 0x3ff), Stream: b, LatencyUs: n, ErrorClass: s, Attempts: s, Route: s, CostMicroUSD: n}
		out, err := ParseRecord(AppendRecord(nil, &in))
		if err != nil {
			t.Fatalf("ParseRecord(AppendRecord(%+v)): %v", in, err)
		}
		if utf8.ValidString(s) && out != in {
			t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", out, in)
		}
	})
}
