package cache

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Guard is the false-hit guard of the semantic tier: the words of a prompt that decide
// which question it asks. Two prompts may share an answer only if their guards are equal,
// however close their vectors: "capital of France" and "capital of Spain" are one word
// apart, and an embedder built on word overlap scores them as near-duplicates.
//
// The guard holds, lower-cased and de-duplicated:
//   - numbers and tokens with digits ("3", "2024", "v2", "3.5"), and number words;
//   - named entities: capitalised words not at the start of a sentence, words with
//     inner capitals or all capitals (PyTorch, iPhone, HTTP), and a sentence-initial
//     capitalised word that is not an ordinary English word;
//   - negation (not, no, never, n't, without, ...) as one marker;
//   - programming languages and technologies, natural languages, months and weekdays;
//   - units, singular and plural alike (km, miles, celsius);
//   - polarity words, by class (largest/biggest/max are one class, smallest/min another);
//   - direction: the guard token right after "to"/"into"/"from" is marked as a target or
//     source, so "Celsius to Fahrenheit" differs from "Fahrenheit to Celsius".
type Guard struct {
	strict   []string        // numbers, negation, technologies, units, polarity: sorted, must be equal
	entities []string        // named entities: each must occur as a word of the other prompt
	words    map[string]bool // every lower-cased word, for the entity check
	targets  map[string]bool // guard tokens after "to", "into", "in"
	sources  map[string]bool // guard tokens after "from"
}

// Tokens returns the guard's tokens, sorted (for logs and tests): the strict ones, then
// "e:" entities, ">" targets and "<" sources.
func (g Guard) Tokens() []string {
	out := slices.Clone(g.strict)
	for _, e := range g.entities {
		out = append(out, "e:"+e)
	}
	for t := range g.targets {
		out = append(out, ">"+t)
	}
	for t := range g.sources {
		out = append(out, "<"+t)
	}
	slices.Sort(out)
	return out
}

// Agrees reports whether g and o ask about the same things: the same numbers, negation,
// technologies, units and polarity; every named entity of each found in the other (in any
// case, so "Timm" at the start of a sentence matches "timm"); and no swapped direction.
func (g Guard) Agrees(o Guard) bool {
	if !slices.Equal(g.strict, o.strict) {
		return false
	}
	for _, e := range g.entities {
		if !o.words[e] {
			return false
		}
	}
	for _, e := range o.entities {
		if !g.words[e] {
			return false
		}
	}
	return !swapped(g, o) && !swapped(o, g)
}

// swapped reports a direction conflict: a token that is a target in g is a source in o, or
// is present but not a target in o while o targets something g has but does not target
// ("miles to km" against "km to miles").
func swapped(g, o Guard) bool {
	for t := range g.targets {
		if o.sources[t] {
			return true
		}
		if o.targets[t] {
			continue
		}
		for u := range o.targets {
			if !g.targets[u] && g.has(u) {
				return true
			}
		}
	}
	return false
}

// has reports whether g holds the guard token tok anywhere.
func (g Guard) has(tok string) bool {
	_, found := slices.BinarySearch(g.strict, tok)
	return found || g.words[tok]
}

// NewGuard extracts the guard of text.
func NewGuard(text string) Guard {
	words := splitWords(text)
	g := Guard{words: make(map[string]bool, len(words))}
	neg := false
	for i, w := range words {
		lw := strings.ToLower(w.text)
		g.words[lw] = true
		var tok string
		switch {
		case negations[lw] || strings.HasSuffix(lw, "n't"):
			neg = true
			continue
		case hasDigit(lw):
			tok = "#" + strings.TrimSuffix(lw, ".")
		case numberWords[lw]:
			tok = "#" + lw
		case polarity[lw] != "":
			tok = "~" + polarity[lw]
		case units[lw] != "":
			tok = "u:" + units[lw]
			g.words["u:"+units[lw]] = true
		case techNames[lw] || (ambiguousTech[lw] && isUpper(w.text)):
			tok = "t:" + canonicalTech(lw)
			g.words["t:"+canonicalTech(lw)] = true
		case naturalWords[lw] || isEntity(w, lw):
			g.entities = append(g.entities, lw)
			tok = "e:" + lw
			g.words[tok] = true
		default:
			continue
		}
		if !strings.HasPrefix(tok, "e:") {
			g.strict = append(g.strict, tok)
		}
		if i > 0 {
			switch directionOf(words, i) {
			case ">":
				if g.targets == nil {
					g.targets = map[string]bool{}
				}
				g.targets[tok] = true
			case "<":
				if g.sources == nil {
					g.sources = map[string]bool{}
				}
				g.sources[tok] = true
			}
		}
	}
	if neg {
		g.strict = append(g.strict, "!not")
	}
	slices.Sort(g.strict)
	g.strict = slices.Compact(g.strict)
	slices.Sort(g.entities)
	g.entities = slices.Compact(g.entities)
	return g
}

