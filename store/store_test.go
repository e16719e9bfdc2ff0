package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/store/secret"
)

func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{Path: filepath.Join(t.TempDir(), "data", "llm-proxy.db"), MaxOpenConns: 8, MaxIdleConns: 2}
}

func testBox(t *testing.T, material string) *secret.Box {
	t.Helper()
	b, err := secret.New(material)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openTestStore opens a migrated store on a fresh file.
func openTestStore(t *testing.T, cfg Config, box *secret.Box) *Store {
	t.Helper()
	ctx := testContext(t)
	s, err := Open(ctx, cfg, box, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	cfg := testConfig(t)
	s := openTestStore(t, cfg, nil)
	if got := s.Path(); got != cfg.Path {
		t.Errorf("Path() = %q, want %q", got, cfg.Path)
	}
	tests := []struct {
		path string
		want os.FileMode
	}{
		{filepath.Dir(cfg.Path), 0o700},
		{cfg.Path, 0o600},
		{cfg.Path + "-wal", 0o600},
	}
	for _, tt := range tests {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tt.want {
			t.Errorf("%s mode = %v, want %v", filepath.Base(tt.path), got, tt.want)
		}
	}
}

func TestConnectionPragmas(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	tests := []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"synchronous", "1"}, // NORMAL
		{"foreign_keys", "1"},
		// 0: the fixed timeout is replaced by a busy handler that waits until the
		// caller's context ends.
		{"busy_timeout", "0"},
	}
	for _, tt := range tests {
		var got string
		err := s.read(testContext(t), func(conn *sqlite.Conn) error {
			return sqlitex.ExecuteTransient(conn, "PRAGMA "+tt.pragma, &sqlitex.ExecOptions{
				ResultFunc: func(stmt *sqlite.Stmt) error { got = stmt.ColumnText(0); return nil },
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{Path: "data/llm-proxy.db", MaxOpenConns: 50, MaxIdleConns: 10}, false},
		{"no idle", Config{Path: "x.db", MaxOpenConns: 1, MaxIdleConns: 0}, false},
		{"empty path", Config{MaxOpenConns: 1}, true},
		{"zero open", Config{Path: "x.db", MaxOpenConns: 0}, true},
		{"negative idle", Config{Path: "x.db", MaxOpenConns: 1, MaxIdleConns: -1}, true},
		{"idle above open", Config{Path: "x.db", MaxOpenConns: 2, MaxIdleConns: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestWriteRollsBackOnError(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	boom := errors.New("boom")
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, "INSERT INTO settings(key, value, updated_at) VALUES ('a', 'b', 0)", nil); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("write err = %v, want %v", err, boom)
	}
	got, err := s.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("settings after rolled-back write = %v, want none", got)
	}
}
