package cache

import (
	"testing"
	"time"
)

// GetAppend answers like Get, copies the body into the caller's buffer and, for a
// model seen before, allocates nothing: it is every L1 hit's lookup.
func TestL1GetAppend(t *testing.T) {
	l := NewL1(8)
	now := time.Now()
	var k, missing Key
	k[0], missing[0] = 1, 2
	want := Entry{Body: []byte(`{"id":"chatcmpl-1","choices":[]}`), Model: "gpt-4o-2024-08-06", Namespace: "key:key:7",
		PromptTokens: 12, CompletionTokens: 34, Created: now.Add(-time.Second).Truncate(time.Millisecond),
		Expires: now.Add(time.Minute).Truncate(time.Millisecond)}
	if err := l.Set(k, want, now); err != nil {
		t.Fatal(err)
	}
	dst := append(make([]byte, 0, 256), "prefix:"...)
	got, out, ok := l.GetAppend(k, now, dst)
	if !ok {
		t.Fatal("entry not found")
	}
	if string(out) != "prefix:"+string(want.Body) {
		t.Errorf("body = %q, want the prefix and the entry's body", out)
	}
	if got.Model != want.Model || got.PromptTokens != want.PromptTokens || got.CompletionTokens != want.CompletionTokens ||
		!got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) || got.Body != nil {
		t.Errorf("entry = %+v, want %+v without body", got, want)
	}
	if _, out, ok := l.GetAppend(missing, now, dst[:0]); ok || len(out) != 0 {
		t.Error("a missing key was found")
	}
	if _, _, ok := l.GetAppend(k, want.Expires, dst[:0]); ok {
		t.Error("an entry was served at its expiry time")
	}
	allocs := testing.AllocsPerRun(100, func() {
		_, dst, ok = l.GetAppend(k, now, dst[:0])
		if !ok {
			t.Fatal("entry not found")
		}
	})
	if allocs != 0 {
		t.Errorf("an L1 hit allocates %.1f times, want 0", allocs)
	}
}

func BenchmarkL1Hit(b *testing.B) {
	l := NewL1(8)
	now := time.Now()
	var k Key
	k[0] = 1
	body := make([]byte, 600)
	if err := l.Set(k, Entry{Body: body, Model: "gpt-4o", Expires: now.Add(time.Hour)}, now); err != nil {
		b.Fatal(err)
	}
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := l.Get(k, now); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("GetAppend", func(b *testing.B) {
		dst := make([]byte, 0, 4096)
		b.ReportAllocs()
		for b.Loop() {
			var ok bool
			if _, dst, ok = l.GetAppend(k, now, dst[:0]); !ok {
				b.Fatal("miss")
			}
		}
	})
}
