-- request_logs without UNIQUE(request_id). Exactly-once ingest comes from the spool offset,
-- which moves in the same transaction as the rows and only from the value the batch was
-- read at (store/ingest.go); the unique index only repeated that guarantee, at about a
-- fifth of the cost of every ingested row. The table is rebuilt because SQLite cannot drop
-- a column constraint; ids are kept, so the stats watermark and log cursors stay valid.
CREATE TABLE request_logs_new (
    id                INTEGER PRIMARY KEY,
    request_id        TEXT NOT NULL,
    ts_ms             INTEGER NOT NULL,
    worker            INTEGER NOT NULL,
    key_id            INTEGER,
    endpoint          TEXT NOT NULL,
    model             TEXT NOT NULL,
    upstream          TEXT NOT NULL,
    upstream_model    TEXT NOT NULL,
    status            INTEGER NOT NULL,
    stream            INTEGER NOT NULL,
    latency_us        INTEGER NOT NULL,
    ttfb_us           INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    error_class       TEXT NOT NULL,
    attempts          TEXT NOT NULL DEFAULT '[]',
    attempt_count     INTEGER NOT NULL DEFAULT 0,
    cache             TEXT NOT NULL DEFAULT '',
    route             TEXT NOT NULL DEFAULT '',
    tokens_estimated  INTEGER NOT NULL DEFAULT 0,
    cost_micro_usd    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO request_logs_new SELECT id, request_id, ts_ms, worker, key_id, endpoint, model, upstream, upstream_model, status, stream, latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class, attempts, attempt_count, cache, route, tokens_estimated, cost_micro_usd FROM request_logs;
DROP TABLE request_logs;
ALTER TABLE request_logs_new RENAME TO request_logs;
CREATE INDEX request_logs_ts ON request_logs(ts_ms);
CREATE INDEX request_logs_key ON request_logs(key_id, ts_ms);
