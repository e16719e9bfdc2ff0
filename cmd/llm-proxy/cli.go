package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
	"github.com/llm-proxy/llm-proxy/worker/upstream"
)

// cliTimeout bounds one subcommand's database work: a CLI call that waits on a wedged lock
// should fail visibly, not hang a shell script.
const cliTimeout = 30 * time.Second

// runCommand runs one CLI subcommand against the database.
func runCommand(args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return writeUsage(stdout)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "llm-proxy %s (commit %s, built %s, %s %s/%s)\n",
			version, commit, buildDate, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "backup":
		// Its own timeout: copying a large database may take longer than cliTimeout.
		return runBackup(args[1:], stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	switch args[0] {
	case "migrate":
		// The count comes from the migration run withMigratedStore already did: migrating
		// again inside the callback would always find nothing left and report 0.
		return withMigratedStore(ctx, stderr, false, func(st *store.Store, applied int) error {
			fmt.Fprintf(stdout, "applied %d migration(s) to %s\n", applied, st.Path())
			return nil
		})
	case "keys":
		return runKeysCLI(ctx, args[1:], stdout, stderr)
	case "upstreams":
		return runUpstreams(ctx, args[1:], stdout, stderr)
	case "routes":
		return runRoutesCLI(ctx, args[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "cache":
		return runCache(ctx, args[1:], stdout, stderr)
	case "users":
		return runUsersCLI(ctx, args[1:], stdout, stderr)
	}
	return usagef("unknown command %q", args[0])
}

// withStore opens and migrates the database named by the environment (or the default), runs
// fn and closes it. Migrating first means a CLI call against a fresh path just works.
//
// Only commands that touch provider keys (needSecret) load the secret key: a `keys list` run
// from a shell that lacks LLM_PROXY_SECRET_KEY must not create a secret.key file that
// differs from the gateway's key.
func withStore(ctx context.Context, stderr io.Writer, needSecret bool, fn func(st *store.Store) error) error {
	return withMigratedStore(ctx, stderr, needSecret, func(st *store.Store, _ int) error { return fn(st) })
}

// withMigratedStore is withStore that also hands fn the number of migrations this call
// applied, which only the migrate command reports.
func withMigratedStore(ctx context.Context, stderr io.Writer, needSecret bool, fn func(st *store.Store, applied int) error) error {
	scfg, secretKey, err := loadDatabaseConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	// CLI commands open a handful of connections at most; the pool limits are for servers.
	scfg.MaxOpenConns, scfg.MaxIdleConns = 2, 1
	logger := hclog.New(&hclog.LoggerOptions{Name: "llm-proxy", Level: hclog.Warn, Output: stderr})
	var box *secret.Box
	if needSecret {
		if box, _, err = secret.Load(secretKey, filepath.Dir(scfg.Path)); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, scfg, box, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	return fn(st, applied)
}

// newFlagSet returns a flag set that reports errors to stderr and never exits by itself.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("llm-proxy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, allowing positional arguments before flags ("revoke 3 --json").
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &usageError{msg: "help requested"}
			}
			return nil, &usageError{msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// ---- keys ----

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("keys needs a subcommand: create, update, list or revoke")
	}
	switch args[0] {
	case "create":
		fs := newFlagSet("keys create", stderr)
		name := fs.String("name", "", "key name (required)")
		models := fs.String("models", "", "comma-separated models the key may use (default: all)")
		expires := fs.String("expires", "", "lifetime (30d, 12h) or last valid date (2026-12-31); default: never")
		lim := limitFlags(fs)
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("keys create: unexpected argument %q", pos[0])
		}
		kl, err := lim.limits("keys create")
		if err != nil {
			return err
		}
		if strings.TrimSpace(*name) == "" {
			return usagef("keys create: --name is required")
		}
		now := time.Now()
		exp, err := parseExpiry(*expires, now)
		if err != nil {
			return err
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			return createKey(ctx, st, strings.TrimSpace(*name), splitList(*models), exp, kl, now, stdout)
		})
	case "update":
		return updateKey(ctx, args[1:], stdout, stderr)
	case "list":
		fs := newFlagSet("keys list", stderr)
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			return listKeys(ctx, st, *asJSON, time.Now(), stdout)
		})
	case "revoke":
		fs := newFlagSet("keys revoke", stderr)
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("keys revoke needs exactly one key ID")
		}
		id, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil || id < 1 {
			return usagef("keys revoke: %q is not a key ID (see keys list)", pos[0])
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			if err := st.RevokeAPIKey(ctx, id, time.Now()); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no key with ID %d", id)
				}
				return err
			}
			fmt.Fprintf(stdout, "revoked key %d\n", id)
			return nil
		})
	}
	return usagef("unknown keys subcommand %q", args[0])
}

