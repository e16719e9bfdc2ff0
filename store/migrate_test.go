package store

import (
	"slices"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/hashicorp/go-hclog"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/migrations"
)

func countMigrationRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	err := s.read(testContext(t), func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT count(*) FROM schema_migrations", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { n = stmt.ColumnInt(0); return nil },
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateTwice(t *testing.T) {
	ctx := testContext(t)
	s, err := Open(ctx, testConfig(t), nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := listMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{len(list), 0} {
		got, err := s.Migrate(ctx)
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if got != want {
			t.Errorf("run %d applied %d migrations, want %d", i+1, got, want)
		}
	}
	if got, want := countMigrationRows(t, s), len(list); got != want {
		t.Errorf("schema_migrations rows = %d, want %d", got, want)
	}
}

func TestMigrateConcurrentStores(t *testing.T) {
	cfg := testConfig(t)
	ctx := testContext(t)
	const n = 4
	stores := make([]*Store, n)
	for i := range stores {
		s, err := Open(ctx, cfg, nil, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	applied := make([]int, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			applied[i], errs[i] = s.Migrate(ctx)
		}()
	}
	close(start)
	wg.Wait()
	list, err := listMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("store %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != len(list) {
		t.Errorf("migrations applied across stores = %d, want %d (each exactly once)", total, len(list))
	}
	if got := countMigrationRows(t, stores[0]); got != len(list) {
		t.Errorf("schema_migrations rows = %d, want %d", got, len(list))
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	ctx := testContext(t)
	s, err := Open(ctx, testConfig(t), nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fsys := fstest.MapFS{
		"0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"0002_b.sql": {Data: []byte("CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);")},
	}
	n, err := s.migrate(ctx, fsys)
	if err == nil {
		t.Fatal("migrate with a broken file succeeded")
	}
	if n != 1 {
		t.Errorf("applied = %d, want 1 (the good file)", n)
	}
	var tables []string
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('a', 'b') ORDER BY name", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { tables = append(tables, stmt.ColumnText(0)); return nil },
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0] != "a" {
		t.Errorf("tables after failed migration = %v, want [a] (b rolled back)", tables)
	}
	if got := countMigrationRows(t, s); got != 1 {
		t.Errorf("schema_migrations rows = %d, want 1", got)
	}
}

func TestListMigrationsRejects(t *testing.T) {
	tests := []struct {
		name string
		fsys fstest.MapFS
	}{
		{"no number", fstest.MapFS{"init.sql": {}}},
		{"zero", fstest.MapFS{"0000_init.sql": {}}},
		{"duplicate version", fstest.MapFS{"0001_a.sql": {}, "1_b.sql": {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := listMigrations(tt.fsys); err == nil {
				t.Error("listMigrations succeeded, want error")
			}
		})
	}
	got, err := listMigrations(fstest.MapFS{"0010_c.sql": {}, "0002_b.sql": {}, "0001_a.sql": {}})
	if err != nil {
		t.Fatal(err)
	}
	var order []int64
	for _, m := range got {
		order = append(order, m.version)
	}
	if want := []int64{1, 2, 10}; !slices.Equal(order, want) {
		t.Errorf("order = %v, want %v", order, want)
	}
}
