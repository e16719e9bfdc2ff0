package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func semanticList(t *testing.T, c *cliEnv) []semanticRouteJSON {
	t.Helper()
	var rows []semanticRouteJSON
	out := c.mustRun("routes", "semantic", "list", "--json").stdout
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("routes semantic list --json: %v\n%s", err, out)
	}
	return rows
}

// testdataPath is a file under testdata as an absolute path: the binary runs in a temp dir.
func testdataPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "semantic", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRoutesSemanticSetListRemove(t *testing.T) {
	c := newCLIEnv(t)
	out := c.mustRun("routes", "semantic", "set", "--model", "auto", "--default", "cheap",
		"--target", "code=coder,threshold=0.6", "--target", "billing=support",
		"--utterances-file", testdataPath(t, "utterances.json")).stdout
	if want := `set semantic route "auto": 2 target(s), default "cheap"`; !strings.Contains(out, want) {
		t.Errorf("set = %q, want %q", out, want)
	}
	rows := semanticList(t, c)
	want := []semanticRouteJSON{{Model: "auto", Default: "cheap", TopK: 3, Targets: []semanticTargetJSON{
		{Name: "code", Model: "coder", Threshold: 0.6, Utterances: 6},
		{Name: "billing", Model: "support", Threshold: defaultSemanticThreshold, Utterances: 5},
	}}}
	if got, _ := json.Marshal(rows); string(got) != mustJSON(t, want) {
		t.Errorf("list = %s, want %s", got, mustJSON(t, want))
	}
	if table := c.mustRun("routes", "semantic", "list").stdout; !regexp.MustCompile(`auto\s+code\s+coder\s+0\.600\s+6`).MatchString(table) {
		t.Errorf("table listing:\n%s", table)
	}
	c.mustRun("routes", "semantic", "remove", "auto")
	if rows := semanticList(t, c); len(rows) != 0 {
		t.Errorf("after remove: %+v", rows)
	}
	if res := c.run("routes", "semantic", "remove", "auto"); res.code == 0 {
		t.Error("removing a missing route succeeded")
	}
}

func TestRoutesSemanticRejects(t *testing.T) {
	c := newCLIEnv(t)
	f := testdataPath(t, "utterances.json")
	tests := []struct {
		name string
		args []string
	}{
		{"no default", []string{"--model", "auto", "--target", "code=c", "--target", "billing=b", "--utterances-file", f}},
		{"no targets", []string{"--model", "auto", "--default", "d", "--utterances-file", f}},
		{"target without utterances", []string{"--model", "auto", "--default", "d", "--target", "code=c", "--target", "billing=b", "--target", "x=y", "--utterances-file", f}},
		{"utterances of an unnamed target", []string{"--model", "auto", "--default", "d", "--target", "code=c", "--utterances-file", f}},
		{"bad threshold", []string{"--model", "auto", "--default", "d", "--target", "code=c,threshold=2", "--target", "billing=b", "--utterances-file", f}},
		{"bad target", []string{"--model", "auto", "--default", "d", "--target", "code", "--target", "billing=b", "--utterances-file", f}},
	}
	for _, tt := range tests {
		if res := c.run(append([]string{"routes", "semantic", "set"}, tt.args...)...); res.code == 0 {
			t.Errorf("%s: accepted: %s", tt.name, res.stdout)
		}
	}
	if rows := semanticList(t, c); len(rows) != 0 {
		t.Errorf("a rejected command stored a route: %+v", rows)
	}
}

var accuracyRE = regexp.MustCompile(`accuracy (before|after):\s+([0-9.]+)% \((\d+)/(\d+)\)`)

