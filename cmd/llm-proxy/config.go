package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/coordinator"
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/supervisor"
	"github.com/llm-proxy/llm-proxy/worker"
	"github.com/llm-proxy/llm-proxy/worker/admin"
	"github.com/llm-proxy/llm-proxy/worker/metrics"
)

// envPrefix is prepended (with "_") to every tag name: LLM_PROXY_PORT, LLM_PROXY_WORKERS, ...
const envPrefix = "LLM_PROXY"

// Sources of a configuration value, as reported by Config.Sources.
const (
	SourceEnv     = "env"     // LLM_PROXY_<NAME> is set in the environment
	SourceDB      = "db"      // a row of the settings table
	SourceDefault = "default" // the field's default tag (or a derived default)
)

// The package configs are embedded through aliases: envconfig flattens anonymous struct
// fields without adding a prefix (so DATABASE_PATH becomes LLM_PROXY_DATABASE_PATH, not
// LLM_PROXY_STORE_DATABASE_PATH), and the alias names keep the embedded field names distinct
// although every package calls its type Config.
type (
	StoreConfig       = store.Config
	SupervisorConfig  = supervisor.Config
	CoordinatorConfig = coordinator.Config
	WorkerConfig      = worker.Config
	RoutingConfig     = routing.Config
	ShmConfig         = shm.Config
	CacheConfig       = cache.Config
	MetricsConfig     = metrics.Config
)

// Config is the whole process configuration: the top-level variables plus every package's
// Config. Priority per variable: environment > settings table > default.
//
// SHUTDOWN_TIMEOUT appears in both SupervisorConfig and WorkerConfig on purpose: the worker
// drains for that long and the supervisor kills it a little later; one variable feeds both.
type Config struct {
	Host                 string `envconfig:"HOST" default:"0.0.0.0" desc:"listen address"`
	Port                 int    `envconfig:"PORT" default:"8000" desc:"listen port (1-65535)"`
	LogLevel             string `envconfig:"LOG_LEVEL" default:"INFO" desc:"DEBUG, INFO, WARN or ERROR"`
	LogDir               string `envconfig:"LOG_DIR" default:"logs" desc:"directory of llm-proxy.log (everything) and llm-proxy-error.log (WARN and above)"`
	SecretKey            string `envconfig:"SECRET_KEY" default:"" desc:"session signing and encryption of provider keys (default: generated on first start into a 0600 secret.key next to the database; never stored in the database)"`
	SessionExpireHours   int    `envconfig:"SESSION_EXPIRE_HOURS" default:"24" desc:"admin session lifetime in hours"`
	DefaultAdminUsername string `envconfig:"DEFAULT_ADMIN_USERNAME" default:"admin" desc:"first admin account"`
	DefaultAdminPassword string `envconfig:"DEFAULT_ADMIN_PASSWORD" default:"admin123" desc:"its first password (must be changed at first login)"`
	SpoolDir             string `envconfig:"SPOOL_DIR" default:"" desc:"directory of the workers' request-record spool files (default: spool next to the database file)"`

	StoreConfig
	SupervisorConfig
	CoordinatorConfig
	WorkerConfig
	RoutingConfig
	ShmConfig
	CacheConfig
	MetricsConfig

	// sources maps a variable name without prefix (e.g. "PORT") to SourceEnv, SourceDB or
	// SourceDefault. Unexported, so envconfig never sees it.
	sources map[string]string
}

// Sources returns, for every variable name without the LLM_PROXY_ prefix (the same key the
// settings table uses), where its value came from: "env", "db" or "default". The admin uses
// it to show which settings the environment overrides (those are read-only there).
func (c *Config) Sources() map[string]string {
	out := make(map[string]string, len(c.sources))
	for k, v := range c.sources {
		out[k] = v
	}
	return out
}

