package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/migrations"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
)

const testVersion = "1.2.3-test"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds the command once per test run, with version variables set as a release would.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "llm-proxy-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "llm-proxy")
		cmd := exec.Command("go", "build", "-o", binPath,
			"-ldflags", "-X main.version="+testVersion+" -X main.commit=abc1234 -X main.buildDate=2026-01-02", ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type result struct {
	stdout, stderr string
	code           int
}

// lastLine is the last non-empty line of stdout.
func (r result) lastLine() string {
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	return lines[len(lines)-1]
}

// runBinary runs the built binary in dir with a clean environment (no inherited LLM_PROXY_*
// or OPENAI_API_KEY) plus env, and stdin.
func runBinary(t *testing.T, dir string, env []string, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LLM_PROXY_") && !strings.HasPrefix(kv, "OPENAI_API_KEY=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run %v: %v", args, err)
	}
	return res
}

// cliEnv is a temp data directory for one test's database.
type cliEnv struct {
	t   *testing.T
	dir string
	db  string
	env []string
}

func newCLIEnv(t *testing.T) *cliEnv {
	dir := t.TempDir()
	db := filepath.Join(dir, "data", "llm-proxy.db")
	return &cliEnv{t: t, dir: dir, db: db, env: []string{"LLM_PROXY_DATABASE_PATH=" + db}}
}

func (c *cliEnv) run(args ...string) result {
	c.t.Helper()
	return runBinary(c.t, c.dir, c.env, nil, args...)
}

// mustRun runs args and fails the test unless it exits 0.
func (c *cliEnv) mustRun(args ...string) result {
	c.t.Helper()
	res := c.run(args...)
	if res.code != 0 {
		c.t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, res.code, res.stdout, res.stderr)
	}
	return res
}

// databaseBytes is the database and its WAL, where a leaked secret would be.
func (c *cliEnv) databaseBytes() []byte {
	c.t.Helper()
	var all []byte
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(c.db + suffix)
		if err != nil && !os.IsNotExist(err) {
			c.t.Fatal(err)
		}
		all = append(all, b...)
	}
	if len(all) == 0 {
		c.t.Fatal("database file is empty")
	}
	return all
}

var keyRE = regexp.MustCompile(`^sk-[A-Za-z0-9]{32}$`)

