package main

import (
	"strings"
	"testing"
)

// TestUpstreamsAddAddressPolicy: `upstreams add` refuses a base URL whose literal address
// the configured LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS policy forbids (exit 2, a message that
// names the address), stores nothing for it, and accepts what the policy allows.
func TestUpstreamsAddAddressPolicy(t *testing.T) {
	tests := []struct {
		policy  string // LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS; "" leaves the default (loopback)
		baseURL string
		want    string // a stderr substring when refused; "" when accepted
	}{
		{"", "http://169.254.169.254/latest/meta-data", "169.254.169.254"},
		{"", "http://[fd00:ec2::254]/v1", "fd00:ec2::254"},
		{"", "http://10.0.0.1:8000/v1", "10.0.0.1"},
		{"", "http://192.168.1.20/v1", "192.168.1.20"},
		{"", "http://[::ffff:10.1.2.3]/v1", "10.1.2.3"},
		{"", "http://0xa000001/v1", "10.0.0.1"},
		{"", "http://0.0.0.0:8000/v1", "0.0.0.0"},
		{"", "http://user:pass@api.example.com/v1", "user:password@"},
		{"", "gopher://api.example.com/v1", "http:// or https://"},
		{"", "http://127.0.0.1:11434/v1", ""},
		{"", "http://127.1:11434/v1", ""},
		{"", "https://api.example.com/v1", ""},
		{"false", "http://127.0.0.1:11434/v1", "127.0.0.1"},
		{"false", "http://0x7f000001/v1", "127.0.0.1"},
		{"true", "http://10.0.0.1:8000/v1", ""},
		{"sometimes", "https://api.example.com/v1", "ALLOW_PRIVATE_UPSTREAMS"},
	}
	for _, tt := range tests {
		t.Run(tt.policy+" "+tt.baseURL, func(t *testing.T) {
			c := newCLIEnv(t)
			if tt.policy != "" {
				c.env = append(c.env, "LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS="+tt.policy)
			}
			c.mustRun("migrate")
			res := c.run("upstreams", "add", "--name", "u", "--base-url", tt.baseURL)
			list := c.mustRun("upstreams", "list", "--json").stdout
			stored := strings.Contains(list, `"name":"u"`) || strings.Contains(list, `"name": "u"`)
			if tt.want == "" {
				if res.code != 0 || !stored {
					t.Errorf("exit %d, stored %v, stderr %q; want exit 0 and the upstream stored", res.code, stored, res.stderr)
				}
				return
			}
			if res.code != exitUsage || !strings.Contains(res.stderr, tt.want) {
				t.Errorf("exit %d stderr %q; want exit %d and %q", res.code, res.stderr, exitUsage, tt.want)
			}
			if stored {
				t.Errorf("a refused upstream was stored: %s", list)
			}
		})
	}
}