// keyAlphabet is base62: 32 characters carry 32·log2(62) ≈ 190 bits.
const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

const keyRandomChars = 32

// newAPIKey returns "sk-" and 32 uniformly random base62 characters from crypto/rand.
func newAPIKey() (string, error) {
	out := make([]byte, 0, 3+keyRandomChars)
	out = append(out, "sk-"...)
	var buf [64]byte
	for len(out) < cap(out) {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("generate key: %w", err)
		}
		for _, b := range buf {
			// Rejection sampling: 248 = 4·62, so b%62 is uniform for b < 248.
			if b >= 248 {
				continue
			}
			out = append(out, keyAlphabet[b%62])
			if len(out) == cap(out) {
				break
			}
		}
	}
	return string(out), nil
}

// keyPrefix is what listings show of a key: enough to tell keys apart, far too little to use.
func keyPrefix(key string) string {
	return key[:8] + "…"
}

func createKey(ctx context.Context, st *store.Store, name string, models []string, expires time.Time, kl store.KeyLimits, now time.Time, stdout io.Writer) error {
	key, err := newAPIKey()
	if err != nil {
		return err
	}
	id, err := st.CreateAPIKey(ctx, store.APIKey{
		Name:      name,
		Hash:      sha256.Sum256([]byte(key)),
		Prefix:    keyPrefix(key),
		Models:    models,
		CreatedAt: now,
		ExpiresAt: expires,
		Limits:    kl,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created key %d %q (models: %s, expires: %s); it is shown only once:\n",
		id, name, modelsText(models), timeText(expires))
	fmt.Fprintln(stdout, key)
	return nil
}

// parseExpiry accepts "" (never), a lifetime ("30d", "12h", "90m", "1h30m") or a date
// ("2026-12-31": the key works through that day, UTC) or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "never" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.AddDate(0, 0, 1), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return time.Time{}, usagef("--expires %q: want a lifetime like 30d or 12h, or a date like 2026-12-31", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return time.Time{}, usagef("--expires %q: want a lifetime like 30d or 12h, or a date like 2026-12-31", s)
		}
	}
	if d <= 0 {
		return time.Time{}, usagef("--expires %q: the lifetime must be positive", s)
	}
	return now.Add(d), nil
}

// keyJSON is one row of `keys list --json`.
type keyJSON struct {
	ID        int64    `json:"id"`
	Name      string   `json:"name"`
	Prefix    string   `json:"prefix"`
	Models    []string `json:"models"`
	CreatedAt string   `json:"created"`
	ExpiresAt string   `json:"expires,omitempty"`
	State     string   `json:"state"`
}

func listKeys(ctx context.Context, st *store.Store, asJSON bool, now time.Time, stdout io.Writer) error {
	keys, err := st.ListAPIKeys(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		rows := make([]keyJSON, 0, len(keys))
		for i := range keys {
			k := &keys[i]
			models := k.Models
			if models == nil {
				models = []string{}
			}
			row := keyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Models: models,
				CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339), State: k.State(now)}
			if !k.ExpiresAt.IsZero() {
				row.ExpiresAt = k.ExpiresAt.UTC().Format(time.RFC3339)
			}
			rows = append(rows, row)
		}
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tMODELS\tCREATED\tEXPIRES\tSTATE")
	for i := range keys {
		k := &keys[i]
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Prefix, modelsText(k.Models),
			timeText(k.CreatedAt), timeText(k.ExpiresAt), k.State(now))
	}
	return tw.Flush()
}

