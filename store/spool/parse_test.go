package spool

import (
	"encoding/json"
	"testing"
)

// TestParseFastMatchesJSON checks the fast path against encoding/json on lines it
// accepts, and that it declines (so the json fallback decides) lines it cannot read.
func TestParseFastMatchesJSON(t *testing.T) {
	plain := typicalRecord()
	escaped := typicalRecord()
	escaped.Model = "gpt-4o \"quoted\"\n"
	attempts := typicalRecord()
	attempts.Attempts = `[{"upstream":"openai","status":503,"error":"a \\ b / c\td"},{"upstream":"azure","status":200}]`
	unicode := typicalRecord()
	unicode.Model = "gpt\x01-4o"
	negative := typicalRecord()
	negative.KeyID = -1
	tests := []struct {
		name     string
		line     []byte
		wantFast bool
	}{
		{"plain", AppendRecord(nil, &plain), true},
		{"plain without newline", AppendRecord(nil, &plain)[:len(AppendRecord(nil, &plain))-1], true},
		{"negative number", AppendRecord(nil, &negative), true},
		{"escaped string", AppendRecord(nil, &escaped), true},
		{"attempts JSON in a string", AppendRecord(nil, &attempts), true},
		{"unicode escape", AppendRecord(nil, &unicode), false},
		{"reordered keys", []byte(`{"ts_ms":1,"request_id":"a"}`), false},
		{"trailing garbage", append(AppendRecord(nil, &plain)[:len(AppendRecord(nil, &plain))-1], 'x'), false},
		{"truncated", AppendRecord(nil, &plain)[:40], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Record
			if ok := parseFast(tt.line, &got, false); ok != tt.wantFast {
				t.Fatalf("parseFast ok = %v, want %v", ok, tt.wantFast)
			}
			if !tt.wantFast {
				return
			}
			var want Record
			if err := json.Unmarshal(tt.line, &want); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("parseFast = %+v, want %+v", got, want)
			}
			var shared Record
			if !parseFast(tt.line, &shared, true) || shared != want {
				t.Errorf("parseFast shared = %+v, want %+v", shared, want)
			}
		})
	}
}

// TestParseRecordShared: the shared parse's strings are line's bytes (so line must
// outlive the record), ParseRecord's are copies.
func TestParseRecordShared(t *testing.T) {
	r := typicalRecord()
	line := AppendRecord(nil, &r)
	copied, err := ParseRecord(line)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := ParseRecordShared(line)
	if err != nil {
		t.Fatal(err)
	}
	if shared != copied {
		t.Fatalf("shared %+v, copied %+v", shared, copied)
	}
	i := len(`{"request_id":"`)
	line[i] = 'Z'
	if copied.RequestID != r.RequestID {
		t.Errorf("ParseRecord's request id changed with the line: %q", copied.RequestID)
	}
	if want := "Z" + r.RequestID[1:]; shared.RequestID != want {
		t.Errorf("shared request id = %q, want %q (the line's bytes)", shared.RequestID, want)
	}
}

func BenchmarkParseRecord(b *testing.B) {
	r := typicalRecord()
	line := AppendRecord(nil, &r)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRecord(line); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRecordShared(b *testing.B) {
	r := typicalRecord()
	line := AppendRecord(nil, &r)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRecordShared(line); err != nil {
			b.Fatal(err)
		}
	}
}

// A proxied request's record carries its attempts as JSON inside a string: the
// fast path must take it (encoding/json, the fallback, is the baseline here).
func BenchmarkParseRecordAttempts(b *testing.B) {
	r := typicalRecord()
	r.Attempts = `[{"upstream":"mock","deployment":"mock-1","status":200,"latency_us":812}]`
	line := AppendRecord(nil, &r)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseRecord(line); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got Record
			if err := json.Unmarshal(line, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}
