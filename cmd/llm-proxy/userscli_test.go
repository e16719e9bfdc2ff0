package main

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store"
)

// addUser creates a user in the CLI env's database (the CLI does not create users).
func (c *cliEnv) addUser(name string) {
	c.t.Helper()
	c.mustRun("migrate")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Path: c.db, MaxOpenConns: 2, MaxIdleConns: 1}, nil, hclog.NewNullLogger())
	if err != nil {
		c.t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateUser(ctx, store.User{Username: name, PasswordHash: "$argon2id$test", Role: store.RoleUser}); err != nil {
		c.t.Fatal(err)
	}
}

func TestUsersUpdateList(t *testing.T) {
	c := newCLIEnv(t)
	c.addUser("alice")
	c.addUser("bob")
	list := func() map[string]userRowJSON {
		t.Helper()
		var rows []userRowJSON
		out := c.mustRun("users", "list", "--json").stdout
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("users list --json: %v\n%s", err, out)
		}
		m := map[string]userRowJSON{}
		for _, r := range rows {
			m[r.Username] = r
		}
		return m
	}

	res := c.mustRun("users", "update", "alice", "--rpm", "5", "--budget", "2.5", "--budget-period", "month", "--models", "gpt-4o, alias")
	if !strings.Contains(res.stdout, "updated user alice") || !strings.Contains(res.stdout, "5 rpm") {
		t.Errorf("update output %q", res.stdout)
	}
	alice := list()["alice"]
	want := userRowJSON{ID: alice.ID, Username: "alice", Role: "user", Models: []string{"gpt-4o", "alias"},
		RPM: 5, BudgetUSD: 2.5, BudgetPeriod: "month"}
	if !reflect.DeepEqual(alice, want) {
		t.Errorf("alice = %+v\nwant    %+v", alice, want)
	}

	// By ID; only the flags given change: the models and the budget stay.
	c.mustRun("users", "update", strconv.FormatInt(alice.ID, 10), "--rpm", "0", "--tpm", "1000")
	got := list()
	want.RPM, want.TPM = 0, 1000
	if !reflect.DeepEqual(got["alice"], want) {
		t.Errorf("after update by ID: %+v\nwant %+v", got["alice"], want)
	}
	if b := got["bob"]; b.RPM != 0 || b.TPM != 0 || len(b.Models) != 0 {
		t.Errorf("bob changed: %+v", b)
	}
	c.mustRun("users", "update", "alice", "--models", "")
	if m := list()["alice"].Models; len(m) != 0 {
		t.Errorf("--models '' left %q", m)
	}

	table := c.mustRun("users", "list").stdout
	for _, w := range []string{"USERNAME", "LIMITS", "alice", "1000 tpm", "$2.50/month", "bob", "none"} {
		if !strings.Contains(table, w) {
			t.Errorf("users list table lacks %q:\n%s", w, table)
		}
	}
	if h := c.mustRun("--help").stdout; !strings.Contains(h, "users update NAME_OR_ID") {
		t.Error("--help does not mention users update")
	}

	for _, tt := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"users"}, 2, "needs a subcommand"},
		{[]string{"users", "update", "alice"}, 2, "nothing to change"},
		{[]string{"users", "update"}, 2, "exactly one user"},
		{[]string{"users", "update", "alice", "--rpm", "-1"}, 2, "--rpm must be 0 or more"},
		{[]string{"users", "update", "alice", "--budget-period", "week"}, 2, "--budget-period"},
		{[]string{"users", "update", "nobody", "--rpm", "1"}, 1, `no user named or numbered "nobody"`},
		{[]string{"users", "frob"}, 2, "unknown users subcommand"},
	} {
		res := c.run(tt.args...)
		if res.code != tt.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tt.args, res.code, tt.code, res.stderr)
		}
		lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "llm-proxy: ") || !strings.Contains(last, tt.contains) {
			t.Errorf("%v: last stderr line %q, want llm-proxy: ...%s...", tt.args, last, tt.contains)
		}
	}
	if a := list()["alice"]; a.TPM != 1000 || a.BudgetPeriod != "month" {
		t.Errorf("a refused update was written: %+v", a)
	}
}