func TestKeysCreateListRevoke(t *testing.T) {
	c := newCLIEnv(t)
	res := c.mustRun("keys", "create", "--name", "alice", "--models", "gpt-4, gpt-4o-mini", "--expires", "30d")
	key := res.lastLine()
	if !keyRE.MatchString(key) {
		t.Fatalf("last stdout line %q does not match %s", key, keyRE)
	}
	if strings.Count(res.stdout, key) != 1 {
		t.Errorf("the key appears %d times in stdout, want once alone on the last line", strings.Count(res.stdout, key))
	}
	key2 := c.mustRun("keys", "create", "--name", "bob").lastLine()
	if !keyRE.MatchString(key2) || key2 == key {
		t.Fatalf("second key %q: bad format or equal to the first", key2)
	}

	db := c.databaseBytes()
	for _, k := range []string{key, key2} {
		if bytes.Contains(db, []byte(k)) || bytes.Contains(db, []byte(k[3:])) {
			t.Errorf("database contains the key %s", k)
		}
	}

	list := func() []keyJSON {
		t.Helper()
		var rows []keyJSON
		out := c.mustRun("keys", "list", "--json").stdout
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("keys list --json: %v\n%s", err, out)
		}
		return rows
	}
	rows := list()
	if len(rows) != 2 {
		t.Fatalf("keys list --json: %d rows, want 2", len(rows))
	}
	alice := rows[0]
	if alice.Name != "alice" || alice.State != "active" || strings.Join(alice.Models, ",") != "gpt-4,gpt-4o-mini" {
		t.Errorf("alice = %+v", alice)
	}
	if !strings.HasPrefix(key, strings.TrimSuffix(alice.Prefix, "…")) || len(alice.Prefix) >= len(key) {
		t.Errorf("prefix %q is not a short prefix of the key", alice.Prefix)
	}
	exp, err := time.Parse(time.RFC3339, alice.ExpiresAt)
	if err != nil {
		t.Fatalf("alice expires %q: %v", alice.ExpiresAt, err)
	}
	if d := time.Until(exp); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("--expires 30d gave expiry in %s", d)
	}
	if rows[1].ExpiresAt != "" || rows[1].State != "active" || len(rows[1].Models) != 0 {
		t.Errorf("bob = %+v, want no expiry, active, all models", rows[1])
	}

	res = c.mustRun("keys", "revoke", fmt.Sprint(alice.ID))
	if !strings.Contains(res.stdout, "revoked") {
		t.Errorf("revoke output %q", res.stdout)
	}
	rows = list()
	if rows[0].State != "revoked" || rows[1].State != "active" {
		t.Errorf("after revoke: states %s, %s; want revoked, active", rows[0].State, rows[1].State)
	}
	table := c.mustRun("keys", "list").stdout
	for _, want := range []string{"ID", "NAME", "PREFIX", "MODELS", "CREATED", "EXPIRES", "STATE", "alice", "revoked", "bob", "active"} {
		if !strings.Contains(table, want) {
			t.Errorf("keys list table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, key) {
		t.Error("keys list shows a whole key")
	}
}

func TestKeysErrors(t *testing.T) {
	c := newCLIEnv(t)
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"keys", "create"}, 2, "--name is required"},
		{[]string{"keys", "create", "--name", "x", "--expires", "soon"}, 2, "--expires"},
		{[]string{"keys", "create", "--name", "x", "--bogus"}, 2, "bogus"},
		{[]string{"keys", "revoke"}, 2, "exactly one key ID"},
		{[]string{"keys", "revoke", "abc"}, 2, "not a key ID"},
		{[]string{"keys", "revoke", "42"}, 1, "no key with ID 42"},
		{[]string{"keys", "frobnicate"}, 2, "unknown keys subcommand"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tt := range tests {
		res := c.run(tt.args...)
		if res.code != tt.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tt.args, res.code, tt.code, res.stderr)
		}
		lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "llm-proxy: ") || !strings.Contains(last, tt.contains) {
			t.Errorf("%v: last stderr line %q, want llm-proxy: ...%s...", tt.args, last, tt.contains)
		}
	}
}