// Addr is the listen address in host:port form.
func (c *Config) Addr() string {
	return joinHostPort(c.Host, c.Port)
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// variable is one LLM_PROXY_* variable found by walking Config the way envconfig does.
type variable struct {
	Name    string // without prefix, e.g. "PORT"
	Default string // the default tag
	Desc    string // the desc tag
	field   reflect.Value
}

// Key is the full environment variable name.
func (v variable) Key() string { return envPrefix + "_" + v.Name }

// notFromDB lists variables the settings table must never supply: the database path is
// needed to read the table at all, and the secret key must not live in the file it protects.
var notFromDB = map[string]bool{
	"DATABASE_PATH": true,
	"SECRET_KEY":    true,
}

// accepted says, per variable, which values are valid; it is the second half of every
// "invalid value" message. Variables not listed get a description by their Go type.
var accepted = map[string]string{
	"PORT":                    "a whole number from 1 to 65535",
	"ALLOW_PRIVATE_UPSTREAMS": "loopback (default), true or false",
	"CACHE_MODE":              "off, exact or semantic",
	"WORKERS":                 "a whole number of at least 1",
	"LOG_LEVEL":               "DEBUG, INFO, WARN or ERROR",
	"LOAD_BALANCE_STRATEGY":   strings.Join(routing.Strategies, ", "),
	"SESSION_EXPIRE_HOURS":    "a whole number of hours of at least 1",
	"DATABASE_PATH":           "a non-empty file path",
	"DATABASE_MAX_OPEN_CONNS": "a whole number of at least 1",
	"DATABASE_MAX_IDLE_CONNS": "a whole number from 0 to DATABASE_MAX_OPEN_CONNS",
	"WATCHDOG_TIMEOUT":        "0 (off) or a duration of at least 100ms, such as 10s",
	"SHUTDOWN_TIMEOUT":        "a positive duration such as 30s",
	"HEARTBEAT_INTERVAL":      "a duration of at least 100ms, such as 10s",
	"FAILOVER_TIMEOUT":        "a duration of at least 3s, such as 30s",
	"LOG_RETENTION_DAYS":      "a whole number of days of at least 0 (0 keeps request logs forever)",
	"CRASH_BUDGET":            "a whole number of at least 0",
	"HEALTH_CHECK_INTERVAL":   "a whole number of seconds of at least 1",
	"HEALTH_CHECK_TIMEOUT":    "a whole number of seconds of at least 1",
	"MAX_BODY_BYTES":          "a whole number of bytes of at least 1024",
}

// variables lists every variable of c in declaration order. It mirrors envconfig's naming
// rules (tag name, anonymous structs flattened without prefix, named struct fields prefixed
// with their own name); TestVariablesMatchEnvconfig holds the two together.
func variables(c *Config) []variable {
	return walk(reflect.ValueOf(c).Elem(), "")
}

func walk(v reflect.Value, prefix string) []variable {
	var out []variable
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		f := v.Field(i)
		if !sf.IsExported() || isTrue(sf.Tag.Get("ignored")) {
			continue
		}
		name := strings.ToUpper(sf.Tag.Get("envconfig"))
		if name == "" {
			name = strings.ToUpper(sf.Name)
		}
		if prefix != "" {
			name = prefix + "_" + name
		}
		if f.Kind() == reflect.Struct && !isLeafStruct(f) {
			inner := prefix
			if !sf.Anonymous {
				inner = name
			}
			out = append(out, walk(f, inner)...)
			continue
		}
		out = append(out, variable{Name: name, Default: sf.Tag.Get("default"), Desc: sf.Tag.Get("desc"), field: f})
	}
	return out
}

// isLeafStruct reports struct types envconfig decodes as one value (time.Time and friends).
func isLeafStruct(f reflect.Value) bool {
	_, ok := f.Addr().Interface().(interface{ UnmarshalText([]byte) error })
	return ok
}

func isTrue(s string) bool {
	b, _ := strconv.ParseBool(s)
	return b
}

// ConfigError is a bad configuration value. main prints it as one line and exits 2.
type ConfigError struct {
	msg string
}

func (e *ConfigError) Error() string { return e.msg }

// lookupFunc is os.LookupEnv in production; tests pass a map.
type lookupFunc func(string) (string, bool)