func TestRoutesFit(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("routes", "semantic", "set", "--model", "auto", "--default", "cheap",
		"--target", "code=coder,threshold=0.6", "--target", "billing=support,threshold=0.6",
		"--utterances-file", testdataPath(t, "utterances.json"))

	fit := func(args ...string) (before, after float64, out string) {
		t.Helper()
		out = c.mustRun(append([]string{"routes", "fit", "--model", "auto", "--file", testdataPath(t, "labelled.jsonl")}, args...)...).stdout
		m := accuracyRE.FindAllStringSubmatch(out, -1)
		if len(m) != 2 || m[0][1] != "before" || m[1][1] != "after" || m[0][4] != "18" {
			t.Fatalf("fit output lacks before/after accuracy over 18 examples:\n%s", out)
		}
		before, _ = strconv.ParseFloat(m[0][2], 64)
		after, _ = strconv.ParseFloat(m[1][2], 64)
		return before, after, out
	}

	// 0.6 is far above what the lexical embedder scores: only the defaults are right.
	before, after, out := fit("--dry-run")
	if before > 50 || after < 95 {
		t.Fatalf("dry run: accuracy %v%% -> %v%%, want at most 50%% before and at least 95%% after\n%s", before, after, out)
	}
	if !strings.Contains(out, "not saved") {
		t.Errorf("dry run output does not say it saved nothing:\n%s", out)
	}
	for _, tg := range semanticList(t, c)[0].Targets {
		if tg.Threshold != 0.6 {
			t.Fatalf("dry run changed threshold of %q to %v", tg.Name, tg.Threshold)
		}
	}

	_, after2, out := fit()
	if after2 != after || !strings.Contains(out, "thresholds saved") {
		t.Fatalf("fit: after %v (dry run %v)\n%s", after2, after, out)
	}
	for _, tg := range semanticList(t, c)[0].Targets {
		if tg.Threshold >= 0.6 || tg.Threshold <= 0 {
			t.Errorf("saved threshold of %q = %v, want tuned below 0.6", tg.Name, tg.Threshold)
		}
	}
	// Fitting again starts from the tuned thresholds: already at the best accuracy.
	if before3, _, _ := fit(); before3 != after {
		t.Errorf("second fit starts at %v%%, want the saved %v%%", before3, after)
	}

	if res := c.run("routes", "fit", "--model", "nope", "--file", testdataPath(t, "labelled.jsonl")); res.code == 0 {
		t.Error("fit of a missing route succeeded")
	}
}

func TestRoutesAndKeysCacheFlags(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("routes", "add", "--model", "gpt-4o", "--strategy", "round_robin")
	out := c.mustRun("routes", "add", "--model", "gpt-4o", "--cache", "semantic", "--cache-ttl", "2h").stdout
	if !strings.Contains(out, `cache of route "gpt-4o": mode semantic, ttl 2h0m0s`) || !strings.Contains(out, "strategy: round_robin") {
		t.Errorf("routes add --cache = %q", out)
	}
	// Only the flags given change: the TTL stays when just the mode is set.
	out = c.mustRun("routes", "add", "--model", "gpt-4o", "--cache", "exact").stdout
	if !strings.Contains(out, "mode exact, ttl 2h0m0s") {
		t.Errorf("routes add --cache exact = %q", out)
	}
	for _, args := range [][]string{
		{"routes", "add", "--model", "gpt-4o", "--cache", "sometimes"},
		{"routes", "add", "--model", "gpt-4o", "--cache-ttl", "soon"},
		{"routes", "add", "--model", "gpt-4o", "--cache-ttl", "10ms"},
	} {
		if res := c.run(args...); res.code == 0 {
			t.Errorf("%v accepted", args)
		}
	}

	c.mustRun("keys", "create", "--name", "k", "--rpm", "60")
	out = c.mustRun("keys", "update", "1", "--cache", "off").stdout
	// --cache alone must not touch (reset) the key's limits.
	if !strings.Contains(out, "updated cache mode of key 1: off") || strings.Contains(out, "limits") {
		t.Errorf("keys update --cache = %q", out)
	}
	out = c.mustRun("keys", "update", "1", "--rpm", "5", "--cache", "default").stdout
	if !strings.Contains(out, "rpm 5") || !strings.Contains(out, "cache mode of key 1: default") {
		t.Errorf("keys update --rpm --cache = %q", out)
	}
	if res := c.run("keys", "update", "99", "--cache", "off"); res.code == 0 {
		t.Error("cache mode of a missing key accepted")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
