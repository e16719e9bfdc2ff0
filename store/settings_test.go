package store

import (
	"maps"
	"testing"
)

func TestSettings(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	steps := []struct {
		name string
		do   func() error
		want map[string]string
	}{
		{"empty", func() error { return nil }, map[string]string{}},
		{"set", func() error { return s.SetSetting(ctx, "LLM_PROXY_WORKERS", "4") }, map[string]string{"LLM_PROXY_WORKERS": "4"}},
		{"overwrite", func() error { return s.SetSetting(ctx, "LLM_PROXY_WORKERS", "8") }, map[string]string{"LLM_PROXY_WORKERS": "8"}},
		{"second key", func() error { return s.SetSetting(ctx, "LLM_PROXY_LOG_LEVEL", "debug") },
			map[string]string{"LLM_PROXY_WORKERS": "8", "LLM_PROXY_LOG_LEVEL": "debug"}},
		{"empty value", func() error { return s.SetSetting(ctx, "LLM_PROXY_LOG_LEVEL", "") },
			map[string]string{"LLM_PROXY_WORKERS": "8", "LLM_PROXY_LOG_LEVEL": ""}},
		{"delete", func() error { return s.DeleteSetting(ctx, "LLM_PROXY_WORKERS") }, map[string]string{"LLM_PROXY_LOG_LEVEL": ""}},
		{"delete missing", func() error { return s.DeleteSetting(ctx, "LLM_PROXY_WORKERS") }, map[string]string{"LLM_PROXY_LOG_LEVEL": ""}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := s.Settings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, st.want) {
			t.Errorf("after %s: Settings() = %v, want %v", st.name, got, st.want)
		}
	}
	if err := s.SetSetting(ctx, "", "x"); err == nil {
		t.Error("SetSetting with an empty key succeeded")
	}
}
