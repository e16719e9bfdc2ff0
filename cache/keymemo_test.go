package cache

import (
	"fmt"
	"strings"
	"testing"
)

// TestKeyMemo: the memo answers exactly what NewKey answers, for repeats, for requests
// that differ in one field only, for bodies that share a slot, and past the size limit.
func TestKeyMemo(t *testing.T) {
	m := newKeyMemo()
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	cases := []struct{ ns, ep, model, body string }{
		{"key:1", "chat", "gpt-4o", body},
		{"key:1", "chat", "gpt-4o", body}, // a repeat: from the memo
		{"key:2", "chat", "gpt-4o", body},
		{"key:1", "completions", "gpt-4o", body},
		{"key:1", "chat", "gpt-4o-mini", body},
		{"key:1", "chat", "gpt-4o", `{"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o"}`},
		{"key:1", "chat", "gpt-4o", `{"model":"gpt-4o","messages":[{"role":"user","content":"ho"}]}`},
		{"key:1", "chat", "gpt-4o", `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", keyMemoMaxBody) + `"}]}`},
	}
	for i, c := range cases {
		want, werr := NewKey(c.ns, c.ep, c.model, []byte(c.body))
		got, err := m.key([]byte(c.ns), c.ep, c.model, []byte(c.body))
		if got != want || (err == nil) != (werr == nil) {
			t.Errorf("case %d: memo %x %v, NewKey %x %v", i, got, err, want, werr)
		}
	}
	// Many distinct bodies: every slot is overwritten several times, and each answer
	// still matches NewKey, before and after its slot was reused.
	for round := range 2 {
		for i := range 3 * keyMemoSlots {
			b := []byte(fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"%d"}]}`, i))
			want, _ := NewKey("ns", "chat", "m", b)
			if got, err := m.key([]byte("ns"), "chat", "m", b); err != nil || got != want {
				t.Fatalf("round %d body %d: memo %x %v, want %x", round, i, got, err, want)
			}
		}
	}
	if _, err := m.key([]byte("ns"), "chat", "m", []byte(`[1,2]`)); err == nil {
		t.Error("a body that is not an object: no error")
	}
}

// TestKeyMemoBodyIsCopied: the memo keeps its own copy; a caller reusing its buffer for
// another body must not turn a remembered entry into a wrong answer.
func TestKeyMemoBodyIsCopied(t *testing.T) {
	m := newKeyMemo()
	buf := []byte(`{"model":"m","messages":[{"role":"user","content":"aaaa"}]}`)
	first, _ := m.key([]byte("ns"), "chat", "m", buf)
	copy(buf[len(buf)-8:], `bbbb"}]}`)
	second, _ := m.key([]byte("ns"), "chat", "m", buf)
	if want, _ := NewKey("ns", "chat", "m", buf); second != want || second == first {
		t.Errorf("after the caller's buffer changed: %x, want %x (not the first body's %x)", second, want, first)
	}
}

func BenchmarkKeyMemoHit(b *testing.B) {
	m := newKeyMemo()
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence."}],"temperature":0.2,"stream":false}`)
	ns := []byte("key:42")
	if _, err := m.key(ns, "chat", "gpt-4o-mini", body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.key(ns, "chat", "gpt-4o-mini", body); err != nil {
			b.Fatal(err)
		}
	}
}
