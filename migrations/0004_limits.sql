-- 0004: rate limits, budgets and prices (issue 7).

-- Per-key limits; NULL means "no limit" (a global default may still apply).
ALTER TABLE api_keys ADD COLUMN rpm INTEGER;               -- requests in any 60 s
ALTER TABLE api_keys ADD COLUMN tpm INTEGER;               -- tokens in any 60 s
ALTER TABLE api_keys ADD COLUMN max_parallel INTEGER;      -- requests in flight
ALTER TABLE api_keys ADD COLUMN budget_micro_usd INTEGER;  -- spend per budget_period, micro-USD
ALTER TABLE api_keys ADD COLUMN budget_tokens INTEGER;     -- tokens per budget_period
ALTER TABLE api_keys ADD COLUMN budget_period TEXT CHECK (budget_period IN ('day', 'month', 'total'));

-- Model prices in USD per million tokens; rows override the built-in defaults.
CREATE TABLE prices (
    model           TEXT PRIMARY KEY,
    input_per_mtok  REAL NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok REAL NOT NULL CHECK (output_per_mtok >= 0),
    updated_at      INTEGER NOT NULL
);

-- Durable spend ledger. subject: 'key:<id>' or 'user:<id>'; period_start: the period's
-- name, '2025-11-25' (UTC day), '2025-11' (UTC month) or 'total'. Workers add their
-- settled spend every second; the live, exact figure is in the shared memory file.
CREATE TABLE spend (
    subject      TEXT NOT NULL,
    period_start TEXT NOT NULL,
    micro_usd    INTEGER NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (subject, period_start)
) WITHOUT ROWID;

-- A change to prices makes workers reload their price table.
INSERT INTO change_counters(name, gen) VALUES ('prices', 0);
CREATE TRIGGER prices_ai AFTER INSERT ON prices BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'prices'; END;
CREATE TRIGGER prices_au AFTER UPDATE ON prices BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'prices'; END;
CREATE TRIGGER prices_ad AFTER DELETE ON prices BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'prices'; END;
