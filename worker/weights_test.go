package worker

import (
	"net/http"
	"testing"

	"github.com/llm-proxy/llm-proxy/store"
)

// TestUpstreamAndDeploymentWeights: the store documents weight 0 as "takes no
// traffic" for both upstreams and deployments; positive upstream weights set the
// shares of one model's deployments.
func TestUpstreamAndDeploymentWeights(t *testing.T) {
	row := func(name string, upWeight, depWeight int) func(*fakeUpstream) store.Upstream {
		return func(up *fakeUpstream) store.Upstream {
			return store.Upstream{Name: name, BaseURL: up.URL(), Weight: upWeight, Enabled: true,
				Deployments: []store.Deployment{{PublicModel: "m", UpstreamModel: "m", Weight: depWeight}}}
		}
	}
	rows := []func(*fakeUpstream) store.Upstream{
		row("three", 3, 1),
		row("one", 1, 1),
		row("drained-deployment", 1, 0),
		row("drained-upstream", 0, 1),
	}
	h := newHarness(t, harnessOptions{upstreams: func(up *fakeUpstream) []store.Upstream {
		var ups []store.Upstream
		for _, r := range rows {
			ups = append(ups, r(up))
		}
		return ups
	}})
	const n = 200
	got := map[string]int{}
	for range n {
		resp, body := h.chat(t, keyAll, `{"model":"m","messages":[]}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got[resp.Header.Get("X-LLM-Proxy-Upstream")]++
	}
	want := map[string]int{"three": 150, "one": 50}
	for name, w := range want {
		if d := got[name] - w; d < -10 || d > 10 {
			t.Errorf("upstream %s served %d of %d, want about %d", name, got[name], n, w)
		}
	}
	for _, name := range []string{"drained-deployment", "drained-upstream"} {
		if got[name] != 0 {
			t.Errorf("weight-0 %s served %d requests, want 0", name, got[name])
		}
	}
}
