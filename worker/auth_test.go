package worker

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

const okChat = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

func TestAuthRefusals(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name     string
		auth     string // raw Authorization header; "" sends none
		code     string
		wantText string // in the message
	}{
		{"missing", "", "missing_api_key", "didn't provide"},
		{"empty bearer", "Bearer ", "missing_api_key", ""},
		{"wrong key", "Bearer sk-not-a-real-key", "invalid_api_key", "Incorrect"},
		{"basic scheme", "Basic " + keyAll, "invalid_api_key", ""},
		{"key without scheme", keyAll, "invalid_api_key", ""},
		{"expired", "Bearer " + keyExpired, "invalid_api_key", "expired"},
		{"revoked", "Bearer " + keyRevoked, "invalid_api_key", "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.auth != "" {
				hdr = []string{"Authorization", tt.auth}
			}
			for _, path := range []string{"/v1/chat/completions", "/v1/embeddings", "/v1/models"} {
				method, reqBody := http.MethodPost, okChat
				if path == "/v1/models" {
					method, reqBody = http.MethodGet, ""
				}
				resp, body := h.do(t, method, path, "", reqBody, hdr...)
				e := checkError(t, resp, body, http.StatusUnauthorized, tt.code)
				if !strings.Contains(e.Error.Message, tt.wantText) {
					t.Errorf("%s: message %q does not mention %q", path, e.Error.Message, tt.wantText)
				}
			}
		})
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests from refused keys, want 0", n)
	}
	// Case-insensitive scheme (RFC 9110 section 11.1) is accepted.
	resp, body := h.chat(t, "", okChat, "Authorization", "bearer "+keyAll)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lower-case bearer scheme: status %d, want 200 (%s)", resp.StatusCode, body)
	}
}

func TestRevokeReachesWorkerWithinOneSecond(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()

	// A key created after the worker started works within 1 s.
	const fresh = "sk-test-created-later-0123456789abcdef"
	id, err := h.st.CreateAPIKey(ctx, store.APIKey{Name: "later", Hash: sha256.Sum256([]byte(fresh)), Prefix: fresh[:10]})
	if err != nil {
		t.Fatal(err)
	}
	if took := pollStatus(t, h, fresh, http.StatusOK); took > time.Second {
		t.Errorf("a new key was accepted after %v, want < 1 s", took)
	}

	if err := h.st.RevokeAPIKey(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	took := pollStatus(t, h, fresh, http.StatusUnauthorized)
	if took > time.Second {
		t.Errorf("the revoked key was refused after %v, want < 1 s", took)
	}
	resp, body := h.chat(t, fresh, okChat)
	if e := checkError(t, resp, body, http.StatusUnauthorized, "invalid_api_key"); !strings.Contains(e.Error.Message, "revoked") {
		t.Errorf("message %q does not say the key was revoked", e.Error.Message)
	}
	// Other keys are unaffected.
	if resp, body := h.chat(t, keyAll, okChat); resp.StatusCode != http.StatusOK {
		t.Errorf("another key after the revoke: status %d (%s)", resp.StatusCode, body)
	}
}

// pollStatus sends chat requests with key until one answers want, and returns how
// long that took (failing after 3 s).
func pollStatus(t *testing.T, h *harness, key string, want int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		resp, _ := h.chat(t, key, okChat)
		if resp.StatusCode == want {
			return time.Since(start)
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("status still %d after 3 s, want %d", resp.StatusCode, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAuthenticateSnapshot(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	snap := newKeySnapshot([]store.APIKey{
		{ID: 1, Name: "a", Hash: sha256.Sum256([]byte("sk-a"))},
		{ID: 2, Name: "b", Hash: sha256.Sum256([]byte("sk-b")), ExpiresAt: now},
		{ID: 3, Name: "c", Hash: sha256.Sum256([]byte("sk-c")), ExpiresAt: now.Add(time.Second)},
		{ID: 4, Name: "d", Hash: sha256.Sum256([]byte("sk-d")), RevokedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Hour)},
		{ID: 5, Name: "e", Hash: sha256.Sum256([]byte("sk-e")), Models: []string{"m2", "m1"}},
	}, Config{})
	tests := []struct {
		header string
		id     int64
		want   authResult
	}{
		{"", 0, authMissing},
		{"Bearer    ", 0, authMissing},
		{"Bearer sk-a", 1, authOK},
		{"BEARER sk-a", 1, authOK},
		{"Bearer  sk-a ", 1, authOK},
		{"Token sk-a", 0, authInvalid},
		{"Bearer sk-a2", 0, authInvalid},
		{"Bearer sk-b", 2, authExpired}, // expires exactly now
		{"Bearer sk-c", 3, authOK},
		{"Bearer sk-d", 4, authRevoked}, // revocation wins over expiry
	}
	for _, tt := range tests {
		e, got := snap.authenticate([]byte(tt.header), now)
		if got != tt.want {
			t.Errorf("authenticate(%q) = %v, want %v", tt.header, got, tt.want)
		}
		if tt.id != 0 && (e == nil || e.id != tt.id) {
			t.Errorf("authenticate(%q) entry = %+v, want id %d", tt.header, e, tt.id)
		}
	}
	e, _ := snap.authenticate([]byte("Bearer sk-e"), now)
	for model, want := range map[string]bool{"m1": true, "m2": true, "m3": false, "": false} {
		if got := e.allows([]byte(model)); got != want {
			t.Errorf("allows(%q) = %v, want %v", model, got, want)
		}
	}
	if got := strings.Join(e.models.list, ","); got != "m1,m2" {
		t.Errorf("modelList = %q, want sorted m1,m2", got)
	}
	a, _ := snap.authenticate([]byte("Bearer sk-a"), now)
	if !a.allows([]byte("anything")) {
		t.Error("a key without an allow-list must allow every model")
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	snap, header := benchKeySnapshot(1000)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, res := snap.authenticate(header, now); res != authOK {
			b.Fatal(res)
		}
	}
}
