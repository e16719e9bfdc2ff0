package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

// defaultSemanticThreshold is a target's threshold when --target gives none. It suits the
// built-in lexical embedder, whose top-3 mean similarity is about 0.3 for a request on a
// target's topic and under 0.1 for an unrelated one; `routes fit` tunes it from examples.
const defaultSemanticThreshold = 0.2

// routesEmbedder is the embedder whose scores `routes fit` tunes: the gateway's (the
// built-in lexical embedder serves both the semantic cache and semantic routing).
var routesEmbedder embed.Embedder = embed.Lexical{}

// runRoutesCLI serves `routes`: the cache flags of `routes add`, `routes semantic` and
// `routes fit` here; everything else in runRoutes.
func runRoutesCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "add":
			if hasFlag(args[1:], "cache", "cache-ttl") {
				return routesAddCache(ctx, args[1:], stdout, stderr)
			}
		case "semantic":
			return runSemanticRoutes(ctx, args[1:], stdout, stderr)
		case "fit":
			return routesFit(ctx, args[1:], stdout, stderr)
		}
	}
	return runRoutes(ctx, args, stdout, stderr)
}

// hasFlag reports whether args set any of the named flags (-name, --name, --name=v).
func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if i := strings.IndexByte(a, '='); i >= 0 {
			a = a[:i]
		}
		if slices.Contains(names, a) {
			return true
		}
	}
	return false
}

// parseCacheMode accepts a cache mode flag; "default" (and "") clear the override.
func parseCacheMode(cmd, s string) (string, error) {
	switch s = strings.TrimSpace(s); s {
	case "default", "":
		return "", nil
	case cache.ModeOff, cache.ModeExact, cache.ModeSemantic:
		return s, nil
	}
	return "", usagef("%s: --cache must be off, exact, semantic or default, got %q", cmd, s)
}

// routesAddCache is `routes add` with --cache and/or --cache-ttl: the route's strategy and
// fallbacks change only when given, as in plain `routes add`.
func routesAddCache(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("routes add", stderr)
	model := fs.String("model", "", "public model name the route configures (required)")
	strategy := fs.String("strategy", "", "balancing strategy for this model")
	fallbacks := fs.String("fallbacks", "", "comma-separated fallback models")
	mode := fs.String("cache", "", "cache mode of the route: off, exact, semantic or default (LLM_PROXY_CACHE_MODE)")
	ttl := fs.String("cache-ttl", "", "lifetime of the route's cached answers (1h, 30m); default: LLM_PROXY_CACHE_TTL")
	pos, err := parseFlags(fs, args)
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
	m, err := parseCacheMode("routes add", *mode)
	if err != nil {
		return err
	}
	var d time.Duration
	if s := strings.TrimSpace(*ttl); s != "" && s != "default" && s != "0" {
		if d, err = time.ParseDuration(s); err != nil || d < time.Second {
			return usagef("routes add: --cache-ttl %q must be a duration of at least 1s (1h, 30m) or default", *ttl)
		}
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		if err := putRoute(ctx, st, patch, set["strategy"], set["fallbacks"], stdout); err != nil {
			return err
		}
		cur, err := st.RouteCaches(ctx)
		if err != nil {
			return err
		}
		rc := cur[patch.Model]
		rc.Model = patch.Model
		if set["cache"] {
			rc.Mode = m
		}
		if set["cache-ttl"] {
			rc.TTL = d
		}
		if err := st.SetRouteCache(ctx, rc); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cache of route %q: mode %s, ttl %s\n", rc.Model, orDefault(rc.Mode), ttlText(rc.TTL))
		return nil
	})
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func ttlText(d time.Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}

