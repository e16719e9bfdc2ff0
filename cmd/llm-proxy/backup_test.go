package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// TestBackupCommand runs the built binary: `llm-proxy backup FILE` copies the
// database (keys included) into a file that passes integrity_check, and refuses
// a missing argument, an existing file and a database path that holds nothing.
func TestBackupCommand(t *testing.T) {
	c := newCLIEnv(t)
	for _, name := range []string{"alpha", "beta", "gamma"} {
		c.mustRun("keys", "create", "--name", name)
	}
	dst := filepath.Join(c.dir, "backups", "llm-proxy-backup.db")
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	res := c.mustRun("backup", dst)
	if !strings.Contains(res.stdout, "backed up "+c.db+" to "+dst) || !strings.Contains(res.stdout, "secret key") {
		t.Errorf("backup output = %q, want the paths and the secret key reminder", res.stdout)
	}
	conn, err := sqlite.OpenConn(dst, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var check string
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA integrity_check", &sqlitex.ExecOptions{
		ResultFunc: func(stmt *sqlite.Stmt) error { check += stmt.ColumnText(0); return nil },
	}); err != nil {
		t.Fatal(err)
	}
	if check != "ok" {
		t.Errorf("integrity_check = %q, want ok", check)
	}
	keys, err := sqlitex.ResultInt64(conn.Prep("SELECT count(*) FROM api_keys"))
	if err != nil || keys != 3 {
		t.Errorf("backup has %d api_keys (%v), want 3", keys, err)
	}
	// The backup is a usable database: the CLI lists the same keys from it.
	restored := &cliEnv{t: t, dir: c.dir, db: dst, env: []string{"LLM_PROXY_DATABASE_PATH=" + dst}}
	if out := restored.mustRun("keys", "list").stdout; !strings.Contains(out, "alpha") || !strings.Contains(out, "gamma") {
		t.Errorf("keys list on the backup = %q, want the three keys", out)
	}

	tests := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no file", c.env, []string{"backup"}, exitUsage, "needs one argument"},
		{"two files", c.env, []string{"backup", "a", "b"}, exitUsage, "needs one argument"},
		{"existing file", c.env, []string{"backup", dst}, exitError, "already exists"},
		{"no database", []string{"LLM_PROXY_DATABASE_PATH=" + filepath.Join(c.dir, "nothing.db")},
			[]string{"backup", filepath.Join(c.dir, "x.db")}, exitError, "no database at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runBinary(t, c.dir, tt.env, nil, tt.args...)
			if res.code != tt.wantCode || !strings.Contains(res.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", res.code, res.stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(c.dir, "nothing.db")); err == nil {
		t.Errorf("backup created a database at a path that had none")
	}
}
