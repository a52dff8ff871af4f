-- duckcluster drift catalog: the streaming drift monitor's state.
-- Idempotent; run by duckcluster.install(con) after catalog.sql. Plain tables, so
-- any DuckDB client can read a monitor's windows, reservoirs and counts.
--
-- A monitor keeps, per time window, a uniform reservoir sample of at most
-- reservoir_size embeddings (Algorithm R) and the count of rows assigned to each
-- cluster of a reference run (-1 = below the assignment threshold: new content).
-- Storage per window is bounded by reservoir_size rows plus one row per cluster,
-- however many rows the stream brings.

CREATE TABLE IF NOT EXISTS duckcluster.drift_monitors (
    name                 VARCHAR PRIMARY KEY,
    reference_name       VARCHAR,              -- cluster definition, NULL = no cluster counts
    reference_run_id     VARCHAR,              -- centroids fixed at creation
    window_size          VARCHAR NOT NULL,     -- an INTERVAL as text, e.g. '7 days'
    reservoir_size       INTEGER NOT NULL,
    assignment_threshold DOUBLE NOT NULL,
    seed                 BIGINT NOT NULL,
    dim                  INTEGER,              -- set by the first batch
    created_at           TIMESTAMP NOT NULL,
    updated_at           TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS duckcluster.drift_windows (
    monitor      VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,
    n_seen       BIGINT NOT NULL,              -- rows with an embedding that fell in the window
    n_null       BIGINT NOT NULL,              -- rows skipped for a NULL embedding
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (monitor, window_start)
);

-- slot 0..reservoir_size-1; no key constraint, because a slot is deleted and
-- re-inserted within one transaction when a new row replaces it.
CREATE TABLE IF NOT EXISTS duckcluster.drift_reservoirs (
    monitor      VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,
    slot         INTEGER NOT NULL,
    embedding    FLOAT[] NOT NULL              -- as given (normalized when compared)
);

CREATE TABLE IF NOT EXISTS duckcluster.drift_counts (
    monitor      VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,
    cluster_id   INTEGER NOT NULL,             -- -1 = fits no reference cluster
    n            BIGINT NOT NULL,
    PRIMARY KEY (monitor, window_start, cluster_id)
);
