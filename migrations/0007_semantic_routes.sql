-- 0007: per-route and per-key cache overrides, and semantic routes.

-- cache_mode NULL: the next level decides (key > route > LLM_PROXY_CACHE_MODE).
-- cache_ttl_seconds NULL: LLM_PROXY_CACHE_TTL.
ALTER TABLE routes ADD COLUMN cache_mode TEXT CHECK (cache_mode IN ('off', 'exact', 'semantic'));
ALTER TABLE routes ADD COLUMN cache_ttl_seconds INTEGER CHECK (cache_ttl_seconds > 0);
ALTER TABLE api_keys ADD COLUMN cache_mode TEXT CHECK (cache_mode IN ('off', 'exact', 'semantic'));

-- A semantic route is a public model name whose requests go to one of its targets' models,
-- chosen by comparing the request's embedding with each target's example utterances; a
-- request that matches no target above its threshold goes to default_model.
CREATE TABLE semantic_routes (
    model         TEXT PRIMARY KEY,
    default_model TEXT NOT NULL,
    top_k         INTEGER NOT NULL DEFAULT 3 CHECK (top_k >= 1),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE semantic_targets (
    route_model TEXT NOT NULL REFERENCES semantic_routes(model) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    model       TEXT NOT NULL,                         -- public model the target routes to
    threshold   REAL NOT NULL CHECK (threshold >= -1 AND threshold <= 1.01),
    utterances  TEXT NOT NULL,                         -- JSON array of example texts
    position    INTEGER NOT NULL,                      -- order of the targets as given
    PRIMARY KEY (route_model, name)
) WITHOUT ROWID;

-- Workers rebuild their routing table (and the utterance vectors) on the 'upstreams' counter.
CREATE TRIGGER semantic_routes_ai AFTER INSERT ON semantic_routes BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER semantic_routes_au AFTER UPDATE ON semantic_routes BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER semantic_routes_ad AFTER DELETE ON semantic_routes BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER semantic_targets_ai AFTER INSERT ON semantic_targets BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER semantic_targets_au AFTER UPDATE ON semantic_targets BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
CREATE TRIGGER semantic_targets_ad AFTER DELETE ON semantic_targets BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'upstreams'; END;
