//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation counts
// are only meaningful without it.

package openai

import "testing"

func TestAppendRewriteAllocs(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"stream":true}`)
	var r Request
	dst := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		if err := ScanRequest(body, &r); err != nil {
			t.Fatal(err)
		}
		dst = AppendRewrite(dst[:0], body, &r, "upstream-model", true)
	})
	if allocs != 0 {
		t.Errorf("ScanRequest+AppendRewrite allocate %.1f times per request, want 0", allocs)
	}
}
