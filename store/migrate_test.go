package store

import (
	"io/fs"
	"slices"
	"strings"
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

// TestMigrateRebuildsRequestLogs: 0009 rebuilds request_logs without UNIQUE(request_id);
// rows keep their ids and values (the stats watermark and log cursors are ids), and the
// table keeps its two indexes.
func TestMigrateRebuildsRequestLogs(t *testing.T) {
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
	before := fstest.MapFS{}
	for _, m := range list {
		if m.version >= 9 {
			continue
		}
		b, err := fs.ReadFile(migrations.FS, m.name)
		if err != nil {
			t.Fatal(err)
		}
		before[m.name] = &fstest.MapFile{Data: b}
	}
	if _, err := s.migrate(ctx, before); err != nil {
		t.Fatal(err)
	}
	const cols = `(id, request_id, ts_ms, worker, key_id, endpoint, model, upstream, upstream_model, status, stream,
		latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class, attempts, attempt_count, cache, route,
		tokens_estimated, cost_micro_usd)`
	exec := func(q string) error {
		return s.write(ctx, func(conn *sqlite.Conn) error { return sqlitex.ExecuteTransient(conn, q, nil) })
	}
	if err := exec(`INSERT INTO request_logs ` + cols + ` VALUES
		(5, 'req_a', 1000, 1, 7, 'chat', 'gpt', 'up', 'gpt-x', 200, 1, 10, 5, 3, 4, '', '[{"upstream":"up"}]', 1, 'miss', 'r', 1, 42),
		(9, 'req_b', 2000, 2, NULL, 'embeddings', 'e', '', '', 401, 0, 1, 0, 0, 0, 'auth', '[]', 0, '', '', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	if err := exec(`INSERT INTO request_logs ` + cols + ` VALUES (10, 'req_a', 3000, 1, 7, 'chat', 'gpt', 'up', 'gpt-x', 200, 1, 10, 5, 3, 4, '', '[]', 1, '', '', 0, 0)`); err == nil {
		t.Fatal("before 0009 a repeated request_id must be refused")
	}
	if n, err := s.Migrate(ctx); err != nil || n != len(list)-len(before) {
		t.Fatalf("Migrate: %d, %v; want %d", n, err, len(list)-len(before))
	}
	var got []string
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.ExecuteTransient(conn, `SELECT id, request_id, ts_ms, worker, ifnull(key_id, 'null'), endpoint, model, upstream,
			upstream_model, status, stream, latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class, attempts,
			attempt_count, cache, route, tokens_estimated, cost_micro_usd FROM request_logs ORDER BY id`, &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				var row []string
				for i := range stmt.ColumnCount() {
					row = append(row, stmt.ColumnText(i))
				}
				got = append(got, strings.Join(row, "|"))
				return nil
			}})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`5|req_a|1000|1|7|chat|gpt|up|gpt-x|200|1|10|5|3|4||[{"upstream":"up"}]|1|miss|r|1|42`,
		`9|req_b|2000|2|null|embeddings|e|||401|0|1|0|0|0|auth|[]|0|||0|0`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("rows after 0009:\n got %q\nwant %q", got, want)
	}
	if err := exec(`INSERT INTO request_logs ` + cols + ` VALUES (10, 'req_a', 3000, 1, 7, 'chat', 'gpt', 'up', 'gpt-x', 200, 1, 10, 5, 3, 4, '', '[]', 1, '', '', 0, 0)`); err != nil {
		t.Errorf("after 0009 request_id is not unique: %v", err)
	}
	var idx []string
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.ExecuteTransient(conn, `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'request_logs' ORDER BY name`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error { idx = append(idx, stmt.ColumnText(0)); return nil }})
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"request_logs_key", "request_logs_ts"}; !slices.Equal(idx, want) {
		t.Errorf("indexes: got %q, want %q", idx, want)
	}
}
