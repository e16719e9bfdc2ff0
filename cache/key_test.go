package cache

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func mustKey(t testing.TB, ns, ep, model, body string) Key {
	t.Helper()
	k, err := NewKey(ns, ep, model, []byte(body))
	if err != nil {
		t.Fatalf("NewKey(%s): %v", body, err)
	}
	return k
}

func TestKeyEquivalentRequests(t *testing.T) {
	base := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.7,"max_tokens":100}`
	same := []string{
		`{"messages":[{"content":"hi","role":"user"}],"max_tokens":100,"temperature":0.7,"model":"gpt-4o"}`,
		"{\n  \"model\": \"gpt-4o\",\n  \"messages\": [ { \"role\": \"user\", \"content\": \"hi\" } ],\n  \"temperature\": 0.70, \"max_tokens\": 1e2\n}",
		`{"model":"other-alias","messages":[{"role":"user","content":"hi"}],"temperature":0.7,"max_tokens":100.0}`,
		`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"user":"u1","messages":[{"role":"user","content":"hi"}],"temperature":0.7,"max_tokens":100}`,
		`{"model":"gpt-4o","messages":[{"role":"user","content":"\u0068\u0069"}],"temperature":7e-1,"max_tokens":100,"metadata":{"a":"b"}}`,
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.7,"max_tokens":100,"seed":null}`,
	}
	want := mustKey(t, "key:1", "chat", "gpt-4o", base)
	for _, body := range same {
		if got := mustKey(t, "key:1", "chat", "gpt-4o", body); got != want {
			t.Errorf("key of %s differs from the base request", body)
		}
	}
}

func TestKeyDifferentRequests(t *testing.T) {
	base := `{"messages":[{"role":"user","content":"hi"}],"temperature":0.7}`
	k0 := mustKey(t, "key:1", "chat", "gpt-4o", base)
	tests := []struct {
		name, ns, ep, model, body string
	}{
		{"namespace", "key:2", "chat", "gpt-4o", base},
		{"endpoint", "key:1", "completions", "gpt-4o", base},
		{"model", "key:1", "chat", "gpt-4o-mini", base},
		{"content", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi!"}],"temperature":0.7}`},
		{"role", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"system","content":"hi"}],"temperature":0.7}`},
		{"temperature", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":0.8}`},
		{"seed", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"seed":1}`},
		{"big seed", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"seed":9007199254740993}`},
		{"tools", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"tools":[]}`},
		{"response_format", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"response_format":{"type":"json_object"}}`},
		{"unknown field", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"reasoning_effort":"high"}`},
		{"message order", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`},
		{"string vs number", "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}],"temperature":"0.7"}`},
		{"split fields", "key:1ch", "at", "gpt-4o", base},
	}
	seen := map[Key]string{k0: "base"}
	for _, tt := range tests {
		k := mustKey(t, tt.ns, tt.ep, tt.model, tt.body)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s", tt.name, prev)
		}
		seen[k] = tt.name
	}
	a := mustKey(t, "", "chat", "m", `{"seed":9007199254740993}`)
	b := mustKey(t, "", "chat", "m", `{"seed":9007199254740992}`)
	if a == b {
		t.Error("seeds beyond 2^53 collide")
	}
}

func TestKeyErrors(t *testing.T) {
	for _, body := range []string{``, `[]`, `"x"`, `{"a":}`, `{"a":1`, `{"a":1} x`, `{"a":"\q"}`, `{"a":01}`, `{"a":tru}`,
		`{"a":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`} {
		if _, err := NewKey("", "chat", "m", []byte(body)); err == nil {
			t.Errorf("NewKey(%q) accepted", body)
		}
	}
	k := mustKey(t, "", "chat", "m", `{}`)
	if len(k.String()) != 32 {
		t.Errorf("String() = %q", k.String())
	}
}

func TestEntryEncoding(t *testing.T) {
	e := Entry{Body: []byte(`{"id":"x"}`), Model: "gpt-4o", Namespace: "key:7", PromptTokens: 12, CompletionTokens: 34,
		Created: time.UnixMilli(1_700_000_000_123), Expires: time.UnixMilli(1_700_003_600_123)}
	got, err := decodeEntry(appendEntry(nil, e))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Body, e.Body) || got.Model != e.Model || got.Namespace != e.Namespace || got.PromptTokens != 12 ||
		got.CompletionTokens != 34 || !got.Created.Equal(e.Created) || !got.Expires.Equal(e.Expires) || got.TTL() != time.Hour {
		t.Fatalf("round trip = %+v", got)
	}
	for _, bad := range [][]byte{nil, {9}, {entryVersion, 0x80}, appendEntry(nil, e)[:8]} {
		if _, err := decodeEntry(bad); err == nil {
			t.Errorf("decodeEntry(%v) accepted", bad)
		}
	}
}

