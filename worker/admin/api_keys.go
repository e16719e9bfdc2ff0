package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

// adminTokenPrefix starts every admin API token, so it is never mistaken for a client key.
const adminTokenPrefix = "lpa-"

// keyAlphabet is base62; 32 characters carry about 190 bits.
const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newSecret returns prefix and 32 uniformly random base62 characters.
func newSecret(prefix string) (string, error) {
	out := make([]byte, 0, len(prefix)+32)
	out = append(out, prefix...)
	var buf [64]byte
	for len(out) < cap(out) {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", err
		}
		for _, b := range buf {
			if b >= 248 { // 248 = 4·62: rejection keeps b%62 uniform
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

// displayPrefix is what listings show: enough to tell keys apart, far too little to use.
func displayPrefix(key string) string { return key[:8] + "…" }

type keyJSON struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	Models    []string   `json:"models"` // [] allows every model
	CreatedAt string     `json:"created_at"`
	ExpiresAt *string    `json:"expires_at"` // null: never
	RevokedAt *string    `json:"revoked_at"`
	State     string     `json:"state"` // active, disabled, revoked or expired
	Enabled   bool       `json:"enabled"`
	UserID    *int64     `json:"user_id"` // null: no owner (made by the CLI)
	Username  string     `json:"username,omitempty"`
	Limits    limitsJSON `json:"limits"`
	Spend     spendJSON  `json:"spend"` // in the budget period (total when the key has no budget)
	// LogBodies is false when the key opted out of body logging: its requests' bodies
	// are never stored, even with LLM_PROXY_LOG_BODIES on.
	LogBodies bool `json:"log_bodies"`
}

func timePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

func toKeyJSON(k store.OwnedKey, now time.Time) keyJSON {
	out := keyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Models: k.Models, CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339),
		ExpiresAt: timePtr(k.ExpiresAt), RevokedAt: timePtr(k.RevokedAt), State: k.State(now), Username: k.Username,
		Limits: toLimitsJSON(k.Limits)}
	if out.Models == nil {
		out.Models = []string{}
	}
	if k.Disabled {
		out.State = "disabled"
	}
	out.Enabled = out.State == store.KeyActive
	if k.UserID != 0 {
		id := k.UserID
		out.UserID = &id
	}
	return out
}

func (a *Admin) listKeys(c *call) {
	out, err := a.keyList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out})
}

// parseModels validates a model allow-list.
func parseModels(v *validation, models []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range models {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
			continue
		case strings.Contains(m, ",") || len(m) > 200:
			v.add("models", "Model names must be at most 200 characters and contain no comma: "+m)
			return nil
		case seen[m]:
			continue
		}
		seen[m] = true
		out = append(out, m)
	}
	return out
}

// parseExpiry reads an RFC 3339 time or a date (YYYY-MM-DD, end of that day UTC); "" is never.
func parseExpiry(v *validation, s string, now time.Time) time.Time {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		d, derr := time.Parse("2006-01-02", s)
		if derr != nil {
			v.add("expires_at", "expires_at must be an RFC 3339 time (2026-12-31T23:59:59Z) or a date (2026-12-31).")
			return time.Time{}
		}
		t = d.Add(24*time.Hour - time.Second)
	}
	if !t.After(now) {
		v.add("expires_at", "expires_at must be in the future.")
	}
	return t
}

