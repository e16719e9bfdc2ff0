package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kelseyhightower/envconfig"
)

// missionVariables is the configuration table of MISSION.md: every one must exist.
var missionVariables = []string{
	"LLM_PROXY_HOST", "LLM_PROXY_PORT", "LLM_PROXY_WORKERS", "LLM_PROXY_LOG_LEVEL",
	"LLM_PROXY_DATABASE_PATH", "LLM_PROXY_DATABASE_MAX_OPEN_CONNS", "LLM_PROXY_DATABASE_MAX_IDLE_CONNS",
	"LLM_PROXY_SECRET_KEY", "LLM_PROXY_SESSION_EXPIRE_HOURS", "LLM_PROXY_DEFAULT_ADMIN_USERNAME",
	"LLM_PROXY_DEFAULT_ADMIN_PASSWORD", "LLM_PROXY_HEALTH_CHECK_ENABLED", "LLM_PROXY_HEALTH_CHECK_INTERVAL",
	"LLM_PROXY_HEALTH_CHECK_TIMEOUT", "LLM_PROXY_LOAD_BALANCE_STRATEGY",
}

// mapLookup is an environment made of m only.
func mapLookup(m map[string]string) lookupFunc {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func keysOf(c *Config) []string {
	var out []string
	for _, v := range variables(c) {
		out = append(out, v.Key())
	}
	return out
}

// The loader reads variables itself (see loadConfig); this holds its names to envconfig's.
func TestVariablesMatchEnvconfig(t *testing.T) {
	var buf bytes.Buffer
	if err := envconfig.Usagef(envPrefix, &Config{}, &buf, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(buf.String())
	got := keysOf(&Config{})
	if !slices.Equal(got, want) {
		t.Fatalf("variables = %v\nenvconfig = %v", got, want)
	}
	for _, name := range missionVariables {
		if !slices.Contains(got, name) {
			t.Errorf("%s missing from Config", name)
		}
	}
	for _, name := range []string{"LLM_PROXY_LOG_DIR", "LLM_PROXY_SPOOL_DIR", "LLM_PROXY_SHUTDOWN_TIMEOUT",
		"LLM_PROXY_WATCHDOG_TIMEOUT", "LLM_PROXY_HEARTBEAT_INTERVAL", "LLM_PROXY_FAILOVER_TIMEOUT",
		"LLM_PROXY_LOG_RETENTION_DAYS", "LLM_PROXY_MAX_BODY_BYTES"} {
		if !slices.Contains(got, name) {
			t.Errorf("%s missing from Config", name)
		}
	}
}

// Every field carries default and desc tags, so --help documents everything.
func TestEveryVariableHasDefaultAndDesc(t *testing.T) {
	for _, v := range variables(&Config{}) {
		if v.Desc == "" {
			t.Errorf("%s has no desc tag", v.Key())
		}
	}
}

// With only the environment, envconfig.Process and loadConfig produce the same values.
func TestLoadAgreesWithEnvconfigProcess(t *testing.T) {
	env := map[string]string{
		"LLM_PROXY_PORT":                  "9100",
		"LLM_PROXY_WORKERS":               "3",
		"LLM_PROXY_DATABASE_PATH":         "/tmp/x/db.sqlite",
		"LLM_PROXY_LOAD_BALANCE_STRATEGY": "round_robin",
		"LLM_PROXY_SHUTDOWN_TIMEOUT":      "7s",
		"LLM_PROXY_HEALTH_CHECK_ENABLED":  "false",
		"LLM_PROXY_MAX_BODY_BYTES":        "4096",
	}
	// envconfig also reads the bare tag names (PORT, HOST...) when the prefixed one is unset;
	// clear those and any outer LLM_PROXY_* so both loaders see exactly env.
	for _, v := range variables(&Config{}) {
		for _, k := range []string{v.Key(), v.Name} {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var viaEnvconfig Config
	if err := envconfig.Process(envPrefix, &viaEnvconfig); err != nil {
		t.Fatal(err)
	}
	got, err := loadConfig(mapLookup(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	viaEnvconfig.finish()
	got.sources = nil
	if !reflect.DeepEqual(*got, viaEnvconfig) {
		t.Fatalf("loadConfig = %+v\nenvconfig  = %+v", *got, viaEnvconfig)
	}
	if got.SupervisorConfig.ShutdownTimeout != 7*time.Second || got.WorkerConfig.ShutdownTimeout != 7*time.Second {
		t.Errorf("SHUTDOWN_TIMEOUT feeds supervisor %s and worker %s, want 7s both",
			got.SupervisorConfig.ShutdownTimeout, got.WorkerConfig.ShutdownTimeout)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := loadConfig(mapLookup(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"HOST", cfg.Host, "0.0.0.0"},
		{"PORT", cfg.Port, 8000},
		{"LOG_LEVEL", cfg.LogLevel, "INFO"},
		{"LOG_DIR", cfg.LogDir, "logs"},
		{"SESSION_EXPIRE_HOURS", cfg.SessionExpireHours, 24},
		{"DEFAULT_ADMIN_USERNAME", cfg.DefaultAdminUsername, "admin"},
		{"DEFAULT_ADMIN_PASSWORD", cfg.DefaultAdminPassword, "admin123"},
		{"DATABASE_PATH", cfg.StoreConfig.Path, "data/llm-proxy.db"},
		{"DATABASE_MAX_OPEN_CONNS", cfg.StoreConfig.MaxOpenConns, 50},
		{"DATABASE_MAX_IDLE_CONNS", cfg.StoreConfig.MaxIdleConns, 10},
		{"WORKERS", cfg.SupervisorConfig.Workers, 1},
		{"SHUTDOWN_TIMEOUT", cfg.WorkerConfig.ShutdownTimeout, 30 * time.Second},
		{"HEALTH_CHECK_ENABLED", cfg.RoutingConfig.HealthCheckEnabled, true},
		{"HEALTH_CHECK_INTERVAL", cfg.RoutingConfig.HealthCheckInterval, 60},
		{"HEALTH_CHECK_TIMEOUT", cfg.RoutingConfig.HealthCheckTimeout, 10},
		{"LOAD_BALANCE_STRATEGY", cfg.RoutingConfig.Strategy, "weighted"},
		{"SPOOL_DIR", cfg.SpoolDir, filepath.Join("data", "spool")},
		{"Addr", cfg.Addr(), "0.0.0.0:8000"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	for name, src := range cfg.Sources() {
		if src != SourceDefault {
			t.Errorf("source of %s = %q, want default", name, src)
		}
	}
}

// Environment > settings table > default, with the source of each recorded.
func TestPriorityEnvOverDBOverDefault(t *testing.T) {
	env := map[string]string{
		"LLM_PROXY_PORT":                  "9001",
		"LLM_PROXY_LOAD_BALANCE_STRATEGY": "least_connections",
		"LLM_PROXY_LOG_LEVEL":             "debug", // case-insensitive
	}
	settings := map[string]string{
		"PORT":                       "9002", // env wins
		"LOAD_BALANCE_STRATEGY":      "round_robin",
		"WORKERS":                    "4",
		"health_check_interval":      "15",                 // keys are case-insensitive
		"LLM_PROXY_SHUTDOWN_TIMEOUT": "12s",                // and may carry the prefix
		"DATABASE_PATH":              "/elsewhere/x.db",    // never from the database
		"SECRET_KEY":                 "from-the-database!", // never from the database
		"UNRELATED_ADMIN_UI":         "x",                  // ignored
	}
	cfg, err := loadConfig(mapLookup(env), settings)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		got, want  any
		wantSource string
	}{
		{"PORT", cfg.Port, 9001, SourceEnv},
		{"LOAD_BALANCE_STRATEGY", cfg.RoutingConfig.Strategy, "least_connections", SourceEnv},
		{"LOG_LEVEL", cfg.LogLevel, "DEBUG", SourceEnv},
		{"WORKERS", cfg.SupervisorConfig.Workers, 4, SourceDB},
		{"HEALTH_CHECK_INTERVAL", cfg.RoutingConfig.HealthCheckInterval, 15, SourceDB},
		{"SHUTDOWN_TIMEOUT", cfg.WorkerConfig.ShutdownTimeout, 12 * time.Second, SourceDB},
		{"DATABASE_PATH", cfg.StoreConfig.Path, "data/llm-proxy.db", SourceDefault},
		{"SECRET_KEY", cfg.SecretKey, "", SourceDefault},
		{"HOST", cfg.Host, "0.0.0.0", SourceDefault},
	}
	sources := cfg.Sources()
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
		if sources[tt.name] != tt.wantSource {
			t.Errorf("source of %s = %q, want %q", tt.name, sources[tt.name], tt.wantSource)
		}
	}
	if len(sources) != len(slices.Compact(slices.Sorted(slices.Values(keysOf(cfg))))) {
		t.Errorf("Sources has %d entries, want one per variable", len(sources))
	}
}

// The unprefixed names other programs use (PORT, LOG_LEVEL) are not ours.
func TestBareNamesAreIgnored(t *testing.T) {
	cfg, err := loadConfig(mapLookup(map[string]string{"PORT": "1234", "LOG_LEVEL": "ERROR", "WORKERS": "9"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 8000 || cfg.LogLevel != "INFO" || cfg.SupervisorConfig.Workers != 1 {
		t.Fatalf("bare names leaked in: port %d, level %s, workers %d", cfg.Port, cfg.LogLevel, cfg.SupervisorConfig.Workers)
	}
}

func TestBadValues(t *testing.T) {
	tests := []struct {
		env      map[string]string
		settings map[string]string
		want     string
	}{
		{env: map[string]string{"LLM_PROXY_PORT": "abc"},
			want: `LLM_PROXY_PORT="abc" is invalid; accepted values: a whole number from 1 to 65535`},
		{env: map[string]string{"LLM_PROXY_PORT": "70000"},
			want: `LLM_PROXY_PORT="70000" is invalid; accepted values: a whole number from 1 to 65535`},
		{env: map[string]string{"LLM_PROXY_LOAD_BALANCE_STRATEGY": "fastest"},
			want: `LLM_PROXY_LOAD_BALANCE_STRATEGY="fastest" is invalid; accepted values: round_robin, weighted, least_connections, conversation_hash`},
		{env: map[string]string{"LLM_PROXY_WORKERS": "-1"},
			want: `LLM_PROXY_WORKERS="-1" is invalid; accepted values: a whole number of at least 1`},
		{env: map[string]string{"LLM_PROXY_WORKERS": "many"},
			want: `LLM_PROXY_WORKERS="many" is invalid; accepted values: a whole number of at least 1`},
		{env: map[string]string{"LLM_PROXY_LOG_LEVEL": "loud"},
			want: `LLM_PROXY_LOG_LEVEL="LOUD" is invalid; accepted values: DEBUG, INFO, WARN or ERROR`},
		{env: map[string]string{"LLM_PROXY_HEALTH_CHECK_ENABLED": "maybe"},
			want: `LLM_PROXY_HEALTH_CHECK_ENABLED="maybe" is invalid; accepted values: true or false`},
		{env: map[string]string{"LLM_PROXY_SHUTDOWN_TIMEOUT": "soon"},
			want: `LLM_PROXY_SHUTDOWN_TIMEOUT="soon" is invalid; accepted values: a positive duration such as 30s`},
		{env: map[string]string{"LLM_PROXY_WATCHDOG_TIMEOUT": "5ms"},
			want: `LLM_PROXY_WATCHDOG_TIMEOUT="5ms" is invalid; accepted values: 0 (off) or a duration of at least 100ms, such as 10s`},
		{env: map[string]string{"LLM_PROXY_DATABASE_MAX_IDLE_CONNS": "60"},
			want: `LLM_PROXY_DATABASE_MAX_IDLE_CONNS="60" is invalid; accepted values: a whole number from 0 to DATABASE_MAX_OPEN_CONNS`},
		{env: map[string]string{"LLM_PROXY_HEARTBEAT_INTERVAL": "50ms"},
			want: `LLM_PROXY_HEARTBEAT_INTERVAL="50ms" is invalid; accepted values: a duration of at least 100ms, such as 10s`},
		{env: map[string]string{"LLM_PROXY_UPSTREAM_TIMEOUT": "0s"},
			want: `LLM_PROXY_UPSTREAM_TIMEOUT="0s" is invalid: must be a positive duration such as 30s`},
		{settings: map[string]string{"LOAD_BALANCE_STRATEGY": "fastest"},
			want: `LLM_PROXY_LOAD_BALANCE_STRATEGY="fastest" (from the settings table) is invalid; accepted values: round_robin, weighted, least_connections, conversation_hash`},
		{settings: map[string]string{"PORT": "x"},
			want: `LLM_PROXY_PORT="x" (from the settings table) is invalid; accepted values: a whole number from 1 to 65535`},
	}
	for _, tt := range tests {
		_, err := loadConfig(mapLookup(tt.env), tt.settings)
		if err == nil {
			t.Errorf("env %v settings %v: no error", tt.env, tt.settings)
			continue
		}
		if _, ok := err.(*ConfigError); !ok {
			t.Errorf("env %v: error type %T, want *ConfigError", tt.env, err)
		}
		if got := err.Error(); got != tt.want {
			t.Errorf("env %v settings %v:\n got  %s\n want %s", tt.env, tt.settings, got, tt.want)
		}
	}
}

// A bad value exits 2 with exactly one line on stderr, before touching anything.
func TestBadValueExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		env  string
		want string
	}{
		{"LLM_PROXY_PORT=abc", `llm-proxy: LLM_PROXY_PORT="abc" is invalid; accepted values: a whole number from 1 to 65535`},
		{"LLM_PROXY_LOAD_BALANCE_STRATEGY=fastest", `llm-proxy: LLM_PROXY_LOAD_BALANCE_STRATEGY="fastest" is invalid; accepted values: round_robin, weighted, least_connections, conversation_hash`},
		{"LLM_PROXY_WORKERS=-1", `llm-proxy: LLM_PROXY_WORKERS="-1" is invalid; accepted values: a whole number of at least 1`},
	}
	for _, tt := range tests {
		res := runBinary(t, dir, []string{tt.env}, nil)
		if res.code != 2 {
			t.Errorf("%s: exit %d, want 2 (stderr %q)", tt.env, res.code, res.stderr)
		}
		if got := strings.TrimSuffix(res.stderr, "\n"); got != tt.want {
			t.Errorf("%s: stderr\n got  %q\n want %q", tt.env, got, tt.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
			t.Errorf("%s: the data directory was created before the config was checked", tt.env)
		}
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	res := runBinary(t, t.TempDir(), nil, nil, "--help")
	if res.code != 0 {
		t.Fatalf("--help exit %d, stderr %q", res.code, res.stderr)
	}
	lines := strings.Split(res.stdout, "\n")
	for _, v := range variables(&Config{}) {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, v.Key()+" ") })
		if i < 0 {
			t.Errorf("--help does not list %s", v.Key())
			continue
		}
		def := v.Default
		if def == "" {
			def = "-"
		}
		if f := strings.Fields(lines[i]); len(f) < 3 || f[1] != def {
			t.Errorf("--help line for %s = %q, want default %q and a description", v.Key(), lines[i], def)
		}
	}
	for _, sub := range []string{"keys create", "keys list", "keys revoke", "upstreams add", "upstreams list",
		"upstreams remove", "migrate", "status", "version"} {
		if !strings.Contains(res.stdout, "llm-proxy "+sub) {
			t.Errorf("--help does not mention %q", sub)
		}
	}
}

// The root logger writes everything to llm-proxy.log and WARN+ also to llm-proxy-error.log.
func TestRootLoggerFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	var stderr bytes.Buffer
	logger, closeLogs, err := newRootLogger("INFO", dir, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	logger.Debug("dropped-debug")
	logger.Info("info-line")
	logger.Named("worker-0").Log(hclog.Warn, "warn-line")
	logger.Error("error-line")
	if err := closeLogs(); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		where string
		text  string
		want  []string
		not   []string
	}{
		{"stderr", stderr.String(), []string{"info-line", "warn-line", "error-line"}, []string{"dropped-debug"}},
		{logFileAll, read(logFileAll), []string{"info-line", "warn-line", "error-line"}, []string{"dropped-debug"}},
		{logFileError, read(logFileError), []string{"warn-line", "error-line"}, []string{"info-line", "dropped-debug"}},
	}
	for _, tt := range tests {
		for _, w := range tt.want {
			if !strings.Contains(tt.text, w) {
				t.Errorf("%s lacks %q:\n%s", tt.where, w, tt.text)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(tt.text, n) {
				t.Errorf("%s has %q:\n%s", tt.where, n, tt.text)
			}
		}
	}
	for _, name := range []string{logFileAll, logFileError} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// 0640 under the usual umask; a stricter umask may only remove bits.
		if got := fi.Mode().Perm(); got&^0o640 != 0 {
			t.Errorf("%s mode %v, want at most 0640", name, got)
		}
	}
}

// The README's configuration table and .env.example name every variable, so the
// documentation cannot fall behind the code.
func TestDocsListEveryVariable(t *testing.T) {
	for _, doc := range []string{"../../README.md", "../../.env.example"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range variables(&Config{}) {
			if !strings.Contains(string(b), v.Key()) {
				t.Errorf("%s does not mention %s", doc, v.Key())
			}
		}
	}
}
