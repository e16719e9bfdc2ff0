-- 0006: per-user model allow-lists, request body logging (issue 7).

-- A user's model allow-list, comma-separated like api_keys.models; '' allows every model.
-- A key of the user may use a model only when both lists allow it.
ALTER TABLE users ADD COLUMN models TEXT NOT NULL DEFAULT '';
-- Workers keep the user lists in their key snapshot, so a change to them (or a user's
-- removal) reloads the keys.
CREATE TRIGGER users_models_au AFTER UPDATE OF models ON users BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'keys'; END;
CREATE TRIGGER users_ad_keys AFTER DELETE ON users BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'keys'; END;

-- Per-key opt-out of body logging (LLM_PROXY_LOG_BODIES): 0 never stores this key's bodies.
ALTER TABLE api_keys ADD COLUMN log_bodies INTEGER NOT NULL DEFAULT 1;

-- Request and response bodies, redacted and truncated by the worker, ingested by the
-- primary from the workers' body spools. Kept apart from request_logs so the log queries
-- and the statistics never read the (large) bodies.
CREATE TABLE request_bodies (
    id                 INTEGER PRIMARY KEY,
    request_id         TEXT NOT NULL UNIQUE,
    ts_ms              INTEGER NOT NULL,
    key_id             INTEGER,
    request            TEXT NOT NULL,
    response           TEXT NOT NULL,
    request_truncated  INTEGER NOT NULL DEFAULT 0,
    response_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX request_bodies_ts ON request_bodies(ts_ms);