func (a *Admin) createKey(c *call) {
	var req struct {
		Name      string         `json:"name"`
		Models    []string       `json:"models"`
		ExpiresAt string         `json:"expires_at"`
		UserID    *int64         `json:"user_id"` // admin only: create for another user
		Limits    *limitsRequest `json:"limits"`  // admin only
	}
	if !c.decode(&req) {
		return
	}
	now := a.now()
	var v validation
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		v.add("name", "name is required.")
	} else if len(req.Name) > 100 {
		v.add("name", "name must be at most 100 characters.")
	}
	models := parseModels(&v, req.Models)
	exp := parseExpiry(&v, req.ExpiresAt, now)
	owner := c.user.ID
	if req.UserID != nil && *req.UserID != c.user.ID {
		if !c.isAdmin() {
			v.add("user_id", "Only an admin can create keys for another user.")
		} else if _, err := a.st.User(c.std, *req.UserID); err != nil {
			v.add("user_id", "No such user.")
		} else {
			owner = *req.UserID
		}
	}
	lim := req.Limits.apply(&v, store.KeyLimits{})
	if lim != (store.KeyLimits{}) && !c.isAdmin() {
		v.add("limits", msgLimitsAdminOnly)
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	key, err := newSecret("sk-")
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	// CreateAPIKey writes the owner and the limits in the same statement as the key.
	id, err := a.st.CreateAPIKey(c.std, store.APIKey{
		Name: req.Name, Hash: sha256.Sum256([]byte(key)), Prefix: displayPrefix(key), Models: models, CreatedAt: now, ExpiresAt: exp,
		UserID: owner, Limits: lim,
	})
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	k, err := a.st.OwnedKeyWithLimits(c.std, id)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	out, err := a.keyOut(c, k, now)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("api key created", "id", id, "name", req.Name, "by", c.user.Username)
	c.json(fasthttp.StatusCreated, map[string]any{"key": key, "api_key": out})
}

// ownKey loads key id if the caller may manage it; it answers 404 otherwise, so a user
// cannot even learn which ids exist.
func (a *Admin) ownKey(c *call) (store.OwnedKey, bool) {
	id, ok := c.pathID()
	if !ok {
		return store.OwnedKey{}, false
	}
	k, err := a.st.OwnedKeyWithLimits(c.std, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.internal(err, a.logger)
		return store.OwnedKey{}, false
	}
	if err != nil || (!c.isAdmin() && k.UserID != c.user.ID) {
		c.notFound("API key")
		return store.OwnedKey{}, false
	}
	return k, true
}

