-- 0005: model routes, deployment tiers and limits, shared upstream health, and the
-- request record fields of routing (attempts), caching and accounting.

-- A route configures one public model: its balancing strategy (NULL: the global
-- default) and the models to fall back to, in order, when all its deployments fail.
CREATE TABLE routes (
    model      TEXT PRIMARY KEY,
    strategy   TEXT,
    fallbacks  TEXT NOT NULL DEFAULT '',  -- comma-separated public model names
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TRIGGER routes_ai AFTER INSERT ON routes BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER routes_au AFTER UPDATE ON routes BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER routes_ad AFTER DELETE ON routes BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;

-- priority: lower tiers are tried first; higher tiers only when every deployment of
-- the lower ones is unavailable or failed. max_concurrent 0: unlimited.
ALTER TABLE deployments ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN max_concurrent INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent >= 0);

-- Active health checks, written by the primary only (fenced by epoch) and read by
-- every worker through the 'health' change counter.
CREATE TABLE upstream_health (
    upstream_id INTEGER PRIMARY KEY REFERENCES upstreams(id) ON DELETE CASCADE,
    healthy     INTEGER NOT NULL,
    checked_at  INTEGER NOT NULL,      -- unix milliseconds
    latency_ms  INTEGER NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    failures    INTEGER NOT NULL DEFAULT 0  -- consecutive failed probes
);
INSERT INTO change_counters(name, gen) VALUES ('health', 0);
CREATE TRIGGER upstream_health_ai AFTER INSERT ON upstream_health BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'health'; END;
CREATE TRIGGER upstream_health_au AFTER UPDATE OF healthy ON upstream_health WHEN OLD.healthy <> NEW.healthy BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'health'; END;
CREATE TRIGGER upstream_health_ad AFTER DELETE ON upstream_health BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'health'; END;

-- attempts: JSON array, one object per upstream attempt:
-- {"upstream","model","status","error","latency_us"}.
ALTER TABLE request_logs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE request_logs ADD COLUMN attempt_count INTEGER NOT NULL DEFAULT 0;
-- cache: '', 'miss', 'bypass', 'hit-l1', 'hit-l2', 'hit-semantic'.
ALTER TABLE request_logs ADD COLUMN cache TEXT NOT NULL DEFAULT '';
-- route: why this target was chosen (semantic route decisions carry their score).
ALTER TABLE request_logs ADD COLUMN route TEXT NOT NULL DEFAULT '';
-- tokens_estimated: 1 when the provider reported no usage and the gateway counted.
ALTER TABLE request_logs ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN cost_micro_usd INTEGER NOT NULL DEFAULT 0;
