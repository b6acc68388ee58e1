-- Per day of actuals, how many loads changed it: a window's sum of changes grows whenever new or
-- different actuals arrive for one of its days, so what was computed from a window is kept until then.
CREATE TABLE actuals_days (
    day INTEGER PRIMARY KEY,
    changes BIGINT NOT NULL
);
INSERT INTO actuals_days SELECT DISTINCT day, 1 FROM actuals