func modelsText(models []string) string {
	if len(models) == 0 {
		return "all"
	}
	return strings.Join(models, ",")
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// ---- upstreams ----

func runUpstreams(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("upstreams needs a subcommand: add, list or remove")
	}
	switch args[0] {
	case "add":
		fs := newFlagSet("upstreams add", stderr)
		name := fs.String("name", "", "upstream name (required, unique)")
		baseURL := fs.String("base-url", "", "OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1 (required)")
		apiKey := fs.String("api-key", "", "the provider's API key (stored encrypted)")
		models := fs.String("models", "", "models served: m1,m2 or public=upstream aliases (default: any model, passed through)")
		weight := fs.Int("weight", 1, "share of traffic among upstreams serving the same model")
		provider := fs.String("provider", "openai", "provider API: "+strings.Join(providers, ", "))
		priority := fs.Int("priority", 0, "tier of its deployments: lower tiers are tried first, higher ones only when every lower one is unavailable")
		maxConc := fs.Int("max-concurrent", 0, "most requests in flight on each of its deployments across all workers (0: unlimited)")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("upstreams add: unexpected argument %q", pos[0])
		}
		u, err := buildUpstream(*name, *baseURL, *apiKey, *models, *weight, *provider)
		if err != nil {
			return err
		}
		if err := setTiers(&u, *priority, *maxConc); err != nil {
			return err
		}
		return withStore(ctx, stderr, true, func(st *store.Store) error {
			if err := checkBaseURLPolicy(ctx, st, u.BaseURL); err != nil {
				return err
			}
			if _, err := st.AddUpstream(ctx, u); err != nil {
				if errors.Is(err, store.ErrExists) {
					return fmt.Errorf("an upstream named %q already exists", u.Name)
				}
				return err
			}
			fmt.Fprintf(stdout, "added upstream %q (%s %s, models: %s, weight %d, priority %d, max concurrent %s, key %s)\n",
				u.Name, u.Provider, u.BaseURL, deploymentsText(u.Deployments), u.Weight, *priority, limitText(*maxConc), maskKey(u.APIKey))
			return nil
		})
	case "list":
		fs := newFlagSet("upstreams list", stderr)
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		return withStore(ctx, stderr, true, func(st *store.Store) error {
			return listUpstreams(ctx, st, *asJSON, stdout)
		})
	case "remove":
		fs := newFlagSet("upstreams remove", stderr)
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("upstreams remove needs exactly one upstream name")
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			if err := st.RemoveUpstream(ctx, pos[0]); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no upstream named %q", pos[0])
				}
				return err
			}
			fmt.Fprintf(stdout, "removed upstream %q\n", pos[0])
			return nil
		})
	}
	return usagef("unknown upstreams subcommand %q", args[0])
}

// buildUpstream validates the flags of `upstreams add` and turns them into a store.Upstream.
func buildUpstream(name, baseURL, apiKey, models string, weight int, provider string) (store.Upstream, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return store.Upstream{}, usagef("upstreams add: --name is required")
	}
	base, err := parseBaseURL(baseURL)
	if err != nil {
		return store.Upstream{}, err
	}
	if weight < 0 {
		return store.Upstream{}, usagef("upstreams add: --weight must be 0 or more, got %d", weight)
	}
	if !slices.Contains(providers, provider) {
		return store.Upstream{}, usagef("upstreams add: --provider %q is not supported; accepted values are %s", provider, strings.Join(providers, ", "))
	}
	deps, err := parseDeployments(models)
	if err != nil {
		return store.Upstream{}, err
	}
	return store.Upstream{
		Name:        name,
		Provider:    provider,
		BaseURL:     base,
		APIKey:      strings.TrimSpace(apiKey),
		Weight:      weight,
		Enabled:     true,
		Deployments: deps,
	}, nil
}

