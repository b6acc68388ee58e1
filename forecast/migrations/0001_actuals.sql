-- Actual daily sales, one row per (day, store, item): day counts days since 1970-01-01.
CREATE TABLE actuals (
    day INTEGER NOT NULL,
    store INTEGER NOT NULL,
    item INTEGER NOT NULL,
    sales INTEGER NOT NULL CHECK (sales >= 0),
    PRIMARY KEY (day, store, item)
);