// runKeysCLI serves `keys`: `keys update ID --cache MODE` here (with any limit flags
// passed on to updateKey); everything else in runKeys.
func runKeysCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "update" || !hasFlag(args[1:], "cache") {
		return runKeys(ctx, args, stdout, stderr)
	}
	// Parsed with the limit flags too, to tell flag values from the key ID.
	fs := newFlagSet("keys update", stderr)
	limitFlags(fs)
	mode := fs.String("cache", "", "cache mode of the key: off, exact, semantic or default")
	ids, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	limits := false
	fs.Visit(func(f *flag.Flag) { limits = limits || f.Name != "cache" })
	m, err := parseCacheMode("keys update", *mode)
	if err != nil {
		return err
	}
	rest, _, err := takeFlag(args[1:], "cache")
	if err != nil {
		return err
	}
	if len(ids) != 1 {
		return usagef("keys update needs exactly one key ID")
	}
	id, err := strconv.ParseInt(ids[0], 10, 64)
	if err != nil || id < 1 {
		return usagef("keys update: %q is not a key ID (see keys list)", ids[0])
	}
	// Limits are replaced only when limit flags were given: `keys update 3 --cache off`
	// must not reset the key's limits.
	if limits {
		if err := updateKey(ctx, rest, stdout, stderr); err != nil {
			return err
		}
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		if err := st.SetAPIKeyCacheMode(ctx, id, m); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no key with ID %d", id)
			}
			return err
		}
		fmt.Fprintf(stdout, "updated cache mode of key %d: %s\n", id, orDefault(m))
		return nil
	})
}

// takeFlag removes flag name (-name v, --name v, --name=v) from args and returns its value.
func takeFlag(args []string, name string) ([]string, string, error) {
	var rest []string
	val, found := "", false
	for i := 0; i < len(args); i++ {
		a := args[i]
		bare := strings.TrimLeft(a, "-")
		switch {
		case a != bare && bare == name:
			if i+1 >= len(args) {
				return nil, "", usagef("flag needs an argument: --%s", name)
			}
			val, found = args[i+1], true
			i++
		case a != bare && strings.HasPrefix(bare, name+"="):
			val, found = bare[len(name)+1:], true
		default:
			rest = append(rest, a)
		}
	}
	if !found {
		return nil, "", usagef("missing --%s", name)
	}
	return rest, val, nil
}

// ---- semantic routes ----

type targetFlags []string

func (t *targetFlags) String() string     { return strings.Join(*t, " ") }
func (t *targetFlags) Set(v string) error { *t = append(*t, v); return nil }

// parseTarget parses --target NAME=MODEL[,threshold=T].
func parseTarget(s string) (store.SemanticTarget, error) {
	parts := strings.Split(s, ",")
	name, model, ok := strings.Cut(parts[0], "=")
	name, model = strings.TrimSpace(name), strings.TrimSpace(model)
	if !ok || name == "" || model == "" {
		return store.SemanticTarget{}, usagef("routes semantic set: --target %q must be NAME=MODEL[,threshold=T]", s)
	}
	t := store.SemanticTarget{Name: name, Model: model, Threshold: defaultSemanticThreshold}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		if strings.TrimSpace(k) != "threshold" {
			return store.SemanticTarget{}, usagef("routes semantic set: --target %q: unknown option %q", s, k)
		}
		th, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || th < -1 || th > 1 {
			return store.SemanticTarget{}, usagef("routes semantic set: --target %q: threshold must be a number in [-1, 1]", s)
		}
		t.Threshold = th
	}
	return t, nil
}

// readUtterances reads a utterances file: a JSON object {"target": ["text", ...]}, or JSON
// lines {"target": "...", "text": "..."}.
func readUtterances(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read utterances: %w", err)
	}
	var m map[string][]string
	if err := json.Unmarshal(b, &m); err == nil {
		return m, nil
	}
	m = map[string][]string{}
	ex, err := readLabelled(bytes.NewReader(b), path)
	if err != nil {
		return nil, err
	}
	for _, e := range ex {
		m[e.Target] = append(m[e.Target], e.Text)
	}
	return m, nil
}

// labelledLine is one line of a labelled JSONL file.
type labelledLine struct {
	Text   string `json:"text"`
	Target string `json:"target"`
}

