-- What GET /accuracy computed, shared by every worker (and every pod of a PostgreSQL store): an entry holds
-- while the stamp of its days (the sum of their changes in actuals_days) is the one it was computed at.
CREATE TABLE accuracy_cache (
    key TEXT PRIMARY KEY,
    stamp BIGINT NOT NULL,
    entry TEXT NOT NULL,
    computed_at DOUBLE PRECISION NOT NULL
)