// loadConfig resolves every variable: LLM_PROXY_<NAME> from lookup if set, else settings[NAME]
// (settings may be nil), else the default tag; then derives defaults and validates.
//
// It reads LLM_PROXY_<NAME> only. envconfig.Process would also fall back to the bare tag name
// (PORT, LOG_LEVEL, SECRET_KEY, ...) that platforms and other programs set for their own use,
// and it has no settings layer; the naming rules are the same (see variables).
func loadConfig(lookup lookupFunc, settings map[string]string) (*Config, error) {
	cfg := &Config{sources: make(map[string]string)}
	if err := resolve(variables(cfg), lookup, normalizeSettings(settings), cfg.sources); err != nil {
		return nil, err
	}
	cfg.finish()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// loadDatabaseConfig resolves only what the CLI subcommands need to open the database: the
// store variables and the secret key, from the environment or defaults. A bad value of an
// unrelated variable (say LLM_PROXY_PORT) does not stop `keys list`.
func loadDatabaseConfig(lookup lookupFunc) (store.Config, string, error) {
	cfg := &Config{sources: make(map[string]string)}
	var vars []variable
	for _, v := range variables(cfg) {
		if strings.HasPrefix(v.Name, "DATABASE_") || v.Name == "SECRET_KEY" {
			vars = append(vars, v)
		}
	}
	if err := resolve(vars, lookup, nil, cfg.sources); err != nil {
		return store.Config{}, "", err
	}
	if err := validateStore(cfg); err != nil {
		return store.Config{}, "", err
	}
	return cfg.StoreConfig, cfg.SecretKey, nil
}

// normalizeSettings keys settings rows by the bare variable name; rows written with the full
// LLM_PROXY_ name or in lower case are accepted too.
func normalizeSettings(rows map[string]string) map[string]string {
	out := make(map[string]string, len(rows))
	for k, v := range rows {
		k = strings.ToUpper(strings.TrimSpace(k))
		k = strings.TrimPrefix(k, envPrefix+"_")
		out[k] = v
	}
	return out
}

func resolve(vars []variable, lookup lookupFunc, settings map[string]string, sources map[string]string) error {
	for _, v := range vars {
		value, source := v.Default, SourceDefault
		if s, ok := lookup(v.Key()); ok {
			value, source = s, SourceEnv
		} else if s, ok := settings[v.Name]; ok && !notFromDB[v.Name] {
			value, source = s, SourceDB
		}
		if err := setField(v.field, value); err != nil {
			return invalid(v.Name, value, source, acceptedFor(v))
		}
		sources[v.Name] = source
	}
	return nil
}

// invalid builds the one-line message for a bad value: the variable, the value, where the
// value came from when that is not the environment, and what is accepted.
func invalid(name, value, source, accepts string) *ConfigError {
	from := ""
	switch source {
	case SourceDB:
		from = " (from the settings table)"
	case SourceDefault:
		from = " (default)"
	}
	return &ConfigError{msg: fmt.Sprintf("%s_%s=%q%s is invalid; accepted values: %s", envPrefix, name, value, from, accepts)}
}

func acceptedFor(v variable) string {
	if a, ok := accepted[v.Name]; ok {
		return a
	}
	switch v.field.Interface().(type) {
	case time.Duration:
		return "durations such as 500ms, 30s or 5m"
	case bool:
		return "true or false"
	}
	switch v.field.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "whole numbers"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole numbers of at least 0"
	case reflect.Float32, reflect.Float64:
		return "numbers"
	}
	return "any text"
}