// checkBaseURLPolicy refuses a base URL the workers would refuse to dial: a literal
// address (in any spelling: 169.254.169.254, 127.1, 0x7f000001, ::ffff:10.0.0.1) outside
// the configured LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS policy. The policy is resolved as the
// worker resolves it (environment, then settings table, then the default), so what the CLI
// accepts is what the gateway will call. Host names are checked at dial time only, since
// what they resolve to can change.
func checkBaseURLPolicy(ctx context.Context, st *store.Store, baseURL string) error {
	const name = "ALLOW_PRIVATE_UPSTREAMS"
	value, ok := os.LookupEnv(envPrefix + "_" + name)
	if !ok {
		settings, err := st.Settings(ctx)
		if err != nil {
			return err
		}
		value = normalizeSettings(settings)[name]
	}
	policy, err := upstream.ParsePolicy(value)
	if err != nil {
		return usagef("%v", err)
	}
	if err := upstream.ValidateBaseURL(baseURL, policy); err != nil {
		return usagef("upstreams add: --base-url refused: %v", err)
	}
	return nil
}

// providers are the accepted --provider values: the APIs the gateway translates to.
var providers = []string{"openai", "azure", "anthropic", "gemini"}

// setTiers applies --priority and --max-concurrent to every deployment of u.
func setTiers(u *store.Upstream, priority, maxConcurrent int) error {
	if priority < 0 {
		return usagef("upstreams add: --priority must be 0 or more, got %d", priority)
	}
	if maxConcurrent < 0 {
		return usagef("upstreams add: --max-concurrent must be 0 (unlimited) or more, got %d", maxConcurrent)
	}
	for i := range u.Deployments {
		u.Deployments[i].Priority = priority
		u.Deployments[i].MaxConcurrent = maxConcurrent
	}
	return nil
}

func limitText(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

func parseBaseURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if s == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return "", usagef("upstreams add: --base-url %q must be an http:// or https:// URL with a host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", usagef("upstreams add: --base-url %q must not have a query or fragment", s)
	}
	// The worker appends /chat/completions and friends; a trailing slash would double it.
	return strings.TrimRight(s, "/"), nil
}

// parseDeployments reads "m1,m2" (served under the same name) and "public=upstream" aliases.
// Nothing means one wildcard deployment: any model name is passed through.
// Deployments get weight 1: the upstream's --weight is the balancing knob, and the
// routing table multiplies the two.
func parseDeployments(s string) ([]store.Deployment, error) {
	items := splitList(s)
	if len(items) == 0 {
		return []store.Deployment{{PublicModel: store.AnyModel, Weight: 1}}, nil
	}
	seen := make(map[string]bool)
	deps := make([]store.Deployment, 0, len(items))
	for _, it := range items {
		public, upstream, alias := strings.Cut(it, "=")
		public, upstream = strings.TrimSpace(public), strings.TrimSpace(upstream)
		if !alias {
			upstream = public
		}
		if public == "" || upstream == "" || strings.Contains(upstream, "=") {
			return nil, usagef("upstreams add: --models item %q must be a model name or public=upstream", it)
		}
		if seen[public] {
			return nil, usagef("upstreams add: --models lists %q twice", public)
		}
		seen[public] = true
		d := store.Deployment{PublicModel: public, UpstreamModel: upstream, Weight: 1}
		if public == store.AnyModel {
			d.UpstreamModel = ""
		}
		deps = append(deps, d)
	}
	return deps, nil
}

// maskKey shows enough of a provider key to recognise it ("sk-a…wxyz") and never all of it.
func maskKey(k string) string {
	switch {
	case k == "":
		return "(none)"
	case len(k) < 12:
		return "…" + k[len(k)-2:]
	}
	return k[:4] + "…" + k[len(k)-4:]
}

func deploymentsText(deps []store.Deployment) string {
	if len(deps) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(deps))
	for _, d := range deps {
		switch {
		case d.PublicModel == store.AnyModel:
			parts = append(parts, "* (any)")
		case d.UpstreamModel != "" && d.UpstreamModel != d.PublicModel:
			parts = append(parts, d.PublicModel+"="+d.UpstreamModel)
		default:
			parts = append(parts, d.PublicModel)
		}
	}
	return strings.Join(parts, ",")
}