func TestUpstreamsAddListRemove(t *testing.T) {
	c := newCLIEnv(t)
	const providerKey = "sk-provider-abcdefghijklmnop-wxyz"
	c.mustRun("upstreams", "add", "--name", "mock", "--base-url", "http://127.0.0.1:9000/v1/",
		"--api-key", providerKey, "--models", "gpt-4,fast=gpt-4o-mini", "--weight", "3")
	c.mustRun("upstreams", "add", "--name", "local", "--base-url", "https://llm.internal:8443/v1")

	if bytes.Contains(c.databaseBytes(), []byte(providerKey)) {
		t.Error("database contains the provider key in plain text")
	}

	var rows []upstreamJSON
	out := c.mustRun("upstreams", "list", "--json").stdout
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("upstreams list --json: %v\n%s", err, out)
	}
	if len(rows) != 2 {
		t.Fatalf("%d upstreams, want 2", len(rows))
	}
	mock, local := rows[0], rows[1]
	if mock.Name != "mock" || mock.BaseURL != "http://127.0.0.1:9000/v1" || mock.Weight != 3 || mock.APIKey != "sk-p…wxyz" {
		t.Errorf("mock = %+v", mock)
	}
	// The upstream carries the weight; its deployments are 1 each.
	wantModels := []modelJSON{{Public: "gpt-4", Upstream: "gpt-4", Weight: 1}, {Public: "fast", Upstream: "gpt-4o-mini", Weight: 1}}
	if fmt.Sprint(mock.Models) != fmt.Sprint(wantModels) {
		t.Errorf("mock models = %+v, want %+v", mock.Models, wantModels)
	}
	if local.APIKey != "(none)" || len(local.Models) != 1 || local.Models[0].Public != "*" {
		t.Errorf("local = %+v, want no key and the * deployment", local)
	}
	table := c.mustRun("upstreams", "list").stdout
	for _, want := range []string{"mock", "http://127.0.0.1:9000/v1", "fast=gpt-4o-mini", "sk-p…wxyz", "local", "(none)"} {
		if !strings.Contains(table, want) {
			t.Errorf("upstreams list lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, providerKey) {
		t.Error("upstreams list shows the whole provider key")
	}

	if res := c.run("upstreams", "add", "--name", "mock", "--base-url", "http://127.0.0.1:1/v1"); res.code != 1 || !strings.Contains(res.stderr, "already exists") {
		t.Errorf("duplicate add: exit %d, stderr %q", res.code, res.stderr)
	}
	c.mustRun("upstreams", "remove", "mock")
	if res := c.run("upstreams", "remove", "mock"); res.code != 1 || !strings.Contains(res.stderr, `no upstream named "mock"`) {
		t.Errorf("second remove: exit %d, stderr %q", res.code, res.stderr)
	}
	table = c.mustRun("upstreams", "list").stdout
	if strings.Contains(table, "mock") || !strings.Contains(table, "local") {
		t.Errorf("after remove:\n%s", table)
	}
}

func TestUpstreamsAddRejects(t *testing.T) {
	c := newCLIEnv(t)
	tests := []struct {
		args     []string
		contains string
	}{
		{[]string{"--base-url", "http://x/v1"}, "--name is required"},
		{[]string{"--name", "a"}, "--base-url"},
		{[]string{"--name", "a", "--base-url", "ftp://x/v1"}, "http:// or https://"},
		{[]string{"--name", "a", "--base-url", "http:///v1"}, "with a host"},
		{[]string{"--name", "a", "--base-url", "localhost:8000"}, "http:// or https://"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--models", "a=b=c"}, "public=upstream"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--models", "=b"}, "public=upstream"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--models", "a,a"}, "twice"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--weight", "-1"}, "--weight"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--provider", "cohere"}, "openai, azure, anthropic, gemini"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--priority", "-1"}, "--priority"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--max-concurrent", "-2"}, "--max-concurrent"},
		{[]string{"--name", "a", "--base-url", "http://x/v1", "--priority", "x"}, "invalid value"},
	}
	for _, tt := range tests {
		res := c.run(append([]string{"upstreams", "add"}, tt.args...)...)
		if res.code != 2 || !strings.Contains(res.stderr, tt.contains) {
			t.Errorf("%v: exit %d stderr %q, want 2 and %q", tt.args, res.code, res.stderr, tt.contains)
		}
	}
}

func TestMigrateVersionStatus(t *testing.T) {
	c := newCLIEnv(t)
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded migrations: %v (%d files)", err, len(files))
	}
	// A fresh database gets every migration; a second run finds nothing left to do.
	for _, want := range []int{len(files), 0} {
		got := c.mustRun("migrate").stdout
		wantLine := fmt.Sprintf("applied %d migration(s) to %s\n", want, c.db)
		if got != wantLine {
			t.Errorf("migrate stdout = %q, want %q", got, wantLine)
		}
	}
	if out := c.mustRun("version").stdout; !strings.Contains(out, testVersion) || !strings.Contains(out, "abc1234") || !strings.Contains(out, "2026-01-02") {
		t.Errorf("version = %q, want version, commit and build date from -ldflags", out)
	}
	var st statusJSON
	out := c.mustRun("status").stdout
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if len(st.Workers) != 0 || st.Primary.Holder != "" {
		t.Errorf("status of a stopped gateway = %+v, want no workers and no primary", st)
	}
}

func testStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	box, err := secret.New("test-secret-material-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(t.TempDir(), "db.sqlite"), MaxOpenConns: 4, MaxIdleConns: 2}, box, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestEnsureOpenAIUpstream(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)

	if created, err := ensureOpenAIUpstream(ctx, st, "", hclog.NewNullLogger()); err != nil || created {
		t.Fatalf("without a key: created %v, err %v; want nothing", created, err)
	}
	created, err := ensureOpenAIUpstream(ctx, st, "sk-openai-test-key-1234", hclog.NewNullLogger())
	if err != nil || !created {
		t.Fatalf("first start: created %v, err %v", created, err)
	}
	ups, err := st.ListUpstreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 1 {
		t.Fatalf("%d upstreams, want 1", len(ups))
	}
	u := ups[0]
	if u.Name != "openai" || u.BaseURL != "https://api.openai.com/v1" || u.APIKey != "sk-openai-test-key-1234" || !u.Enabled {
		t.Errorf("upstream = %+v", u)
	}
	if len(u.Deployments) != 1 || u.Deployments[0].PublicModel != store.AnyModel {
		t.Errorf("deployments = %+v, want the * deployment", u.Deployments)
	}
	// A second start, or a start with upstreams the operator made, adds nothing.
	if created, err := ensureOpenAIUpstream(ctx, st, "sk-other", hclog.NewNullLogger()); err != nil || created {
		t.Fatalf("second start: created %v, err %v; want nothing", created, err)
	}
	if n, _ := st.CountUpstreams(ctx); n != 1 {
		t.Errorf("%d upstreams after second start, want 1", n)
	}
}