func readLabelled(r io.Reader, name string) ([]labelledLine, error) {
	var out []labelledLine
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var l labelledLine
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if strings.TrimSpace(l.Text) == "" {
			return nil, fmt.Errorf("%s:%d: \"text\" is empty", name, n)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

func runSemanticRoutes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("routes semantic needs a subcommand: set, list or remove")
	}
	switch args[0] {
	case "set":
		fs := newFlagSet("routes semantic set", stderr)
		model := fs.String("model", "", "public model name clients ask for, e.g. auto (required)")
		def := fs.String("default", "", "model for requests that match no target (required)")
		file := fs.String("utterances-file", "", `example utterances: JSON {"target": ["text", ...]} or JSON lines {"target": "...", "text": "..."} (required)`)
		topK := fs.Int("top-k", store.DefaultSemanticTopK, "closest utterances averaged per target")
		var targets targetFlags
		fs.Var(&targets, "target", "NAME=MODEL[,threshold=T] (repeatable; default threshold "+strconv.FormatFloat(defaultSemanticThreshold, 'f', -1, 64)+")")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("routes semantic set: unexpected argument %q", pos[0])
		}
		if *model == "" || *def == "" || *file == "" || len(targets) == 0 {
			return usagef("routes semantic set needs --model, --default, --utterances-file and at least one --target")
		}
		if *topK < 1 {
			return usagef("routes semantic set: --top-k must be at least 1")
		}
		utt, err := readUtterances(*file)
		if err != nil {
			return err
		}
		r := store.SemanticRoute{Model: *model, Default: *def, TopK: *topK}
		for _, ts := range targets {
			t, err := parseTarget(ts)
			if err != nil {
				return err
			}
			t.Utterances = utt[t.Name]
			if len(t.Utterances) == 0 {
				return usagef("routes semantic set: %s has no utterances for target %q", *file, t.Name)
			}
			delete(utt, t.Name)
			r.Targets = append(r.Targets, t)
		}
		for name := range utt {
			return usagef("routes semantic set: %s has utterances for %q, which no --target names", *file, name)
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			if err := st.PutSemanticRoute(ctx, r); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "set semantic route %q: %d target(s), default %q\n", r.Model, len(r.Targets), r.Default)
			return nil
		})
	case "list":
		fs := newFlagSet("routes semantic list", stderr)
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			return listSemanticRoutes(ctx, st, *asJSON, stdout)
		})
	case "remove":
		return removeByModel(ctx, "routes semantic remove", args[1:], stdout, stderr,
			(*store.Store).DeleteSemanticRoute, "no semantic route %q", "removed semantic route %q\n")
	}
	return usagef("unknown routes semantic subcommand %q", args[0])
}

// semanticRouteJSON is one row of `routes semantic list --json`.
type semanticRouteJSON struct {
	Model   string               `json:"model"`
	Default string               `json:"default"`
	TopK    int                  `json:"top_k"`
	Targets []semanticTargetJSON `json:"targets"`
}

type semanticTargetJSON struct {
	Name       string  `json:"name"`
	Model      string  `json:"model"`
	Threshold  float64 `json:"threshold"`
	Utterances int     `json:"utterances"`
}

func listSemanticRoutes(ctx context.Context, st *store.Store, asJSON bool, stdout io.Writer) error {
	rs, err := st.SemanticRoutes(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		rows := make([]semanticRouteJSON, 0, len(rs))
		for _, r := range rs {
			row := semanticRouteJSON{Model: r.Model, Default: r.Default, TopK: r.TopK}
			for _, t := range r.Targets {
				row.Targets = append(row.Targets, semanticTargetJSON{t.Name, t.Model, t.Threshold, len(t.Utterances)})
			}
			rows = append(rows, row)
		}
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tTARGET\tTARGET MODEL\tTHRESHOLD\tUTTERANCES")
	for _, r := range rs {
		for _, t := range r.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%d\n", r.Model, t.Name, t.Model, t.Threshold, len(t.Utterances))
		}
		fmt.Fprintf(tw, "%s\t(default)\t%s\t-\t-\n", r.Model, r.Default)
	}
	return tw.Flush()
}