// directionOf returns ">" when words[i] follows "to"/"into"/"in" (skipping an article), "<" when
// it follows "from", else "".
func directionOf(words []word, i int) string {
	j := i - 1
	if j > 0 && articles[strings.ToLower(words[j].text)] {
		j--
	}
	switch strings.ToLower(words[j].text) {
	case "to", "into", "in":
		return ">"
	case "from":
		return "<"
	}
	return ""
}

type word struct {
	text    string
	initial bool // first word of a sentence
}

// splitWords splits on anything but letters, digits, apostrophes inside words, and the
// characters that are part of technology names (c++, c#, node.js, 3.5).
func splitWords(text string) []word {
	var out []word
	initial := true
	start := -1
	flush := func(end int) {
		if start >= 0 {
			w := strings.Trim(text[start:end], "'.")
			if w != "" {
				out = append(out, word{text: w, initial: initial})
				initial = false
			}
			start = -1
		}
	}
	for i, r := range text {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if start < 0 {
				start = i
			}
		case start >= 0 && (r == '+' || r == '#'):
			// part of c++, c#, f#
		case start >= 0 && (r == '.' || r == '\'' || r == '’') && i+utf8.RuneLen(r) < len(text) && isAlnumAt(text, i+utf8.RuneLen(r)):
			// node.js, 3.5, don't
		default:
			flush(i)
			if r == '.' || r == '?' || r == '!' || r == ':' || r == '\n' {
				initial = true
			}
		}
	}
	flush(len(text))
	for i := range out {
		out[i].text = strings.ReplaceAll(out[i].text, "’", "'")
	}
	return out
}

