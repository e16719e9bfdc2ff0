package worker

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

// FuzzAuthenticate: the Authorization header parser never panics on any bytes a
// client sends, accepts a header only when it is "Bearer " (any case) followed by
// exactly a stored key (surrounding spaces aside), and accepts every well-formed
// header carrying that key.
func FuzzAuthenticate(f *testing.F) {
	for _, h := range []string{
		"Bearer sk-live", "bearer sk-live", "BEARER  sk-live  ", "Bearer", "Bearer ", "Bearer\tsk-live",
		"Basic c2stbGl2ZQ==", "sk-live", "", "Bearer sk-live\r\nX-Evil: 1", "Bearer sk-liv", "Bearer sk-live\x00",
		"Bearer \xff\xfe", "Bearer Bearer sk-live",
	} {
		f.Add([]byte(h), "sk-live")
	}
	f.Add([]byte("Bearer  x "), "x")
	f.Add([]byte("Bearer sk-ünï"), "sk-ünï")

	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, header []byte, key string) {
		if len(bytes.TrimSpace([]byte(key))) != len(key) || key == "" {
			key = "sk-live"
		}
		snap := newKeySnapshot([]store.APIKey{{ID: 7, Name: "k", Hash: sha256.Sum256([]byte(key))}}, Config{})

		e, res := snap.authenticate(header, now)
		if res == authOK {
			if e == nil || e.id != 7 {
				t.Fatalf("authenticate(%q) accepted with entry %+v", header, e)
			}
			if len(header) < 7 || !bytes.EqualFold(header[:7], []byte("Bearer ")) ||
				string(bytes.TrimSpace(header[7:])) != key {
				t.Fatalf("authenticate(%q) accepted a header that is not Bearer %q", header, key)
			}
		}
		if res == authMissing && len(bytes.TrimSpace(header)) > len("Bearer") {
			t.Fatalf("authenticate(%q) = missing for a header with content", header)
		}
		if _, res := snap.authenticate([]byte("Bearer "+key), now); res != authOK {
			t.Fatalf("authenticate(Bearer %q) = %v, want OK", key, res)
		}
	})
}