// routesFit is `routes fit --model M --file F [--dry-run]`: it tunes the thresholds of M's
// targets on labelled examples (JSON lines {"text": "...", "target": "name"}; a target of
// "", "default" or the default model means no target should win), prints the accuracy
// before and after, and saves the thresholds unless --dry-run.
func routesFit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("routes fit", stderr)
	model := fs.String("model", "", "semantic route to tune (required)")
	file := fs.String("file", "", `labelled examples, JSON lines {"text": "...", "target": "name"} (required)`)
	dry := fs.Bool("dry-run", false, "print the tuned thresholds without saving them")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("routes fit: unexpected argument %q", pos[0])
	}
	if *model == "" || *file == "" {
		return usagef("routes fit needs --model and --file")
	}
	f, err := os.Open(*file)
	if err != nil {
		return fmt.Errorf("routes fit: %w", err)
	}
	lines, err := readLabelled(f, *file)
	f.Close()
	if err != nil {
		return err
	}
	if len(lines) == 0 {
		return fmt.Errorf("routes fit: %s has no examples", *file)
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		rs, err := st.SemanticRoutes(ctx)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(rs, func(r store.SemanticRoute) bool { return r.Model == *model })
		if i < 0 {
			return fmt.Errorf("no semantic route %q (see routes semantic list)", *model)
		}
		sr := rs[i]
		res, err := fitRoute(ctx, sr, lines, routesEmbedder)
		if err != nil {
			return err
		}
		n := len(lines)
		fmt.Fprintf(stdout, "route %q: %d labelled example(s), embedder %s\n", sr.Model, n, routesEmbedder.ID())
		fmt.Fprintf(stdout, "accuracy before: %.1f%% (%d/%d)\n", 100*res.before, int(res.before*float64(n)+0.5), n)
		tw := tabwriter.NewWriter(stdout, 2, 0, 2, ' ', 0)
		for j, t := range sr.Targets {
			fmt.Fprintf(tw, "  %s\tthreshold %.3f -> %.3f\n", t.Name, t.Threshold, res.thresholds[j])
		}
		tw.Flush()
		fmt.Fprintf(stdout, "accuracy after:  %.1f%% (%d/%d)\n", 100*res.after, int(res.after*float64(n)+0.5), n)
		if *dry {
			fmt.Fprintln(stdout, "dry run: thresholds not saved")
			return nil
		}
		th := make(map[string]float64, len(sr.Targets))
		for j, t := range sr.Targets {
			th[t.Name] = res.thresholds[j]
		}
		if err := st.SetSemanticThresholds(ctx, sr.Model, th); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "thresholds saved; every worker uses them within a second")
		return nil
	})
}

type fitResult struct {
	before, after float64
	thresholds    []float64
}

// fitRoute scores every example against sr's targets and tunes the thresholds.
func fitRoute(ctx context.Context, sr store.SemanticRoute, lines []labelledLine, emb embed.Embedder) (fitResult, error) {
	rr := routing.SemanticRoute{Model: sr.Model, Default: sr.Default, TopK: sr.TopK}
	start := make([]float32, 0, len(sr.Targets))
	index := map[string]int{}
	for j, t := range sr.Targets {
		rr.Targets = append(rr.Targets, routing.SemanticTarget{Name: t.Name, Model: t.Model,
			Threshold: float32(t.Threshold), Utterances: t.Utterances})
		start = append(start, float32(t.Threshold))
		index[t.Name] = j
	}
	router, err := routing.NewSemanticRouter(ctx, rr, emb)
	if err != nil {
		return fitResult{}, err
	}
	ex := make([]routing.Labelled, 0, len(lines))
	for n, l := range lines {
		want := -1
		switch l.Target {
		case "", "default", sr.Default:
		default:
			j, ok := index[l.Target]
			if !ok {
				return fitResult{}, fmt.Errorf("example %d: route %q has no target %q", n+1, sr.Model, l.Target)
			}
			want = j
		}
		v, err := emb.Embed(ctx, l.Text, nil)
		if err != nil {
			return fitResult{}, fmt.Errorf("example %d: %w", n+1, err)
		}
		ex = append(ex, routing.Labelled{Scores: router.Scores(v, nil), Want: want})
	}
	th, after := routing.FitThresholds(ex, start)
	res := fitResult{before: routing.Accuracy(ex, start), after: after}
	for _, x := range th {
		// The shortest decimal that converts back to the same float32: rounding more
		// could move a midpoint across a close score.
		v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		res.thresholds = append(res.thresholds, v)
	}
	return res, nil
}