func (a *Admin) updateKey(c *call) {
	k, ok := a.ownKey(c)
	if !ok {
		return
	}
	var req struct {
		Name      *string        `json:"name"`
		Models    *[]string      `json:"models"`
		ExpiresAt *string        `json:"expires_at"` // "" or null clears
		Enabled   *bool          `json:"enabled"`
		Limits    *limitsRequest `json:"limits"` // fields left out keep their value; admin only
		// LogBodies false opts the key out of body logging; the owner may set it.
		LogBodies *bool `json:"log_bodies"`
	}
	if !c.decode(&req) {
		return
	}
	now := a.now()
	var v validation
	upd := store.KeyUpdate{Enabled: req.Enabled}
	if req.Name != nil {
		n := strings.TrimSpace(*req.Name)
		if n == "" || len(n) > 100 {
			v.add("name", "name must be 1 to 100 characters.")
		}
		upd.Name = &n
	}
	if req.Models != nil {
		m := parseModels(&v, *req.Models)
		upd.Models = &m
	}
	if req.ExpiresAt != nil {
		e := parseExpiry(&v, *req.ExpiresAt, now)
		upd.ExpiresAt = &e
	}
	var lim *store.KeyLimits
	if req.Limits != nil {
		l := req.Limits.apply(&v, k.Limits)
		// A user sees their keys' limits but only an admin changes them; sending them back
		// unchanged (a form that round-trips the key) is fine.
		if l != k.Limits && !c.isAdmin() {
			v.add("limits", msgLimitsAdminOnly)
		}
		lim = &l
	}
	if req.Enabled != nil && *req.Enabled && !k.RevokedAt.IsZero() && !k.Disabled {
		// Checked here too, so the body-logging change below is never made for an
		// edit that is then refused.
		v.add("enabled", "This key was revoked for good and cannot be enabled again; create a new key.")
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	out, err := a.st.UpdateAPIKeyWithLimits(c.std, k.ID, upd, lim, now)
	if err == nil && req.LogBodies != nil {
		// A second transaction: the store keeps the flag apart from the key's other
		// fields. Everything that could refuse the edit was checked above.
		if err = a.st.SetKeyLogBodies(c.std, k.ID, *req.LogBodies); err == nil {
			a.logger.Info("api key body logging set", "id", k.ID, "log_bodies", *req.LogBodies, "by", c.user.Username)
		}
	}
	if err == nil {
		var j keyJSON
		if j, err = a.keyOut(c, out, now); err == nil {
			if lim != nil && *lim != k.Limits {
				a.logger.Info("api key limits changed", "id", k.ID, "name", out.Name, "by", c.user.Username)
			}
			c.json(fasthttp.StatusOK, j)
			return
		}
	}
	switch {
	case errors.Is(err, store.ErrKeyRevoked):
		v.add("enabled", "This key was revoked for good and cannot be enabled again; create a new key.")
		c.invalid(&v)
	case errors.Is(err, store.ErrNotFound):
		c.notFound("API key")
	default:
		c.internal(err, a.logger)
	}
}

func (a *Admin) revokeKey(c *call) {
	k, ok := a.ownKey(c)
	if !ok {
		return
	}
	now := a.now()
	if err := a.st.RevokeOwnedKey(c.std, k.ID, now); err != nil {
		c.internal(err, a.logger)
		return
	}
	out, err := a.st.OwnedKeyWithLimits(c.std, k.ID)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	j, err := a.keyOut(c, out, now)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("api key revoked", "id", k.ID, "name", k.Name, "by", c.user.Username)
	c.json(fasthttp.StatusOK, j)
}

// Admin API tokens.

type tokenJSON struct {
	ID         int64   `json:"id"`
	Name       string  `json:"name"`
	Prefix     string  `json:"prefix"`
	UserID     int64   `json:"user_id"`
	CreatedAt  string  `json:"created_at"`
	ExpiresAt  *string `json:"expires_at"`
	LastUsedAt *string `json:"last_used_at"`
}

func toTokenJSON(t store.AdminToken) tokenJSON {
	return tokenJSON{ID: t.ID, Name: t.Name, Prefix: t.Prefix, UserID: t.UserID, CreatedAt: t.CreatedAt.UTC().Format(time.RFC3339),
		ExpiresAt: timePtr(t.ExpiresAt), LastUsedAt: timePtr(t.LastUsedAt)}
}

func (a *Admin) listTokens(c *call) {
	toks, err := a.st.ListAdminTokens(c.std, 0)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	out := make([]tokenJSON, 0, len(toks))
	for _, t := range toks {
		out = append(out, toTokenJSON(t))
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out})
}

func (a *Admin) createToken(c *call) {
	var req struct {
		Name      string `json:"name"`
		ExpiresAt string `json:"expires_at"`
	}
	if !c.decode(&req) {
		return
	}
	now := a.now()
	var v validation
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > 100 {
		v.add("name", "name must be 1 to 100 characters.")
	}
	exp := parseExpiry(&v, req.ExpiresAt, now)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	tok, err := newSecret(adminTokenPrefix)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	t := store.AdminToken{UserID: c.user.ID, Name: req.Name, Hash: sha256.Sum256([]byte(tok)), Prefix: displayPrefix(tok), CreatedAt: now, ExpiresAt: exp}
	if t.ID, err = a.st.CreateAdminToken(c.std, t); err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("admin API token created", "id", t.ID, "name", t.Name, "by", c.user.Username)
	c.json(fasthttp.StatusCreated, map[string]any{"token": tok, "admin_token": toTokenJSON(t)})
}

func (a *Admin) deleteToken(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	err := a.st.DeleteAdminToken(c.std, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.notFound("Admin token")
	case err != nil:
		c.internal(err, a.logger)
	default:
		c.json(fasthttp.StatusOK, map[string]any{"id": id, "deleted": true})
	}
}