func TestNewAPIKey(t *testing.T) {
	seen := make(map[string]bool)
	counts := make(map[rune]int)
	for i := 0; i < 2000; i++ {
		k, err := newAPIKey()
		if err != nil {
			t.Fatal(err)
		}
		if !keyRE.MatchString(k) {
			t.Fatalf("key %q does not match %s", k, keyRE)
		}
		if seen[k] {
			t.Fatalf("key %q generated twice", k)
		}
		seen[k] = true
		for _, r := range k[3:] {
			counts[r]++
		}
	}
	// 64000 characters over 62 symbols: about 1032 each. A biased generator (b%62 without
	// rejection) over-weights the first 8 symbols by ~25%.
	for _, r := range keyAlphabet {
		if n := counts[r]; n < 850 || n > 1220 {
			t.Errorf("symbol %q drawn %d times, want about 1032", r, n)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false},
		{"never", time.Time{}, false},
		{"30d", now.Add(30 * 24 * time.Hour), false},
		{"12h", now.Add(12 * time.Hour), false},
		{"1h30m", now.Add(90 * time.Minute), false},
		{"2026-12-31", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{"2026-12-31T12:00:00Z", time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC), false},
		{"0d", time.Time{}, true},
		{"-5h", time.Time{}, true},
		{"tomorrow", time.Time{}, true},
		{"xd", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseExpiry(tt.in, now)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseExpiry(%q) error %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("parseExpiry(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMaskKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "(none)"},
		{"sk-abcdefghijklmnopqrstuvwxyz", "sk-a…wxyz"},
		{"short", "…rt"},
	}
	for _, tt := range tests {
		if got := maskKey(tt.in); got != tt.want {
			t.Errorf("maskKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUpstreamsTiersAndProviders(t *testing.T) {
	c := newCLIEnv(t)
	out := c.mustRun("upstreams", "add", "--name", "claude", "--provider", "anthropic", "--base-url", "https://api.example.test/v1",
		"--models", "sonnet=claude-sonnet-4,haiku", "--priority", "2", "--max-concurrent", "5").stdout
	if !strings.Contains(out, "priority 2") || !strings.Contains(out, "max concurrent 5") || !strings.Contains(out, "anthropic") {
		t.Errorf("add output = %q, want provider, priority and max concurrent", out)
	}
	for _, p := range []string{"openai", "azure", "gemini"} {
		c.mustRun("upstreams", "add", "--name", "u-"+p, "--provider", p, "--base-url", "http://127.0.0.1:9/v1")
	}

	var rows []upstreamJSON
	js := c.mustRun("upstreams", "list", "--json").stdout
	if err := json.Unmarshal([]byte(js), &rows); err != nil {
		t.Fatalf("upstreams list --json: %v\n%s", err, js)
	}
	got := map[string]upstreamJSON{}
	for _, r := range rows {
		got[r.Name] = r
	}
	tests := []struct {
		name, provider string
		models         []modelJSON
	}{
		{"claude", "anthropic", []modelJSON{
			{Public: "sonnet", Upstream: "claude-sonnet-4", Weight: 1, Priority: 2, MaxConcurrent: 5},
			{Public: "haiku", Upstream: "haiku", Weight: 1, Priority: 2, MaxConcurrent: 5}}},
		{"u-openai", "openai", []modelJSON{{Public: "*", Weight: 1}}},
		{"u-azure", "azure", []modelJSON{{Public: "*", Weight: 1}}},
		{"u-gemini", "gemini", []modelJSON{{Public: "*", Weight: 1}}},
	}
	for _, tt := range tests {
		r, ok := got[tt.name]
		if !ok {
			t.Errorf("no upstream %q in %s", tt.name, js)
			continue
		}
		if r.Provider != tt.provider || fmt.Sprint(r.Models) != fmt.Sprint(tt.models) {
			t.Errorf("%s = provider %q models %+v, want %q %+v", tt.name, r.Provider, r.Models, tt.provider, tt.models)
		}
	}
	table := c.mustRun("upstreams", "list").stdout
	lines := strings.Split(table, "\n")
	if !strings.Contains(lines[0], "PRIORITY") || !strings.Contains(lines[0], "MAX CONCURRENT") {
		t.Errorf("table header %q lacks PRIORITY and MAX CONCURRENT", lines[0])
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "claude" && (!slices.Contains(f, "2") || !slices.Contains(f, "5")) {
			t.Errorf("claude row %q lacks priority 2 and max concurrent 5", l)
		}
		if len(f) > 0 && f[0] == "u-openai" && !slices.Contains(f, "unlimited") {
			t.Errorf("u-openai row %q does not say unlimited", l)
		}
	}
}

func TestRoutesAddListRemove(t *testing.T) {
	c := newCLIEnv(t)
	if out := c.mustRun("routes", "list", "--json").stdout; strings.TrimSpace(out) != "[]" {
		t.Errorf("routes list --json on a fresh database = %q, want []", out)
	}
	out := c.mustRun("routes", "add", "--model", "gpt-4o", "--strategy", "round_robin", "--fallbacks", "gpt-4o-mini, claude-sonnet").stdout
	if want := `added route "gpt-4o" (strategy: round_robin, fallbacks: gpt-4o-mini,claude-sonnet)`; !strings.Contains(out, want) {
		t.Errorf("routes add = %q, want %q", out, want)
	}
	c.mustRun("routes", "add", "--model", "cheap", "--fallbacks", "gpt-4o-mini")

	list := func() map[string]routeJSON {
		t.Helper()
		var rows []routeJSON
		js := c.mustRun("routes", "list", "--json").stdout
		if err := json.Unmarshal([]byte(js), &rows); err != nil {
			t.Fatalf("routes list --json: %v\n%s", err, js)
		}
		m := map[string]routeJSON{}
		for _, r := range rows {
			if r.Created == "" || r.Updated == "" {
				t.Errorf("route %q has no timestamps: %+v", r.Model, r)
			}
			m[r.Model] = r
		}
		return m
	}
	type route struct {
		strategy  string
		fallbacks string
	}
	steps := []struct {
		name string
		args []string // routes add args; nil only lists
		want map[string]route
	}{
		{"as added", nil, map[string]route{
			"gpt-4o": {"round_robin", "[gpt-4o-mini claude-sonnet]"}, "cheap": {"", "[gpt-4o-mini]"}}},
		{"strategy only keeps fallbacks", []string{"--model", "gpt-4o", "--strategy", "conversation_hash"}, map[string]route{
			"gpt-4o": {"conversation_hash", "[gpt-4o-mini claude-sonnet]"}, "cheap": {"", "[gpt-4o-mini]"}}},
		{"fallbacks only keep the strategy", []string{"--model", "gpt-4o", "--fallbacks", "b"}, map[string]route{
			"gpt-4o": {"conversation_hash", "[b]"}, "cheap": {"", "[gpt-4o-mini]"}}},
		{"empty fallbacks clear, default strategy resets", []string{"--model", "gpt-4o", "--fallbacks", "", "--strategy", "default"}, map[string]route{
			"gpt-4o": {"", "[]"}, "cheap": {"", "[gpt-4o-mini]"}}},
	}
	for _, st := range steps {
		if st.args != nil {
			if out := c.mustRun(append([]string{"routes", "add"}, st.args...)...).stdout; !strings.HasPrefix(out, "updated route") {
				t.Errorf("%s: output %q, want updated route", st.name, out)
			}
		}
		got := list()
		if len(got) != len(st.want) {
			t.Errorf("%s: %d routes, want %d", st.name, len(got), len(st.want))
		}
		for m, w := range st.want {
			g := route{got[m].Strategy, fmt.Sprint(got[m].Fallbacks)}
			if g != w {
				t.Errorf("%s: route %s = %+v, want %+v", st.name, m, g, w)
			}
		}
	}

	table := c.mustRun("routes", "list").stdout
	for _, want := range []string{"MODEL", "STRATEGY", "FALLBACKS", "cheap", "gpt-4o-mini", "default", "none"} {
		if !strings.Contains(table, want) {
			t.Errorf("routes list lacks %q:\n%s", want, table)
		}
	}
	c.mustRun("routes", "remove", "cheap")
	if res := c.run("routes", "remove", "cheap"); res.code != 1 || !strings.Contains(res.stderr, `no route for model "cheap"`) {
		t.Errorf("second remove: exit %d, stderr %q", res.code, res.stderr)
	}
	if got := list(); len(got) != 1 || got["gpt-4o"].Model != "gpt-4o" {
		t.Errorf("after remove: %+v, want only gpt-4o", got)
	}
}

func TestRoutesRejects(t *testing.T) {
	c := newCLIEnv(t)
	tests := []struct {
		args     []string
		contains string
	}{
		{[]string{"routes"}, "add, list or remove"},
		{[]string{"routes", "rename"}, `unknown routes subcommand "rename"`},
		{[]string{"routes", "add", "--strategy", "weighted"}, "--model is required"},
		{[]string{"routes", "add", "--model", "m", "--strategy", "random"}, "round_robin, weighted, least_connections, conversation_hash"},
		{[]string{"routes", "add", "--model", "m", "--fallbacks", "a,m"}, `lists the model "m" itself`},
		{[]string{"routes", "add", "--model", "m", "--fallbacks", "a,a"}, "twice"},
		{[]string{"routes", "add", "--model", "*"}, "one public model name"},
		{[]string{"routes", "add", "--model", "m", "extra"}, `unexpected argument "extra"`},
		{[]string{"routes", "remove"}, "exactly one model name"},
		{[]string{"routes", "list", "x"}, "unexpected argument"},
	}
	for _, tt := range tests {
		res := c.run(tt.args...)
		if res.code != 2 || !strings.Contains(res.stderr, tt.contains) {
			t.Errorf("%v: exit %d stderr %q, want 2 and %q", tt.args, res.code, res.stderr, tt.contains)
		}
	}
	if out := c.mustRun("routes", "list", "--json").stdout; strings.TrimSpace(out) != "[]" {
		t.Errorf("rejected commands stored routes: %s", out)
	}
}
