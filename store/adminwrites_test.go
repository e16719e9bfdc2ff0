package store

import (
	"slices"
	"testing"
)

// TestUpdateUpstreamKeepsDeploymentTuning: an edit of the upstream's own fields that
// passes back the deployments it listed keeps their priority and max concurrency.
func TestUpdateUpstreamKeepsDeploymentTuning(t *testing.T) {
	s := openTestStore(t, testConfig(t), testBox(t, "the-right-secret-key"))
	ctx := testContext(t)
	id, err := s.AddUpstream(ctx, Upstream{Name: "primary", BaseURL: "https://a.example.test/v1", Weight: 1, Enabled: true,
		Deployments: []Deployment{
			{PublicModel: "gpt", UpstreamModel: "gpt-4o", Weight: 3, Priority: 2, MaxConcurrent: 7},
			{PublicModel: "mini", Weight: 1, Priority: 1},
		}})
	if err != nil {
		t.Fatal(err)
	}
	ups, err := s.ListUpstreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u := ups[0]
	want := slices.Clone(u.Deployments)
	u.Name, u.BaseURL, u.Weight = "renamed", "https://b.example.test/v1", 5
	if err := s.UpdateUpstream(ctx, id, u, true); err != nil {
		t.Fatal(err)
	}
	ups, err = s.ListUpstreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := ups[0]
	if got.Name != "renamed" || got.BaseURL != "https://b.example.test/v1" || got.Weight != 5 {
		t.Errorf("upstream = %+v, want the edit applied", got)
	}
	if !slices.Equal(got.Deployments, want) {
		t.Errorf("deployments = %+v, want %+v", got.Deployments, want)
	}

	// Given values are written too, and a negative cap is refused.
	u = got
	u.Deployments[0].Priority, u.Deployments[0].MaxConcurrent = 0, 0
	if err := s.UpdateUpstream(ctx, id, u, true); err != nil {
		t.Fatal(err)
	}
	ups, _ = s.ListUpstreams(ctx)
	if d := ups[0].Deployments[0]; d.Priority != 0 || d.MaxConcurrent != 0 {
		t.Errorf("after clearing: %+v, want priority 0 and no cap", d)
	}
	u.Deployments[0].MaxConcurrent = -1
	if err := s.UpdateUpstream(ctx, id, u, true); err == nil {
		t.Error("negative max concurrent accepted")
	}
}
