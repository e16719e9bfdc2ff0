package admin

import (
	"errors"
	"strings"
	"time"
	"unicode"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// userOut is a user as /api/users shows it: the account, the model allow-list every key
// of the user is also bound by, and the limits all the user's keys share, with the spend
// against them (same fields as a key's).
type userOut struct {
	userJSON
	Models []string   `json:"models"` // [] allows every model
	Limits limitsJSON `json:"limits"`
	Spend  spendJSON  `json:"spend"`
}

func toUserOut(u store.User, spent map[string]store.SpendDelta, now time.Time) userOut {
	out := userOut{userJSON: toUserJSON(u), Models: u.Models, Limits: toLimitsJSON(u.Limits)}
	if out.Models == nil {
		out.Models = []string{}
	}
	p, pk := spendPeriod(u.Limits, now)
	d := spent[limits.User(u.ID).String()+" "+pk]
	out.Spend = spendJSON{Period: p.String(), PeriodKey: pk, USD: float64(d.Micro) / 1e6, Tokens: d.Tokens}
	return out
}

// userList is every user with limits and spend: two reads whatever the number of users.
func (a *Admin) userList(c *call) ([]userOut, error) {
	users, err := a.st.ListUsers(c.std)
	if err != nil {
		return nil, err
	}
	now := a.now()
	spent, err := a.userSpend(c, now)
	if err != nil {
		return nil, err
	}
	out := make([]userOut, 0, len(users))
	for _, u := range users {
		out = append(out, toUserOut(u, spent, now))
	}
	return out, nil
}

// userSpend reads the ledger's current periods, by "subject period".
func (a *Admin) userSpend(c *call, now time.Time) (map[string]store.SpendDelta, error) {
	rows, err := a.st.SpendIn(c.std, limits.PeriodKey(limits.PeriodDay, now), limits.PeriodKey(limits.PeriodMonth, now), "total")
	if err != nil {
		return nil, err
	}
	m := make(map[string]store.SpendDelta, len(rows))
	for _, d := range rows {
		m[d.Subject+" "+d.Period] = d
	}
	return m, nil
}

// userReply answers with user id as the API shows it.
func (a *Admin) userReply(c *call, status int, u store.User) {
	now := a.now()
	spent, err := a.userSpend(c, now)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(status, toUserOut(u, spent, now))
}

func (a *Admin) listUsers(c *call) {
	out, err := a.userList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out})
}

func checkUsername(v *validation, name string) {
	switch {
	case name == "":
		v.add("username", "username is required.")
	case len(name) > 64:
		v.add("username", "username must be at most 64 characters.")
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		v.add("username", "username must not contain spaces.")
	}
}

func checkRole(v *validation, role string) {
	if role != store.RoleAdmin && role != store.RoleUser {
		v.add("role", `role must be "admin" or "user".`)
	}
}

func (a *Admin) createUser(c *call) {
	var req struct {
		Username           string         `json:"username"`
		Password           string         `json:"password"`
		Role               string         `json:"role"`
		MustChangePassword *bool          `json:"must_change_password"`
		Models             []string       `json:"models"`
		Limits             *limitsRequest `json:"limits"`
	}
	if !c.decode(&req) {
		return
	}
	if req.Role == "" {
		req.Role = store.RoleUser
	}
	var v validation
	checkUsername(&v, req.Username)
	checkNewPassword(&v, "password", req.Password)
	checkRole(&v, req.Role)
	models := parseModels(&v, req.Models)
	lim := req.Limits.apply(&v, store.KeyLimits{})
	if !v.ok() {
		c.invalid(&v)
		return
	}
	hash, err := HashPassword(req.Password, a.params)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	// A password an admin chose is known to the admin: the user replaces it at first login
	// unless the admin says otherwise.
	must := req.MustChangePassword == nil || *req.MustChangePassword
	id, err := a.st.CreateUser(c.std, store.User{Username: req.Username, PasswordHash: hash, Role: req.Role, MustChangePassword: must})
	if errors.Is(err, store.ErrExists) {
		v.add("username", "A user named "+req.Username+" already exists.")
		c.invalid(&v)
		return
	}
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	u, err := a.st.User(c.std, id)
	if err == nil && (len(models) > 0 || lim != (store.KeyLimits{})) {
		// A second statement, but the user has no keys yet: nothing runs unlimited.
		u, err = a.st.UpdateUser(c.std, id, store.UserUpdate{Models: &models, Limits: &lim}, nil)
	}
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("user created", "user", u.Username, "role", u.Role, "by", c.user.Username)
	a.userReply(c, fasthttp.StatusCreated, u)
}

