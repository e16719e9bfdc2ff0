-- 0008: per-user rate limits and budgets (issue 7). Same columns and meaning as the
-- api_keys ones of 0004; a user's limits are shared by all the user's keys, on top of
-- each key's own. NULL means "no limit" (no global default applies to users).
ALTER TABLE users ADD COLUMN rpm INTEGER;
ALTER TABLE users ADD COLUMN tpm INTEGER;
ALTER TABLE users ADD COLUMN max_parallel INTEGER;
ALTER TABLE users ADD COLUMN budget_micro_usd INTEGER;
ALTER TABLE users ADD COLUMN budget_tokens INTEGER;
ALTER TABLE users ADD COLUMN budget_period TEXT CHECK (budget_period IN ('day', 'month', 'total'));

-- Workers carry the owner's limits in their key snapshot (ListAPIKeys joins users), so a
-- change to them reloads the keys like a change to a key does.
CREATE TRIGGER users_limits_au AFTER UPDATE OF rpm, tpm, max_parallel, budget_micro_usd, budget_tokens, budget_period ON users
BEGIN UPDATE change_counters SET gen = gen + 1 WHERE name = 'keys'; END;
