package worker

import (
	"bytes"
	"crypto/sha256"
	"sort"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// keyEntry is one API key in a worker's memory.
type keyEntry struct {
	id   int64
	name string
	// models is the allow-list; nil allows every model.
	models    map[string]struct{}
	modelList []string
	expires   int64 // unix seconds; 0 never
	revoked   bool
	userID    int64
	// limits are the key's own limits merged over the configured defaults.
	limits limits.Limits
	// userLimits are the owner's limits, shared by all the owner's keys (no defaults:
	// zero unless set on the user, and always zero without an owner).
	userLimits limits.Limits
	// userModels is the owning user's allow-list (nil: every model); noBodies opts
	// the key out of body logging. Set by loadKeyExtras (usermodels.go).
	userModels    map[string]struct{}
	userModelList []string
	noBodies      bool
}

func (k *keyEntry) allows(model []byte) bool {
	if k.models == nil {
		return true
	}
	_, ok := k.models[string(model)] // no allocation: the compiler optimises map[string(b)]
	return ok
}

// keySnapshot is an immutable map from SHA-256(key) to entry, swapped atomically
// when the keys table changes. Requests never read SQLite to authenticate.
type keySnapshot struct {
	byHash map[[32]byte]*keyEntry
}

func newKeySnapshot(keys []store.APIKey, cfg Config) *keySnapshot {
	s := &keySnapshot{byHash: make(map[[32]byte]*keyEntry, len(keys))}
	for _, k := range keys {
		e := &keyEntry{id: k.ID, name: k.Name, revoked: !k.RevokedAt.IsZero(), userID: k.UserID,
			limits: keyLimits(k.Limits, cfg)}
		if k.UserID != 0 {
			e.userLimits = userLimits(k.UserLimits)
		}
		if !k.ExpiresAt.IsZero() {
			e.expires = k.ExpiresAt.Unix()
		}
		if len(k.Models) > 0 {
			e.models = make(map[string]struct{}, len(k.Models))
			for _, m := range k.Models {
				e.models[m] = struct{}{}
			}
			e.modelList = append([]string(nil), k.Models...)
			sort.Strings(e.modelList)
		}
		s.byHash[k.Hash] = e
	}
	return s
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
	e, ok := s.byHash[sha256.Sum256(key)]
	switch {
	case !ok:
		return nil, authInvalid
	case e.revoked:
		return e, authRevoked
	case e.expires != 0 && now.Unix() >= e.expires:
		return e, authExpired
	}
	return e, authOK
}
