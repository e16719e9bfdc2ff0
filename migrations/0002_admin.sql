-- 0002: the web admin. Users and their sessions, admin API tokens, ownership of client keys,
-- login throttling, and the statistics roll-ups the dashboard reads. Times are unix seconds.

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash        TEXT NOT NULL,                -- argon2id, PHC string format
    role                 TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    must_change_password INTEGER NOT NULL DEFAULT 0,   -- 1 while the password is a default or was set by an admin
    disabled             INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

-- Only the SHA-256 of the session token is stored, so a copy of the database opens no session.
-- The CSRF token is the synchronizer token of the session; it is useless without the cookie.
CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ip         TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_at);

-- Admin API tokens ("lpa-..."), for automation: Bearer auth on /api/*, no CSRF token needed.
CREATE TABLE admin_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    hash         BLOB NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,             -- NULL: never
    last_used_at INTEGER
);

-- Client keys belong to the user who created them; NULL for keys made by the CLI.
-- disabled marks a revocation the owner may undo (enabled=false in the API): revoked_at is
-- set either way, so every worker refuses the key without knowing the difference.
ALTER TABLE api_keys ADD COLUMN user_id INTEGER REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE api_keys ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Login throttling, shared by every worker: failures per "ip:<addr>" and "user:<name>" in
-- the current window.
CREATE TABLE login_failures (
    scope        TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
) WITHOUT ROWID;

-- Statistics roll-ups, maintained by the primary from request_logs (by id watermark) and
-- read by the dashboard. bucket is the start of the minute / hour in unix seconds. h0..h11
-- count requests per latency band (see store/stats.go for the bounds).
CREATE TABLE stats_minute (
    bucket            INTEGER NOT NULL,
    key_id            INTEGER NOT NULL,   -- 0: unknown key
    model             TEXT NOT NULL,
    upstream          TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    latency_us_sum    INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    h0 INTEGER NOT NULL DEFAULT 0, h1 INTEGER NOT NULL DEFAULT 0, h2 INTEGER NOT NULL DEFAULT 0,
    h3 INTEGER NOT NULL DEFAULT 0, h4 INTEGER NOT NULL DEFAULT 0, h5 INTEGER NOT NULL DEFAULT 0,
    h6 INTEGER NOT NULL DEFAULT 0, h7 INTEGER NOT NULL DEFAULT 0, h8 INTEGER NOT NULL DEFAULT 0,
    h9 INTEGER NOT NULL DEFAULT 0, h10 INTEGER NOT NULL DEFAULT 0, h11 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key_id, model, upstream)
) WITHOUT ROWID;

CREATE TABLE stats_hour (
    bucket            INTEGER NOT NULL,
    key_id            INTEGER NOT NULL,
    model             TEXT NOT NULL,
    upstream          TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    latency_us_sum    INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    h0 INTEGER NOT NULL DEFAULT 0, h1 INTEGER NOT NULL DEFAULT 0, h2 INTEGER NOT NULL DEFAULT 0,
    h3 INTEGER NOT NULL DEFAULT 0, h4 INTEGER NOT NULL DEFAULT 0, h5 INTEGER NOT NULL DEFAULT 0,
    h6 INTEGER NOT NULL DEFAULT 0, h7 INTEGER NOT NULL DEFAULT 0, h8 INTEGER NOT NULL DEFAULT 0,
    h9 INTEGER NOT NULL DEFAULT 0, h10 INTEGER NOT NULL DEFAULT 0, h11 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key_id, model, upstream)
) WITHOUT ROWID;

-- The last request_logs id folded into the roll-ups.
CREATE TABLE stats_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    watermark INTEGER NOT NULL DEFAULT 0
);
INSERT INTO stats_state(id) VALUES (1);
