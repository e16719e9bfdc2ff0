-- 0001: the data-path schema. Times are unix seconds unless the column says _ms/_us.

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Upstreams are providers' endpoints. api_key_enc is AES-256-GCM (nonce || ciphertext)
-- under the secret key, which never lives in this file; NULL when the upstream needs no key.
CREATE TABLE upstreams (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    provider    TEXT NOT NULL DEFAULT 'openai',
    base_url    TEXT NOT NULL,
    api_key_enc BLOB,
    weight      INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 0),
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
);

-- A deployment is one public model served by one upstream. public_model '*' means
-- "any model name", forwarded unchanged (upstream_model is then '').
CREATE TABLE deployments (
    id             INTEGER PRIMARY KEY,
    upstream_id    INTEGER NOT NULL REFERENCES upstreams(id) ON DELETE CASCADE,
    public_model   TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    weight         INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 0),
    UNIQUE (upstream_id, public_model)
);
CREATE INDEX deployments_public_model ON deployments(public_model);

-- Client API keys: only the SHA-256 of the key and a display prefix are stored.
CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    models     TEXT NOT NULL DEFAULT '',   -- comma-separated allow-list; '' allows every model
    created_at INTEGER NOT NULL,
    expires_at INTEGER,                    -- NULL: never
    revoked_at INTEGER                     -- NULL: active
);

-- Change counters let every worker notice a CLI or admin edit with one cheap read
-- (polled every 250 ms) instead of reloading whole tables.
CREATE TABLE change_counters (
    name TEXT PRIMARY KEY,
    gen  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO change_counters(name, gen) VALUES ('keys', 0), ('upstreams', 0), ('settings', 0);

CREATE TRIGGER api_keys_ai AFTER INSERT ON api_keys BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'keys'; END;
CREATE TRIGGER api_keys_au AFTER UPDATE ON api_keys BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'keys'; END;
CREATE TRIGGER api_keys_ad AFTER DELETE ON api_keys BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'keys'; END;
CREATE TRIGGER upstreams_ai AFTER INSERT ON upstreams BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER upstreams_au AFTER UPDATE ON upstreams BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER upstreams_ad AFTER DELETE ON upstreams BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER deployments_ai AFTER INSERT ON deployments BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER deployments_au AFTER UPDATE ON deployments BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER deployments_ad AFTER DELETE ON deployments BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER settings_ai AFTER INSERT ON settings BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'settings'; END;
CREATE TRIGGER settings_au AFTER UPDATE ON settings BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'settings'; END;
CREATE TRIGGER settings_ad AFTER DELETE ON settings BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'settings'; END;

-- One row per proxied request, ingested from the workers' spool files.
-- request_id is unique so a replayed spool segment inserts nothing twice.
CREATE TABLE request_logs (
    id                INTEGER PRIMARY KEY,
    request_id        TEXT NOT NULL UNIQUE,
    ts_ms             INTEGER NOT NULL,     -- request start, unix milliseconds
    worker            INTEGER NOT NULL,
    key_id            INTEGER,              -- NULL when the key was not recognised
    endpoint          TEXT NOT NULL,        -- chat, completions, embeddings, models
    model             TEXT NOT NULL,        -- as requested by the client
    upstream          TEXT NOT NULL,        -- upstream name, '' when none was chosen
    upstream_model    TEXT NOT NULL,
    status            INTEGER NOT NULL,
    stream            INTEGER NOT NULL,
    latency_us        INTEGER NOT NULL,
    ttfb_us           INTEGER NOT NULL,     -- first byte from the upstream; 0 when none
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    error_class       TEXT NOT NULL         -- '' on success; see worker/errors.go
);
CREATE INDEX request_logs_ts ON request_logs(ts_ms);
CREATE INDEX request_logs_key ON request_logs(key_id, ts_ms);

-- Ingest progress per spool file; committed in the same transaction as the rows.
CREATE TABLE spool_offsets (
    spool      TEXT PRIMARY KEY,
    offset     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Coordination: one row per live worker process, and the single-row primary lease.
CREATE TABLE workers (
    id         TEXT PRIMARY KEY,   -- "<slot>-<pid>-<start unix nanos>"
    slot       INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    beat_at    INTEGER NOT NULL,
    role       TEXT NOT NULL DEFAULT 'worker',
    version    TEXT NOT NULL,
    stats      TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL DEFAULT '',   -- workers.id, '' when free
    pid        INTEGER NOT NULL DEFAULT 0,
    epoch      INTEGER NOT NULL DEFAULT 0,
    renew_seq  INTEGER NOT NULL DEFAULT 0, -- bumped at every renewal; observers time it on their own monotonic clock
    since      INTEGER NOT NULL DEFAULT 0,
    renewed_at INTEGER NOT NULL DEFAULT 0
);
INSERT INTO leader(id) VALUES (1);