func isAlnumAt(s string, i int) bool {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

func hasDigit(s string) bool {
	return strings.ContainsAny(s, "0123456789")
}

func isUpper(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsUpper(r)
}

// isEntity: a capitalised word that is not explained by sentence case.
func isEntity(w word, lw string) bool {
	r, _ := utf8.DecodeRuneInString(w.text)
	if !unicode.IsUpper(r) {
		// "iPhone", "macOS": lower-case start with an inner capital.
		return strings.IndexFunc(w.text, unicode.IsUpper) > 0
	}
	if len(w.text) == 1 {
		return !w.initial && w.text != "I"
	}
	if strings.IndexFunc(w.text[1:], unicode.IsUpper) >= 0 {
		return true // HTTP, PyTorch, GraphQL
	}
	if !w.initial {
		return lw != "i" && !commonCapitalised[lw]
	}
	return !commonInitial[lw]
}

var articles = map[string]bool{"a": true, "an": true, "the": true, "my": true, "your": true}

var negations = set("not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor",
	"cannot", "cant", "dont", "doesnt", "isnt", "arent", "wasnt", "werent", "wont", "shouldnt", "couldnt",
	"wouldnt", "didnt", "hasnt", "havent", "except", "excluding")

var numberWords = set("zero", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
	"eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
	"nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
	"hundred", "thousand", "million", "billion", "trillion", "half", "double", "twice", "triple",
	"dozen", "second", "third", "fourth", "fifth", "tenth")

// polarity maps words that flip the question to their class.
var polarity = func() map[string]string {
	m := map[string]string{}
	for class, ws := range map[string][]string{
		"max":      {"max", "maximum", "largest", "biggest", "highest", "greatest", "longest", "most", "tallest", "oldest", "heaviest"},
		"min":      {"min", "minimum", "smallest", "lowest", "least", "shortest", "fewest", "youngest", "lightest"},
		"best":     {"best"},
		"worst":    {"worst"},
		"up":       {"increase", "increases", "increasing", "raise", "grow", "grows"},
		"down":     {"decrease", "decreases", "decreasing", "reduce", "reduces", "shrink", "shrinks"},
		"before":   {"before", "prior"},
		"after":    {"after"},
		"first":    {"first", "earliest"},
		"last":     {"last", "latest"},
		"asc":      {"ascending"},
		"desc":     {"descending", "reverse", "reversed"},
		"enc":      {"encrypt", "encrypts", "encryption", "encode", "encoding"},
		"dec":      {"decrypt", "decrypts", "decryption", "decode", "decoding"},
		"zip":      {"compress", "compression", "zip"},
		"unzip":    {"decompress", "decompression", "unzip"},
		"upload":   {"upload", "uploads"},
		"download": {"download", "downloads"},
		"import":   {"import", "imports"},
		"export":   {"export", "exports"},
		"pro":      {"advantages", "advantage", "pros", "benefits", "benefit"},
		"con":      {"disadvantages", "disadvantage", "cons", "drawbacks", "drawback", "risks"},
		"add":      {"add", "insert", "append"},
		"remove":   {"remove", "delete", "drop"},
		"enable":   {"enable", "activate"},
		"disable":  {"disable", "deactivate"},
		"buy":      {"buy", "purchase"},
		"sell":     {"sell"},
		"north":    {"north", "northern"},
		"south":    {"south", "southern"},
		"east":     {"east", "eastern"},
		"west":     {"west", "western"},
		"cheap":    {"cheapest", "cheaper"},
		"costly":   {"expensive", "priciest"},
		"serial":   {"serialize", "serialise", "marshal"},
		"deserial": {"deserialize", "deserialise", "unmarshal"},
	} {
		for _, w := range ws {
			m[w] = class
		}
	}
	return m
}()

// units maps unit spellings to one name.
var units = func() map[string]string {
	m := map[string]string{}
	for name, ws := range map[string][]string{
		"km": {"km", "kms", "kilometer", "kilometers", "kilometre", "kilometres"}, "m": {"meter", "meters", "metre", "metres"},
		"cm": {"cm", "centimeter", "centimeters", "centimetre", "centimetres"}, "mm": {"mm", "millimeter", "millimeters"},
		"mi": {"mile", "miles"}, "ft": {"ft", "foot", "feet"}, "in": {"inch", "inches"}, "yd": {"yard", "yards"},
		"kg": {"kg", "kgs", "kilogram", "kilograms"}, "g": {"gram", "grams"}, "lb": {"lb", "lbs", "pound", "pounds"},
		"oz": {"oz", "ounce", "ounces"}, "l": {"liter", "liters", "litre", "litres"}, "ml": {"milliliter", "milliliters", "millilitre", "millilitres"},
		"gal": {"gallon", "gallons"}, "c": {"celsius", "centigrade"}, "f": {"fahrenheit"}, "k": {"kelvin"},
		"s": {"second", "seconds", "sec", "secs"}, "min": {"minute", "minutes", "mins"}, "h": {"hour", "hours", "hrs"},
		"d": {"day", "days"}, "wk": {"week", "weeks"}, "mo": {"month", "months"}, "yr": {"year", "years"},
		"ms": {"ms", "millisecond", "milliseconds"}, "b": {"byte", "bytes"}, "kb": {"kb", "kib", "kilobyte", "kilobytes"},
		"mb": {"mb", "mib", "megabyte", "megabytes"}, "gb": {"gb", "gib", "gigabyte", "gigabytes"},
		"tb": {"tb", "tib", "terabyte", "terabytes"}, "bit": {"bit", "bits"}, "mph": {"mph"}, "kmh": {"kmh", "kph"},
		"usd": {"usd", "dollar", "dollars"}, "eur": {"eur", "euro", "euros"}, "gbp": {"gbp", "sterling"},
		"jpy": {"jpy", "yen"}, "cny": {"cny", "yuan", "rmb"}, "inr": {"inr", "rupee", "rupees"}, "btc": {"btc", "bitcoin"},
		"pct": {"percent", "percentage"}, "cal": {"calorie", "calories", "kcal"}, "w": {"watt", "watts"},
		"kw": {"kw", "kilowatt", "kilowatts"}, "kwh": {"kwh"}, "v": {"volt", "volts"}, "hz": {"hz", "hertz"},
		"ghz": {"ghz"}, "mhz": {"mhz"}, "acre": {"acre", "acres"}, "ha": {"hectare", "hectares"},
	} {
		for _, w := range ws {
			m[w] = name
		}
	}
	// Seconds as a unit is ambiguous with "second" (ordinal); the ordinal wins above only
	// when listed there, so drop the singular here.
	delete(m, "second")
	return m
}()

// techNames are matched in any case; ambiguousTech only when capitalised ("Go", not "go").
var techNames = set("python", "java", "javascript", "js", "typescript", "ts", "golang", "c++", "cpp", "c#",
	"csharp", "f#", "ruby", "php", "kotlin", "scala", "haskell", "perl", "matlab", "lua", "elixir",
	"erlang", "clojure", "ocaml", "fortran", "cobol", "bash", "zsh", "powershell", "sql", "mysql",
	"postgresql", "postgres", "sqlite", "mongodb", "redis", "cassandra", "elasticsearch", "kafka", "react",
	"vue", "angular", "svelte", "django", "flask", "fastapi", "rails", "laravel", "nodejs", "node.js", "deno",
	"docker", "kubernetes", "k8s", "terraform", "ansible", "aws", "azure", "gcp", "linux", "ubuntu", "debian",
	"windows", "macos", "ios", "android", "html", "css", "json", "yaml", "toml", "xml", "csv", "pytorch",
	"tensorflow", "jax", "keras", "pandas", "numpy", "scipy", "git", "github", "gitlab", "nginx",
	"graphql", "grpc", "http", "https", "tcp", "udp", "ipv4", "ipv6", "ssh", "tls", "ssl", "oauth",
	"jwt", "webassembly", "wasm", "solidity", "vba", "groovy", "objective-c", "zig", "nim",
	"jquery", "nextjs", "next.js", "nuxt", "tailwind", "hadoop", "snowflake", "bigquery",
	"dynamodb", "mariadb", "firefox", "vim", "emacs", "vscode", "npm", "maven", "gradle", "cuda", "opencv", "selenium", "pytest", "junit", "gpt",
	"llama", "bert", "claude", "gemini")

var ambiguousTech = set("go", "c", "r", "rust", "swift", "dart", "julia", "spring", "node", "express", "crystal", "d",
	"spark", "oracle", "apache", "unity", "unreal", "cargo", "pip", "excel", "bootstrap", "chrome", "safari", "assembly")

func canonicalTech(lw string) string {
	switch lw {
	case "golang":
		return "go"
	case "js":
		return "javascript"
	case "ts":
		return "typescript"
	case "cpp":
		return "c++"
	case "csharp":
		return "c#"
	case "nodejs", "node.js":
		return "node"
	case "postgres":
		return "postgresql"
	case "k8s":
		return "kubernetes"
	case "next.js":
		return "nextjs"
	}
	return lw
}

// naturalWords are entities even in lower case: natural languages, months and weekdays.
var naturalWords = set("english", "french", "spanish", "german", "italian", "portuguese", "dutch",
	"russian", "chinese", "mandarin", "cantonese", "japanese", "korean", "arabic", "hindi", "bengali",
	"urdu", "turkish", "polish", "swedish", "norwegian", "danish", "finnish", "greek", "hebrew", "thai",
	"vietnamese", "indonesian", "ukrainian", "czech", "romanian", "hungarian", "persian", "swahili", "latin",
	"january", "february", "march", "april", "june", "july", "august", "september", "october",
	"november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

// commonInitial are ordinary words that open sentences; a capitalised sentence-initial
// word outside this list is taken as a name ("Paris is ...", "Python vs ...").
var commonInitial = set("what", "whats", "what's", "how", "why", "when", "where", "who", "whom", "whose",
	"which", "is", "are", "was", "were", "do", "does", "did", "can", "could", "would", "should", "will",
	"shall", "may", "might", "must", "have", "has", "had", "please", "tell", "explain", "describe",
	"give", "list", "write", "show", "find", "name", "define", "compare", "convert", "translate",
	"summarize", "summarise", "create", "make", "generate", "help", "i", "i'm", "im", "my", "we", "our",
	"you", "your", "the", "a", "an", "this", "that", "these", "those", "there", "it", "its", "in", "on",
	"at", "for", "from", "to", "of", "by", "with", "about", "if", "and", "or", "but", "so", "hi", "hello",
	"hey", "ok", "okay", "thanks", "thank", "yes", "is", "calculate", "compute", "implement", "build",
	"fix", "debug", "use", "using", "get", "set", "check", "sort", "reverse", "suggest", "recommend",
	"any", "some", "all", "each", "every", "one", "other", "another", "best", "good", "new", "old",
	"difference", "differences", "advantages", "disadvantages", "pros", "cons", "steps", "ways",
	"examples", "example", "provide", "let", "let's", "lets", "should", "they", "he", "she", "them",
	"also", "then", "now", "here", "after", "before", "during", "while", "since", "because", "as",
	"instead", "why's", "how's", "where's", "who's", "when's", "rewrite", "rephrase", "draft", "plan",
	"recommendations", "tips", "ideas", "outline", "solve", "simplify", "proofread", "correct",
	"classify", "analyze", "analyse", "evaluate", "estimate", "predict", "determine", "identify",
	"choose", "select", "pick", "turn", "change", "add", "remove", "delete", "update", "install",
	"configure", "deploy", "run", "start", "stop", "open", "close", "read", "parse", "print", "return",
	"count", "split", "join", "merge", "remember", "imagine", "suppose", "assume", "consider", "given",
	"based", "according", "most", "many", "much", "few", "more", "less", "not", "no", "never", "without",
	"afterwards", "afterward", "furthermore", "additionally", "however", "moreover", "therefore", "thus",
	"finally", "first", "next", "later", "also", "alternatively", "otherwise", "meanwhile", "besides",
	"you'll", "you're", "you've", "we'll", "we're", "it's", "there's", "that's", "don't", "doesn't",
	"can't", "isn't", "by", "via", "through", "within", "over", "under", "once", "yes", "sure")

// commonCapitalised are capitalised mid-sentence for reasons other than being a name.
var commonCapitalised = set("i", "i'm", "i've", "i'd", "i'll", "ok")

func set(ws ...string) map[string]bool {
	m := make(map[string]bool, len(ws))
	for _, w := range ws {
		m[w] = true
	}
	return m
}
