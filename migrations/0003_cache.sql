-- 0003: the response cache. L2 holds exact-match entries shared by every worker; the
-- semantic tier keeps one vector per cached prompt, and each worker loads them into memory.
-- Times are unix seconds.

CREATE TABLE cache_entries (
    key               BLOB PRIMARY KEY,          -- cache.Key: 16 bytes of SHA-256 over the normalised request
    namespace         TEXT NOT NULL,             -- who may read it: an API key owner, or '' when shared
    model             TEXT NOT NULL,             -- model after alias resolution
    body              BLOB NOT NULL,             -- the complete non-stream response JSON
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    size              INTEGER NOT NULL,          -- bytes charged against the L2 budget
    hits              INTEGER NOT NULL DEFAULT 0,
    last_hit_at       INTEGER NOT NULL           -- created_at until the first hit; eviction order
) WITHOUT ROWID;
CREATE INDEX cache_entries_expires ON cache_entries(expires_at);
CREATE INDEX cache_entries_lru ON cache_entries(last_hit_at);
CREATE INDEX cache_entries_model ON cache_entries(model);
CREATE INDEX cache_entries_namespace ON cache_entries(namespace);

-- Running totals kept by triggers, so the eviction budget check and the stats are one row
-- read instead of a scan of every entry.
CREATE TABLE cache_totals (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    entries INTEGER NOT NULL DEFAULT 0,
    bytes   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO cache_totals(id) VALUES (1);
CREATE TRIGGER cache_entries_ai AFTER INSERT ON cache_entries BEGIN
    UPDATE cache_totals SET entries = entries + 1, bytes = bytes + new.size WHERE id = 1;
END;
CREATE TRIGGER cache_entries_au AFTER UPDATE OF size ON cache_entries BEGIN
    UPDATE cache_totals SET bytes = bytes - old.size + new.size WHERE id = 1;
END;
CREATE TRIGGER cache_entries_ad AFTER DELETE ON cache_entries BEGIN
    UPDATE cache_totals SET entries = entries - 1, bytes = bytes - old.size WHERE id = 1;
END;

-- The cache generation lives with the other change counters: a purge bumps it, and every
-- worker that sees it change clears its in-memory tiers (L1 and the semantic index).
INSERT INTO change_counters(name, gen) VALUES ('cache', 0);

-- One vector per cached prompt of the semantic tier. The body is not copied: a semantic hit
-- reads the exact entry by key, and deleting (evicting, purging) that entry deletes its vector.
CREATE TABLE semantic_entries (
    id         INTEGER PRIMARY KEY,
    key        BLOB NOT NULL REFERENCES cache_entries(key) ON DELETE CASCADE,
    namespace  TEXT NOT NULL,
    scope_hash BLOB NOT NULL,                    -- namespace, model, earlier messages, answer-changing params
    model      TEXT NOT NULL,
    embedder   TEXT NOT NULL,                    -- embedder id; vectors of another embedder are never compared
    dim        INTEGER NOT NULL,
    vector     BLOB NOT NULL,                    -- dim little-endian float32, L2-normalised
    text       TEXT NOT NULL,                    -- the prompt, for the false-hit guard and the admin
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    UNIQUE (key, embedder)
);
CREATE INDEX semantic_entries_load ON semantic_entries(embedder, expires_at);