// upstreamJSON is one row of `upstreams list --json`; the key is masked there too.
type upstreamJSON struct {
	ID       int64       `json:"id"`
	Name     string      `json:"name"`
	Provider string      `json:"provider"`
	BaseURL  string      `json:"base_url"`
	Models   []modelJSON `json:"models"`
	Weight   int         `json:"weight"`
	Enabled  bool        `json:"enabled"`
	APIKey   string      `json:"api_key"`
	Created  string      `json:"created"`
}

type modelJSON struct {
	Public        string `json:"public"`
	Upstream      string `json:"upstream,omitempty"`
	Weight        int    `json:"weight"`
	Priority      int    `json:"priority"`
	MaxConcurrent int    `json:"max_concurrent"`
}

func listUpstreams(ctx context.Context, st *store.Store, asJSON bool, stdout io.Writer) error {
	ups, err := st.ListUpstreams(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		rows := make([]upstreamJSON, 0, len(ups))
		for _, u := range ups {
			row := upstreamJSON{ID: u.ID, Name: u.Name, Provider: providerName(u.Provider), BaseURL: u.BaseURL,
				Models: []modelJSON{}, Weight: u.Weight, Enabled: u.Enabled, APIKey: maskKey(u.APIKey),
				Created: u.CreatedAt.UTC().Format(time.RFC3339)}
			for _, d := range u.Deployments {
				row.Models = append(row.Models, modelJSON{Public: d.PublicModel, Upstream: d.UpstreamModel, Weight: d.Weight,
					Priority: d.Priority, MaxConcurrent: d.MaxConcurrent})
			}
			rows = append(rows, row)
		}
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPROVIDER\tBASE URL\tMODELS\tWEIGHT\tPRIORITY\tMAX CONCURRENT\tENABLED\tAPI KEY")
	for _, u := range ups {
		prio, maxc := tiersText(u.Deployments)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%t\t%s\n", u.Name, providerName(u.Provider), u.BaseURL,
			deploymentsText(u.Deployments), u.Weight, prio, maxc, u.Enabled, maskKey(u.APIKey))
	}
	return tw.Flush()
}

// tiersText summarises the deployments' priority and concurrency cap for the table:
// the CLI sets one value per upstream, but the admin may set them per deployment.
func tiersText(deps []store.Deployment) (priority, maxConcurrent string) {
	if len(deps) == 0 {
		return "-", "-"
	}
	priority, maxConcurrent = strconv.Itoa(deps[0].Priority), limitText(deps[0].MaxConcurrent)
	for _, d := range deps[1:] {
		if d.Priority != deps[0].Priority {
			priority = "mixed"
		}
		if d.MaxConcurrent != deps[0].MaxConcurrent {
			maxConcurrent = "mixed"
		}
	}
	return priority, maxConcurrent
}

func providerName(p string) string {
	if p == "" {
		return "openai"
	}
	return p
}

// ---- shared helpers ----

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- routes ----

func runRoutes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("routes needs a subcommand: add, list or remove")
	}
	switch args[0] {
	case "add":
		fs := newFlagSet("routes add", stderr)
		model := fs.String("model", "", "public model name the route configures (required)")
		strategy := fs.String("strategy", "", "balancing strategy for this model: "+strings.Join(routing.Strategies, ", ")+
			`; "default" uses LLM_PROXY_LOAD_BALANCE_STRATEGY`)
		fallbacks := fs.String("fallbacks", "", "comma-separated public models tried in order when every deployment of the model failed; empty clears")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("routes add: unexpected argument %q", pos[0])
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		patch, err := parseRoute(*model, *strategy, *fallbacks)
		if err != nil {
			return err
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			return putRoute(ctx, st, patch, set["strategy"], set["fallbacks"], stdout)
		})
	case "list":
		fs := newFlagSet("routes list", stderr)
		asJSON := fs.Bool("json", false, "print JSON")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("routes list: unexpected argument %q", pos[0])
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			return listRoutes(ctx, st, *asJSON, stdout)
		})
	case "remove":
		return removeByModel(ctx, "routes remove", args[1:], stdout, stderr,
			(*store.Store).DeleteRoute, "no route for model %q",
			"removed route %q: the model uses the default strategy and has no fallbacks\n")
	}
	return usagef("unknown routes subcommand %q", args[0])
}