func TestL1(t *testing.T) {
	l := NewL1(1)
	now := time.Unix(1_700_000_000, 0)
	k := mustKey(t, "", "chat", "m", `{"a":1}`)
	e := Entry{Body: []byte("body"), Model: "m", Created: now, Expires: now.Add(time.Minute)}
	if _, ok := l.Get(k, now); ok {
		t.Fatal("hit on an empty cache")
	}
	if err := l.Set(k, e, now); err != nil {
		t.Fatal(err)
	}
	got, ok := l.Get(k, now.Add(59*time.Second))
	if !ok || string(got.Body) != "body" {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
	if _, ok := l.Get(k, now.Add(time.Minute)); ok {
		t.Error("served at its expiry")
	}
	big := Entry{Body: bytes.Repeat([]byte("x"), 2<<20), Created: now, Expires: now.Add(time.Minute)}
	if err := l.Set(k, big, now); err != ErrTooLarge {
		t.Errorf("Set(large) = %v, want ErrTooLarge", err)
	}
	if err := l.Set(k, Entry{Body: []byte("old"), Expires: now}, now); err != nil {
		t.Errorf("Set(expired) = %v", err)
	}
	if !l.Delete(k) || l.Delete(k) {
		t.Error("Delete did not report the entry once")
	}
	_ = l.Set(k, e, now)
	l.Clear()
	if _, ok := l.Get(k, now); ok || l.Len() != 0 {
		t.Error("entry survived Clear")
	}
}

var benchBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},` +
	`{"role":"user","content":"What is the capital of France, and what is it famous for? Answer in two sentences."}],` +
	`"temperature":0.2,"max_tokens":256,"stream":false,"user":"customer-42"}`)

func BenchmarkKey(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		if _, err := NewKey("key:42", "chat", "gpt-4o-mini", benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkL1GetHit(b *testing.B) {
	l := NewL1(64)
	now := time.Now()
	k, _ := NewKey("key:42", "chat", "gpt-4o-mini", benchBody)
	body := bytes.Repeat([]byte("x"), 1200)
	if err := l.Set(k, Entry{Body: body, Model: "gpt-4o-mini", Created: now, Expires: now.Add(time.Hour)}, now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := l.Get(k, now); !ok {
			b.Fatal("miss")
		}
	}
}

// FuzzKey: every JSON object gets a key, and whitespace never changes it (json.Compact
// and json.Indent keep every token, duplicates and number spellings included).
func FuzzKey(f *testing.F) {
	f.Add(string(benchBody))
	f.Add(`{"model":"m","messages":[{"role":"user","content":"a\"b\\\\c\u00e9"}],"n":1e2,"x":[[],{}],"y":null}`)
	f.Add(`{"a":1,"a":2,"b":{"c":[true,false,null,-0.5]}}`)
	f.Fuzz(func(t *testing.T, body string) {
		in := []byte(body)
		k1, err := NewKey("key:1", "chat", "m", in)
		if !json.Valid(in) {
			return
		}
		var probe any
		if json.Unmarshal(in, &probe) != nil {
			return
		}
		if _, isObject := probe.(map[string]any); !isObject || strings.Count(body, "[")+strings.Count(body, "{") > maxDepth {
			return
		}
		if err != nil {
			t.Fatalf("NewKey(%q): %v", body, err)
		}
		var compact, indented bytes.Buffer
		if err := json.Compact(&compact, in); err != nil {
			t.Fatal(err)
		}
		if err := json.Indent(&indented, in, " ", "\t"); err != nil {
			t.Fatal(err)
		}
		for _, v := range [][]byte{compact.Bytes(), indented.Bytes()} {
			k2, err := NewKey("key:1", "chat", "m", v)
			if err != nil || k2 != k1 {
				t.Fatalf("key of %q differs from the key of %q (%v)", v, body, err)
			}
		}
	})
}
