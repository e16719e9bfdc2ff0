package supervisor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// emitted is one re-emitted line as the supervisor's JSON logger wrote it.
type emitted struct {
	level, msg string
	args       map[string]any
}

func forwardAll(t *testing.T, input string) []emitted {
	t.Helper()
	var buf bytes.Buffer
	lg := hclog.New(&hclog.LoggerOptions{Name: "sup", Output: &buf, JSONFormat: true, Level: hclog.Trace})
	(&lineEmitter{log: lg.Named("worker-3"), pid: 42}).forward(strings.NewReader(input))
	var out []emitted
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad output line %q: %v", line, err)
		}
		if m["@module"] != "sup.worker-3" || m["pid"] != float64(42) {
			t.Errorf("line %q: module %v pid %v, want sup.worker-3 42", line, m["@module"], m["pid"])
		}
		e := emitted{level: m["@level"].(string), msg: m["@message"].(string), args: map[string]any{}}
		for k, v := range m {
			if !strings.HasPrefix(k, "@") && k != "pid" {
				e.args[k] = v
			}
		}
		out = append(out, e)
	}
	return out
}

func TestForwardLevelsAndCrashTraces(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []emitted
	}{
		{
			name:  "json at its own level with args",
			input: `{"@level":"warn","@message":"slow upstream","@module":"llm-proxy.worker","@timestamp":"2026-01-01T00:00:00Z","@caller":"x.go:1","upstream":"openai","ms":1234}` + "\n",
			want: []emitted{{"warn", "slow upstream", map[string]any{
				"upstream": "openai", "ms": float64(1234), "module": "llm-proxy.worker", "caller": "x.go:1"}}},
		},
		{
			name:  "every level",
			input: `{"@level":"trace","@message":"t"}` + "\n" + `{"@level":"debug","@message":"d"}` + "\n" + `{"@level":"ERROR","@message":"e"}` + "\n",
			want: []emitted{
				{"trace", "t", map[string]any{}},
				{"debug", "d", map[string]any{}},
				{"error", "e", map[string]any{}},
			},
		},
		{
			name:  "unknown level is info",
			input: `{"@level":"loud","@message":"m"}` + "\n",
			want:  []emitted{{"info", "m", map[string]any{}}},
		},
		{
			name:  "plain lines are info, blank lines dropped, CRLF trimmed",
			input: "hello\r\n\n   \nworld",
			want:  []emitted{{"info", "hello", map[string]any{}}, {"info", "world", map[string]any{}}},
		},
		{
			name:  "json that is not a log record is plain",
			input: `{"model":"gpt-4"}` + "\n" + `{"@message": broken` + "\n",
			want: []emitted{
				{"info", `{"model":"gpt-4"}`, map[string]any{}},
				{"info", `{"@message": broken`, map[string]any{}},
			},
		},
		{
			name:  "crash trace is error until the next json line",
			input: "before\npanic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:9 +0x1d\n" + `{"@level":"info","@message":"after"}` + "\nplain again\n",
			want: []emitted{
				{"info", "before", map[string]any{}},
				{"error", "panic: boom", map[string]any{}},
				{"error", "goroutine 1 [running]:", map[string]any{}},
				{"error", "main.main()", map[string]any{}},
				{"error", "\t/src/main.go:9 +0x1d", map[string]any{}},
				{"info", "after", map[string]any{}},
				{"info", "plain again", map[string]any{}},
			},
		},
		{
			name:  "fatal error starts a trace",
			input: "fatal error: concurrent map writes\n\ngoroutine 7 [running]:\n",
			want: []emitted{
				{"error", "fatal error: concurrent map writes", map[string]any{}},
				{"error", "goroutine 7 [running]:", map[string]any{}},
			},
		},
		{
			name:  "a worker's fatal error line",
			input: "llm-proxy: worker: pprof: listen tcp 127.0.0.1:6060: bind: address already in use\nsome other plain line\n",
			want: []emitted{
				{"error", "llm-proxy: worker: pprof: listen tcp 127.0.0.1:6060: bind: address already in use", map[string]any{}},
				{"info", "some other plain line", map[string]any{}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := forwardAll(t, tt.input)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.level != w.level || g.msg != w.msg || len(g.args) != len(w.args) {
					t.Errorf("line %d = %+v, want %+v", i, g, w)
					continue
				}
				for k, v := range w.args {
					if g.args[k] != v {
						t.Errorf("line %d arg %s = %v, want %v", i, k, g.args[k], v)
					}
				}
			}
		})
	}
}

func TestForwardCapsLongLines(t *testing.T) {
	long := strings.Repeat("x", 3*maxLogLine)
	got := forwardAll(t, long+"\nnext\n")
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2", len(got))
	}
	if len(got[0].msg) != maxLogLine {
		t.Errorf("long line re-emitted with %d bytes, want %d", len(got[0].msg), maxLogLine)
	}
	if got[1].msg != "next" {
		t.Errorf("line after the long one = %q, want next", got[1].msg)
	}
}

func BenchmarkEmitJSONLine(b *testing.B) {
	lg := hclog.New(&hclog.LoggerOptions{Output: discard{}, JSONFormat: true, Level: hclog.Info})
	e := &lineEmitter{log: lg, pid: 42}
	line := []byte(`{"@level":"info","@message":"request done","@module":"llm-proxy.worker","@timestamp":"2026-01-01T00:00:00.000000Z","status":200,"model":"gpt-4","ms":12}` + "\n")
	b.ReportAllocs()
	for b.Loop() {
		e.emit(line)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
