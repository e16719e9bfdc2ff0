package worker

import (
	"bytes"
	"crypto/sha256"
	"sort"
	"strings"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// keyEntry is one API key in a worker's memory. It is kept small, with what many
// keys share behind pointers, because a worker holds every key: 100k keys cost
// about 11 MiB (TestKeySnapshotMemory).
type keyEntry struct {
	id      int64
	expires int64 // unix seconds; 0 never
	userID  int64
	// limits are the key's own limits merged over the configured defaults; every
	// key without limits of its own points at the same defaults.
	limits *limits.Limits
	// userLimits are the owner's limits, shared by all the owner's keys (no
	// defaults); nil without an owner or when the owner has none.
	userLimits *limits.Limits
	// models is the key's allow-list, userModels its owner's (shared by the
	// owner's keys; set by loadKeyExtras); nil allows every model.
	models, userModels *modelSet
	revoked            bool
	noBodies           bool // opted out of body logging (loadKeyExtras)
}

// modelSet is a model allow-list: a set for lookups, a sorted list for GET /v1/models.
type modelSet struct {
	set  map[string]struct{}
	list []string
}

func newModelSet(models []string) *modelSet {
	ms := &modelSet{set: make(map[string]struct{}, len(models)), list: append([]string(nil), models...)}
	for _, m := range models {
		ms.set[m] = struct{}{}
	}
	sort.Strings(ms.list)
	return ms
}

// has reports whether the set allows model; a nil set allows every model.
func (ms *modelSet) has(model []byte) bool {
	if ms == nil {
		return true
	}
	_, ok := ms.set[string(model)] // no allocation: the compiler optimises map[string(b)]
	return ok
}

func (k *keyEntry) allows(model []byte) bool { return k.models.has(model) }

// keySnapshot is an immutable index from SHA-256(key) to entry, swapped atomically
// when the keys table changes. Requests never read SQLite to authenticate. The
// entries live in one slice (no pointer per key for the GC to chase).
type keySnapshot struct {
	byHash  map[[32]byte]int32
	entries []keyEntry
}

func newKeySnapshot(keys []store.APIKey, cfg Config) *keySnapshot {
	s := &keySnapshot{byHash: make(map[[32]byte]int32, len(keys)), entries: make([]keyEntry, len(keys))}
	defaults := keyLimits(store.KeyLimits{}, cfg)
	owners := map[int64]*limits.Limits{}
	lists := map[string]*modelSet{} // keys with the same allow-list share it
	for i, k := range keys {
		e := &s.entries[i]
		*e = keyEntry{id: k.ID, revoked: !k.RevokedAt.IsZero(), userID: k.UserID, limits: &defaults}
		if k.Limits != (store.KeyLimits{}) {
			own := keyLimits(k.Limits, cfg)
			e.limits = &own
		}
		if k.UserID != 0 && k.UserLimits != (store.KeyLimits{}) {
			ul, ok := owners[k.UserID]
			if !ok {
				l := userLimits(k.UserLimits)
				ul = &l
				owners[k.UserID] = ul
			}
			e.userLimits = ul
		}
		if !k.ExpiresAt.IsZero() {
			e.expires = k.ExpiresAt.Unix()
		}
		if len(k.Models) > 0 {
			id := strings.Join(k.Models, "\x00")
			if e.models = lists[id]; e.models == nil {
				e.models = newModelSet(k.Models)
				lists[id] = e.models
			}
		}
		s.byHash[k.Hash] = int32(i)
	}
	return s
}

// lookup returns the entry of a key hash, nil when there is none.
func (s *keySnapshot) lookup(hash [32]byte) *keyEntry {
	i, ok := s.byHash[hash]
	if !ok {
		return nil
	}
	return &s.entries[i]
}

// authResult says why a key was refused; authOK when it was accepted.
type authResult int

const (
	authOK authResult = iota
	authMissing
	authInvalid
	authRevoked
	authExpired
)

func (r authResult) message() string {
	switch r {
	case authMissing:
		return "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'."
	case authRevoked:
		return "The API key has been revoked."
	case authExpired:
		return "The API key has expired."
	default:
		return "Incorrect API key provided."
	}
}

func (r authResult) code() string {
	if r == authMissing {
		return "missing_api_key"
	}
	return "invalid_api_key"
}

var bearer = []byte("Bearer ")

// authenticate checks an Authorization header value against the snapshot.
func (s *keySnapshot) authenticate(header []byte, now time.Time) (*keyEntry, authResult) {
	if len(header) == 0 {
		return nil, authMissing
	}
	if bytes.EqualFold(header, bearer[:len(bearer)-1]) {
		// "Bearer " with an empty key arrives as "Bearer": HTTP drops trailing spaces.
		return nil, authMissing
	}
	if len(header) < len(bearer) || !bytes.EqualFold(header[:len(bearer)], bearer) {
		return nil, authInvalid
	}
	return s.authenticateKey(bytes.TrimSpace(header[len(bearer):]), now)
}

// authenticateKey checks a bare key (from Authorization: Bearer, or the x-api-key
// header Anthropic's SDKs send).
func (s *keySnapshot) authenticateKey(key []byte, now time.Time) (*keyEntry, authResult) {
	if len(key) == 0 {
		return nil, authMissing
	}
	e := s.lookup(sha256.Sum256(key))
	switch {
	case e == nil:
		return nil, authInvalid
	case e.revoked:
		return e, authRevoked
	case e.expires != 0 && now.Unix() >= e.expires:
		return e, authExpired
	}
	return e, authOK
}