func (a *Admin) updateUser(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	var req struct {
		Username           *string        `json:"username"`
		Password           *string        `json:"password"`
		Role               *string        `json:"role"`
		Disabled           *bool          `json:"disabled"`
		MustChangePassword *bool          `json:"must_change_password"`
		Models             *[]string      `json:"models"` // replaces the allow-list; [] allows every model
		Limits             *limitsRequest `json:"limits"` // fields left out keep their value, 0 removes a limit
	}
	if !c.decode(&req) {
		return
	}
	var v validation
	upd := store.UserUpdate{Username: req.Username, Role: req.Role, Disabled: req.Disabled, MustChangePassword: req.MustChangePassword}
	if req.Models != nil {
		m := parseModels(&v, *req.Models)
		upd.Models = &m
	}
	var before store.KeyLimits
	if req.Limits != nil {
		cur, err := a.st.User(c.std, id)
		if errors.Is(err, store.ErrNotFound) {
			c.notFound("User")
			return
		}
		if err != nil {
			c.internal(err, a.logger)
			return
		}
		// Read, then replace all six: a concurrent edit of the same user's limits by
		// another admin is lost, as with a key's.
		before = cur.Limits
		l := req.Limits.apply(&v, cur.Limits)
		upd.Limits = &l
	}
	if req.Username != nil {
		checkUsername(&v, *req.Username)
	}
	if req.Password != nil {
		checkNewPassword(&v, "password", *req.Password)
	}
	if req.Role != nil {
		checkRole(&v, *req.Role)
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	if req.Password != nil {
		hash, err := HashPassword(*req.Password, a.params)
		if err != nil {
			c.internal(err, a.logger)
			return
		}
		upd.PasswordHash = &hash
		if upd.MustChangePassword == nil && id != c.user.ID {
			yes := true
			upd.MustChangePassword = &yes
		}
	}
	var keep []byte
	if c.session != nil && id == c.user.ID {
		keep = c.session.TokenHash[:]
	}
	u, err := a.st.UpdateUser(c.std, id, upd, keep)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.notFound("User")
	case errors.Is(err, store.ErrLastAdmin):
		c.fail(fasthttp.StatusConflict, "invalid_request_error", "last_admin", "role", "This is the last enabled admin: it cannot be demoted or disabled.")
	case errors.Is(err, store.ErrExists):
		v.add("username", "A user with that name already exists.")
		c.invalid(&v)
	case err != nil:
		c.internal(err, a.logger)
	default:
		a.logger.Info("user updated", "user", u.Username, "by", c.user.Username)
		if upd.Limits != nil && *upd.Limits != before {
			a.logger.Info("user limits changed", "user", u.Username, "by", c.user.Username)
		}
		a.userReply(c, fasthttp.StatusOK, u)
	}
}

func (a *Admin) deleteUser(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	if id == c.user.ID {
		c.fail(fasthttp.StatusConflict, "invalid_request_error", "self_delete", "id", "You cannot delete your own account.")
		return
	}
	err := a.st.DeleteUser(c.std, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.notFound("User")
	case errors.Is(err, store.ErrLastAdmin):
		c.fail(fasthttp.StatusConflict, "invalid_request_error", "last_admin", "id", "This is the last enabled admin: it cannot be deleted.")
	case err != nil:
		c.internal(err, a.logger)
	default:
		a.logger.Info("user deleted", "id", id, "by", c.user.Username)
		c.json(fasthttp.StatusOK, map[string]any{"id": id, "deleted": true})
	}
}
