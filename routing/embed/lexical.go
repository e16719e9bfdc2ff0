package embed

import (
	"context"
	"unicode"
	"unicode/utf8"
)

// LexicalDim is the dimension of Lexical's vectors.
const LexicalDim = 1024

// Feature weights of the lexical embedder. Word unigrams carry the topic; bigrams add word
// order ("python to java" vs "java to python"); character 3-5-grams let inflections and
// small spelling changes ("datasets"/"dataset", "colour"/"color") still overlap. Each word's
// character n-grams share one budget so long words do not outweigh short ones. Common words
// are weighted down rather than dropped: "how" vs "why" still matters a little.
const (
	weightUnigram  = 1.0
	weightBigram   = 0.3
	weightCharGram = 1.5 // per word, spread over its n-grams
	weightStop     = 0.1
	maxCharWord    = 48 // longer words (hashes, base64) get unigram features only
)

// Lexical is the built-in embedder: feature hashing of lower-cased word unigrams, word
// bigrams and character 3-5-grams into LexicalDim signed buckets, L2-normalised. It needs no
// model file and no network, and it is deterministic, so vectors stored by one version are
// valid for every process running the same ID. The zero value is ready to use.
type Lexical struct{}

var _ Embedder = Lexical{}

// ID names the feature set; bump the version when a change alters the vectors, so stored
// vectors of the old scheme are ignored rather than compared.
func (Lexical) ID() string { return "lexical-v1" }

// Dim returns LexicalDim.
func (Lexical) Dim() int { return LexicalDim }

// DefaultThreshold is the cosine above which two prompts count as the same question, tuned
// on the paraphrase and hard-negative evaluation in package cache (see eval_test.go there).
func (Lexical) DefaultThreshold() float32 { return 0.80 }

// Seeds keep the three feature families in separate hash spaces: the unigram "ing" and the
// character 3-gram "ing" must not land in the same bucket with the same sign by design.
const (
	seedUnigram  = 0x9e3779b97f4a7c15
	seedBigram   = 0xc2b2ae3d27d4eb4f
	seedCharGram = 0x165667b19e3779f9
)

// Embed never fails and never blocks; ctx is accepted for the interface.
func (Lexical) Embed(_ context.Context, text string, dst []float32) ([]float32, error) {
	if cap(dst) >= LexicalDim {
		dst = dst[:LexicalDim]
		clear(dst)
	} else {
		dst = make([]float32, LexicalDim)
	}
	var (
		word     [maxCharWord + 2]byte // "<" + lower-cased word + ">"
		n        int                   // bytes of the word in word[1:]
		long     bool                  // the word outgrew the buffer
		wordHash uint64                // unigram hash, computed on the fly so long words still get one
		prevHash uint64
		prevStop bool
		havePrev bool
	)
	flush := func() {
		if n == 0 && !long {
			return
		}
		stop := !long && isStopWord(word[1:1+n])
		w := float32(weightUnigram)
		if stop {
			w = weightStop
		}
		add(dst, mix(wordHash^seedUnigram), w)
		if havePrev {
			bw := float32(weightBigram)
			if stop || prevStop {
				bw *= 0.5
			}
			add(dst, mix(prevHash*0x100000001b3^wordHash^seedBigram), bw)
		}
		if !stop && !long {
			addCharGrams(dst, word[:n+2], n)
		}
		prevHash, prevStop, havePrev = wordHash, stop, true
		n, long, wordHash = 0, false, fnvOffset
	}
	word[0] = '<'
	wordHash = fnvOffset
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				flush()
				continue
			}
			wordHash = (wordHash ^ uint64(c)) * fnvPrime
			if n < maxCharWord {
				word[1+n] = c
				n++
				word[1+n] = '>'
			} else {
				long = true
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.Is(unicode.Mn, r) {
			flush()
			continue
		}
		r = unicode.ToLower(r)
		var enc [utf8.UTFMax]byte
		m := utf8.EncodeRune(enc[:], r)
		for _, b := range enc[:m] {
			wordHash = (wordHash ^ uint64(b)) * fnvPrime
		}
		if n+m <= maxCharWord {
			copy(word[1+n:], enc[:m])
			n += m
			word[1+n] = '>'
		} else {
			long = true
		}
	}
	flush()
	Normalize(dst)
	return dst, nil
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// addCharGrams adds the 3-, 4- and 5-grams of the bracketed word w (len n+2), sharing
// weightCharGram between them.
func addCharGrams(dst []float32, w []byte, n int) {
	count := 0
	for g := 3; g <= 5; g++ {
		if len(w) >= g {
			count += len(w) - g + 1
		}
	}
	if count == 0 {
		return
	}
	wt := float32(weightCharGram) / float32(count)
	for g := 3; g <= 5; g++ {
		for i := 0; i+g <= len(w); i++ {
			h := uint64(fnvOffset)
			for _, b := range w[i : i+g] {
				h = (h ^ uint64(b)) * fnvPrime
			}
			add(dst, mix(h^seedCharGram^uint64(g)), wt)
		}
	}
}

// mix finalises a hash (splitmix64) so the low bits used for the bucket and the top bit
// used for the sign are independent.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// add puts w into the bucket of h with the sign of its top bit: signed hashing makes
// colliding features cancel on average instead of inflating every similarity.
func add(dst []float32, h uint64, w float32) {
	if h>>63 != 0 {
		w = -w
	}
	dst[h&(LexicalDim-1)] += w
}

// stopWords are the English function words that appear in almost every prompt. The list is
// short on purpose: question words and negations are not on it ("not" carries meaning), and
// the false-hit guard in package cache handles negations separately anyway.
var stopWords = map[string]struct{}{}

func init() {
	for _, w := range []string{
		"a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "by", "for", "with", "from",
		"as", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
		"i", "me", "my", "you", "your", "we", "our", "it", "its", "this", "that", "these", "those",
		"there", "their", "they", "them", "he", "she", "his", "her", "can", "could", "would",
		"should", "will", "shall", "may", "might", "must", "have", "has", "had", "please",
		"some", "any", "into", "about", "so", "if", "than", "then", "also", "just", "s", "t",
	} {
		stopWords[w] = struct{}{}
	}
}

func isStopWord(w []byte) bool {
	_, ok := stopWords[string(w)] // no allocation: the compiler special-cases map[string(b)]
	return ok
}