// setField parses value into f the way envconfig does for the kinds our configs use.
func setField(f reflect.Value, value string) error {
	if u, ok := f.Addr().Interface().(interface{ UnmarshalText([]byte) error }); ok {
		return u.UnmarshalText([]byte(value))
	}
	value = strings.TrimSpace(value)
	if f.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(value)
		if err != nil {
			// A bare number is read as seconds, the unit operators expect for timeouts.
			n, nerr := strconv.ParseInt(value, 10, 64)
			if nerr != nil {
				return err
			}
			d = time.Duration(n) * time.Second
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(value, 0, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(value, 0, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetUint(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Float32, reflect.Float64:
		x, err := strconv.ParseFloat(value, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetFloat(x)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported type %s", f.Type())
		}
		var parts []string
		for _, p := range strings.Split(value, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}

// finish normalises values and fills the defaults that depend on other variables.
func (c *Config) finish() {
	c.LogLevel = strings.ToUpper(strings.TrimSpace(c.LogLevel))
	if c.LogLevel == "WARNING" {
		c.LogLevel = "WARN"
	}
	if c.SpoolDir == "" {
		c.SpoolDir = filepath.Join(filepath.Dir(c.StoreConfig.Path), "spool")
	}
	if c.ShmConfig.Path == "" {
		c.ShmConfig.Path = filepath.Join(filepath.Dir(c.StoreConfig.Path), "llm-proxy.shm")
	}
}

// validate checks the top-level variables itself and then each package's Validate, rewriting
// any package message into the one-line "variable, value, accepted values" shape.
func (c *Config) validate() error {
	switch {
	case c.Port < 1 || c.Port > 65535:
		return c.invalidField("PORT", strconv.Itoa(c.Port))
	case !validLogLevel(c.LogLevel):
		return c.invalidField("LOG_LEVEL", c.LogLevel)
	case c.SessionExpireHours < 1:
		return c.invalidField("SESSION_EXPIRE_HOURS", strconv.Itoa(c.SessionExpireHours))
	case c.SupervisorConfig.Workers < 1:
		return c.invalidField("WORKERS", strconv.Itoa(c.SupervisorConfig.Workers))
	case !validStrategy(c.RoutingConfig.Strategy):
		return c.invalidField("LOAD_BALANCE_STRATEGY", c.RoutingConfig.Strategy)
	}
	if err := validateStore(c); err != nil {
		return err
	}
	for _, fn := range []func() error{
		c.SupervisorConfig.Validate,
		c.CoordinatorConfig.Validate,
		c.WorkerConfig.Validate,
		c.RoutingConfig.Validate,
		c.ShmConfig.Validate,
		c.CacheConfig.Validate,
		c.MetricsConfig.Validate,
	} {
		if err := fn(); err != nil {
			return c.rewrite(err)
		}
	}
	return nil
}

func validateStore(c *Config) error {
	s := c.StoreConfig
	switch {
	case strings.TrimSpace(s.Path) == "":
		return c.invalidField("DATABASE_PATH", s.Path)
	case s.MaxOpenConns < 1:
		return c.invalidField("DATABASE_MAX_OPEN_CONNS", strconv.Itoa(s.MaxOpenConns))
	case s.MaxIdleConns < 0 || s.MaxIdleConns > s.MaxOpenConns:
		return c.invalidField("DATABASE_MAX_IDLE_CONNS", strconv.Itoa(s.MaxIdleConns))
	}
	if err := s.Validate(); err != nil {
		return c.rewrite(err)
	}
	return nil
}

func (c *Config) invalidField(name, value string) *ConfigError {
	v := variable{Name: name}
	for _, x := range variables(c) {
		if x.Name == name {
			v = x
		}
	}
	a := accepted[name]
	if a == "" && v.field.IsValid() {
		a = acceptedFor(v)
	}
	return invalid(name, value, c.sources[name], a)
}

var varNameRE = regexp.MustCompile(`[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+`)

// rewrite turns a package's Validate error into the one-line shape. Packages phrase their
// messages differently ("supervisor: WORKERS must be at least 1, got 0", or already
// "LLM_PROXY_X=... is invalid: ..."); errors.Join may have put several on separate lines.
// The first variable named in the first line is the one reported.
func (c *Config) rewrite(err error) *ConfigError {
	first := strings.TrimSpace(strings.SplitN(err.Error(), "\n", 2)[0])
	known := make(map[string]variable)
	for _, v := range variables(c) {
		known[v.Name] = v
	}
	for _, name := range varNameRE.FindAllString(first, -1) {
		v, ok := known[strings.TrimPrefix(name, envPrefix+"_")]
		if !ok {
			continue
		}
		if accepts := accepted[v.Name]; accepts != "" {
			return invalid(v.Name, formatValue(v.field), c.sources[v.Name], accepts)
		}
		// Keep the package's reason: it may be about a combination of variables.
		reason := first
		if i := strings.Index(reason, " is invalid: "); i >= 0 {
			reason = reason[i+len(" is invalid: "):]
		} else if i := strings.Index(reason, ": "); i >= 0 && !strings.Contains(reason[:i], " ") {
			reason = reason[i+2:]
		}
		e := invalid(v.Name, formatValue(v.field), c.sources[v.Name], "")
		e.msg = strings.TrimSuffix(e.msg, "; accepted values: ") + ": " + reason
		return e
	}
	return &ConfigError{msg: "invalid configuration: " + first}
}

// formatValue prints a parsed value the way an operator would have written it.
func formatValue(f reflect.Value) string {
	if d, ok := f.Interface().(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(f.Interface())
}

func validLogLevel(s string) bool {
	switch s {
	case "DEBUG", "INFO", "WARN", "ERROR":
		return true
	}
	return false
}

func validStrategy(s string) bool {
	for _, v := range routing.Strategies {
		if s == v {
			return true
		}
	}
	return false
}

// writeUsage prints the command line usage and every variable with its default and meaning.
func writeUsage(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`llm-proxy: OpenAI-compatible LLM gateway

Usage:
  llm-proxy                      start the gateway (supervisor and LLM_PROXY_WORKERS workers)
  llm-proxy keys create --name NAME [--models m1,m2] [--expires 30d|12h|2026-12-31]
                   [--rpm N] [--tpm N] [--max-parallel N] [--budget USD] [--budget-tokens N]
                   [--budget-period day|month|total]
                                 create a client API key; the key is printed alone on the last line
  llm-proxy keys update ID [--rpm N] [--tpm N] [--max-parallel N] [--budget USD] [...]
                                 replace a key's limits (0: the global default / none)
  llm-proxy keys list [--json]   list client API keys
  llm-proxy keys revoke ID       revoke a client API key (every worker refuses it within 1s)
  llm-proxy users list [--json]  list users with their model lists and limits
  llm-proxy users update NAME_OR_ID [--rpm N] [--tpm N] [--max-parallel N] [--budget USD]
                   [--budget-tokens N] [--budget-period day|month|total] [--models m1,m2]
                                 change a user's limits (shared by all the user's keys) or models;
                                 only the flags given change, 0 removes a limit
  llm-proxy upstreams add --name NAME --base-url URL [--api-key KEY]
                          [--models m1,m2 | public=upstream,...] [--weight N]
                          [--provider openai|azure|anthropic|gemini] [--priority N] [--max-concurrent N]
                                 add an upstream; without --models every model is passed through
  llm-proxy upstreams list [--json]
  llm-proxy upstreams remove NAME
  llm-proxy routes add --model M [--strategy S|default] [--fallbacks a,b]
                                 set a model's balancing strategy and fallback models
  llm-proxy routes list [--json]
  llm-proxy routes remove M
  llm-proxy cache purge --all | --model M | --prefix HEX
                                 remove cached answers (every worker's memory tier within 1s)
  llm-proxy backup FILE [--timeout 30m]
                                 consistent copy of the database while the gateway runs
  llm-proxy migrate              apply pending database migrations
  llm-proxy status               print workers and the primary lease as JSON
  llm-proxy version              print version, commit and build date
  llm-proxy --help               print this help

Signals to the gateway: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads settings and
restarts the workers one at a time (a change to the settings table does the same by
itself within 2 s); SIGUSR2 replaces the workers with the binary on disk.

If OPENAI_API_KEY is set at the first start and no upstream exists, an upstream named
"openai" (https://api.openai.com/v1, every model) is created with that key.

Environment (priority: environment > settings table in the database > default):

`)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tDESCRIPTION")
	seen := make(map[string]bool)
	for _, v := range variables(&Config{}) {
		// SHUTDOWN_TIMEOUT is in two package configs and is one variable.
		if seen[v.Name] {
			continue
		}
		seen[v.Name] = true
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Key(), def, v.Desc)
	}
	return tw.Flush()
}

// adminSettings is the admin's view of the configuration (admin.Settings): every variable
// resolved from the environment, the settings table and the defaults, as loadConfig does.
type adminSettings struct {
	st     *store.Store
	lookup lookupFunc
}

// maskedVars are shown as "set"/"" in the admin, never their value.
var maskedVars = map[string]bool{"SECRET_KEY": true, "DEFAULT_ADMIN_PASSWORD": true}

// List implements admin.Settings.
func (a adminSettings) List(ctx context.Context) ([]admin.Setting, error) {
	rows, err := a.st.Settings(ctx)
	if err != nil {
		return nil, err
	}
	cfg := &Config{sources: make(map[string]string)}
	vars := variables(cfg)
	if err := resolve(vars, a.lookup, normalizeSettings(rows), cfg.sources); err != nil {
		return nil, err
	}
	cfg.finish()
	seen := make(map[string]bool)
	out := make([]admin.Setting, 0, len(vars))
	for _, v := range vars {
		if seen[v.Name] {
			continue // SHUTDOWN_TIMEOUT is in two package configs and is one variable
		}
		seen[v.Name] = true
		src := cfg.sources[v.Name]
		s := admin.Setting{Name: v.Name, Value: settingValue(v.field), Default: v.Default, Source: src, Description: v.Desc,
			ReadOnly: src == SourceEnv || notFromDB[v.Name]}
		if maskedVars[v.Name] {
			s.Secret = true
			if s.Value != "" {
				s.Value = "(set)"
			}
			if s.Default != "" {
				s.Default = "(set)"
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Validate implements admin.Settings: the stored settings with set applied and del removed
// must load.
func (a adminSettings) Validate(ctx context.Context, set map[string]string, del []string) error {
	rows, err := a.st.Settings(ctx)
	if err != nil {
		return err
	}
	next := normalizeSettings(rows)
	for _, k := range del {
		delete(next, k)
	}
	for k, v := range set {
		next[k] = v
	}
	_, err = loadConfig(a.lookup, next)
	return err
}

func settingValue(f reflect.Value) string {
	if s, ok := f.Interface().([]string); ok {
		return strings.Join(s, ",")
	}
	return formatValue(f)
}
