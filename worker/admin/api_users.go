package admin

import (
	"errors"
	"strings"
	"unicode"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

func (a *Admin) listUsers(c *call) {
	users, err := a.st.ListUsers(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	out := make([]userJSON, 0, len(users))
	for _, u := range users {
		out = append(out, toUserJSON(u))
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
		Username           string `json:"username"`
		Password           string `json:"password"`
		Role               string `json:"role"`
		MustChangePassword *bool  `json:"must_change_password"`
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
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("user created", "user", u.Username, "role", u.Role, "by", c.user.Username)
	c.json(fasthttp.StatusCreated, toUserJSON(u))
}

func (a *Admin) updateUser(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	var req struct {
		Username           *string `json:"username"`
		Password           *string `json:"password"`
		Role               *string `json:"role"`
		Disabled           *bool   `json:"disabled"`
		MustChangePassword *bool   `json:"must_change_password"`
	}
	if !c.decode(&req) {
		return
	}
	var v validation
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
	upd := store.UserUpdate{Username: req.Username, Role: req.Role, Disabled: req.Disabled, MustChangePassword: req.MustChangePassword}
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
		c.json(fasthttp.StatusOK, toUserJSON(u))
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