// removeByModel is a `... remove MODEL` subcommand: del removes the row keyed by
// the public model name; notFound and done are messages with the model's %q.
func removeByModel(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer,
	del func(*store.Store, context.Context, string) error, notFound, done string) error {
	fs := newFlagSet(cmd, stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s needs exactly one model name", cmd)
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		if err := del(st, ctx, pos[0]); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf(notFound, pos[0])
			}
			return err
		}
		fmt.Fprintf(stdout, done, pos[0])
		return nil
	})
}

// parseRoute validates the flags of `routes add`.
func parseRoute(model, strategy, fallbacks string) (store.Route, error) {
	model = strings.TrimSpace(model)
	if model == "" {
		return store.Route{}, usagef("routes add: --model is required")
	}
	if model == store.AnyModel || strings.Contains(model, ",") {
		return store.Route{}, usagef("routes add: --model %q must be one public model name", model)
	}
	strategy = strings.TrimSpace(strategy)
	if strategy == "default" {
		strategy = ""
	}
	if strategy != "" && !slices.Contains(routing.Strategies, strategy) {
		return store.Route{}, usagef("routes add: --strategy %q is invalid; accepted values are %s (or default)",
			strategy, strings.Join(routing.Strategies, ", "))
	}
	r := store.Route{Model: model, Strategy: strategy}
	seen := map[string]bool{}
	for _, f := range splitList(fallbacks) {
		switch {
		case f == model:
			return store.Route{}, usagef("routes add: --fallbacks lists the model %q itself", f)
		case f == store.AnyModel:
			return store.Route{}, usagef("routes add: --fallbacks takes public model names, not %q", f)
		case seen[f]:
			return store.Route{}, usagef("routes add: --fallbacks lists %q twice", f)
		}
		seen[f] = true
		r.Fallbacks = append(r.Fallbacks, f)
	}
	return r, nil
}

// putRoute creates the route, or changes only what the command line set on an
// existing one: adding fallbacks must not silently reset a strategy chosen earlier,
// nor the reverse.
func putRoute(ctx context.Context, st *store.Store, patch store.Route, setStrategy, setFallbacks bool, stdout io.Writer) error {
	routes, err := st.Routes(ctx)
	if err != nil {
		return err
	}
	r, verb := patch, "added"
	if i := slices.IndexFunc(routes, func(x store.Route) bool { return x.Model == patch.Model }); i >= 0 {
		r, verb = routes[i], "updated"
		if setStrategy {
			r.Strategy = patch.Strategy
		}
		if setFallbacks {
			r.Fallbacks = patch.Fallbacks
		}
	}
	if err := st.PutRoute(ctx, r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s route %q (strategy: %s, fallbacks: %s)\n", verb, r.Model, strategyText(r.Strategy), fallbacksText(r.Fallbacks))
	return nil
}

func strategyText(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func fallbacksText(f []string) string {
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, ",")
}

// routeJSON is one row of `routes list --json`; strategy "" means the global default.
type routeJSON struct {
	Model     string   `json:"model"`
	Strategy  string   `json:"strategy"`
	Fallbacks []string `json:"fallbacks"`
	Created   string   `json:"created"`
	Updated   string   `json:"updated"`
}

func listRoutes(ctx context.Context, st *store.Store, asJSON bool, stdout io.Writer) error {
	routes, err := st.Routes(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		rows := make([]routeJSON, 0, len(routes))
		for _, r := range routes {
			fb := r.Fallbacks
			if fb == nil {
				fb = []string{}
			}
			rows = append(rows, routeJSON{Model: r.Model, Strategy: r.Strategy, Fallbacks: fb,
				Created: r.CreatedAt.UTC().Format(time.RFC3339), Updated: r.UpdatedAt.UTC().Format(time.RFC3339)})
		}
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSTRATEGY\tFALLBACKS\tUPDATED")
	for _, r := range routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Model, strategyText(r.Strategy), fallbacksText(r.Fallbacks), timeText(r.UpdatedAt))
	}
	return tw.Flush()
}
