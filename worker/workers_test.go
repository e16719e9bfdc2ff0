package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

func TestWorkersEndpointAuth(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, tc := range []struct {
		name, key string
		want      int
		code      string
	}{
		{"no key", "", http.StatusUnauthorized, "missing_api_key"},
		{"unknown key", "sk-nobody-0123456789abcdef", http.StatusUnauthorized, "invalid_api_key"},
		{"revoked key", keyRevoked, http.StatusUnauthorized, "invalid_api_key"},
		{"client key", keyAll, http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := h.do(t, http.MethodGet, "/api/workers", tc.key, "")
			if tc.want != http.StatusOK {
				checkError(t, resp, body, tc.want, tc.code)
				return
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
		})
	}
}

func TestWorkersEndpointListsWorkersAndPrimary(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Empty: no worker rows, a free lease.
	got := getWorkers(t, h)
	if want := (workersJSON{Workers: []workerJSON{}}); !reflect.DeepEqual(got, want) {
		t.Errorf("empty database: got %+v, want %+v", got, want)
	}

	started := time.Unix(1_700_000_000, 0)
	beat := time.Now().Add(-3 * time.Second)
	rows := []store.WorkerRow{
		{ID: "0-100-1", Slot: 0, PID: 100, StartedAt: started, BeatAt: beat, Role: "primary", Version: "v1", Stats: `{"requests":5,"in_flight":1}`},
		{ID: "1-200-2", Slot: 1, PID: 200, StartedAt: started, BeatAt: beat, Role: "worker", Version: "v2", Stats: "not json"},
	}
	for _, r := range rows {
		if err := h.st.Heartbeat(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Unix(1_700_000_100, 0)
	if _, won, err := h.st.TryAcquire(ctx, "0-100-1", 100, -1, since); err != nil || !won {
		t.Fatalf("TryAcquire: won %t, %v", won, err)
	}

	got = getWorkers(t, h)
	startedText := started.UTC().Format(time.RFC3339)
	want := workersJSON{
		Workers: []workerJSON{
			{ID: "0-100-1", Slot: 0, PID: 100, Role: "primary", Started: startedText, BeatAge: 3, Version: "v1",
				Stats: json.RawMessage(`{"requests":5,"in_flight":1}`)},
			{ID: "1-200-2", Slot: 1, PID: 200, Role: "worker", Started: startedText, BeatAge: 3, Version: "v2",
				Stats: json.RawMessage(`"not json"`)},
		},
		Primary: primaryJSON{Holder: "0-100-1", PID: 100, Epoch: 1, Since: since.UTC().Format(time.RFC3339)},
	}
	// The beat age is whole seconds of a clock that moved while the test ran.
	for i := range got.Workers {
		if age := got.Workers[i].BeatAge; age < 3 || age > 5 {
			t.Errorf("worker %d: last_beat_age_seconds = %v, want about 3", i, age)
		}
		got.Workers[i].BeatAge = 3
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// getWorkers asks GET /api/workers with a client key and decodes the answer.
func getWorkers(t *testing.T, h *harness) workersJSON {
	t.Helper()
	resp, body := h.do(t, http.MethodGet, "/api/workers", keyAll, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/workers: status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var out workersJSON
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if out.Workers == nil {
		t.Errorf("workers is null in %s, want a list", body)
	}
	return out
}
