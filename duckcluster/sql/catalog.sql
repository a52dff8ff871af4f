-- duckcluster catalog: plain tables in the `duckcluster` schema of the user's database.
-- Idempotent; run by duckcluster.install(con) and loadable in the stock DuckDB CLI.
-- Written for storage version v1.4.0 so the file opens in DuckDB 1.4 and later.

CREATE SCHEMA IF NOT EXISTS duckcluster;

CREATE TABLE IF NOT EXISTS duckcluster.meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);
INSERT OR IGNORE INTO duckcluster.meta VALUES ('catalog_version', '1');

-- One row per definition; `spec` is the validated ClusterSpec as JSON.
CREATE TABLE IF NOT EXISTS duckcluster.definitions (
    name        VARCHAR PRIMARY KEY,
    spec        JSON NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

-- One row per execution. Everything needed to reproduce it: spec, seed,
-- input hash, library versions. Quality metrics are columns and JSON.
CREATE TABLE IF NOT EXISTS duckcluster.runs (
    run_id                  VARCHAR PRIMARY KEY,
    run_seq                 BIGINT NOT NULL,
    name                    VARCHAR NOT NULL,
    mode                    VARCHAR NOT NULL,      -- full | assign
    status                  VARCHAR NOT NULL,      -- queued | running | succeeded | failed | abandoned
    error                   VARCHAR,
    started_at              TIMESTAMP NOT NULL,
    finished_at             TIMESTAMP,
    duration_s              DOUBLE,
    n_rows                  BIGINT,                -- source rows
    n_null                  BIGINT,                -- rows skipped for a NULL embedding
    n_members               BIGINT,
    n_fit                   BIGINT,                -- rows the algorithm saw (sample_size)
    n_clusters              INTEGER,
    dim                     INTEGER,
    seed                    BIGINT,
    input_hash              VARCHAR,
    base_run_id             VARCHAR,               -- assign runs: the full run whose centroids were used
    assignment_threshold    DOUBLE,
    spec                    JSON,
    versions                JSON,
    timings                 JSON,
    artifacts_path          VARCHAR,
    pid                     BIGINT,
    progress                VARCHAR,               -- the stage a run is at (background runs)
    submitted_at            TIMESTAMP,             -- cluster_submit: when it was queued
    silhouette_score        DOUBLE,
    mean_cosine_to_centroid DOUBLE,
    noise_ratio             DOUBLE,
    cluster_size_entropy    DOUBLE,
    davies_bouldin          DOUBLE,
    calinski_harabasz       DOUBLE,
    should_recluster        BOOLEAN,
    quality                 JSON
);

-- One row per cluster node of a run (top level: hierarchy_level 0, node_id 'cl_<k>').
CREATE TABLE IF NOT EXISTS duckcluster.centroids (
    run_id                 VARCHAR NOT NULL,
    name                   VARCHAR NOT NULL,
    cluster_id             INTEGER NOT NULL,
    node_id                VARCHAR NOT NULL,
    parent_cluster_id      VARCHAR,
    child_cluster_ids      VARCHAR[],
    hierarchy_level        INTEGER NOT NULL,
    size                   BIGINT NOT NULL,
    mean_cosine_similarity DOUBLE,
    min_cosine_similarity  DOUBLE,
    centroid               FLOAT[] NOT NULL,
    label                  VARCHAR,
    summary                VARCHAR,
    keywords               VARCHAR[]
);

-- One row per source row with an embedding. id is the user's id as text.
CREATE TABLE IF NOT EXISTS duckcluster.members (
    run_id                        VARCHAR NOT NULL,
    name                          VARCHAR NOT NULL,
    id                            VARCHAR NOT NULL,
    cluster_id                    INTEGER NOT NULL,  -- -1 = noise
    cosine_similarity_to_centroid FLOAT,
    x                             FLOAT,
    y                             FLOAT,
    z                             FLOAT,
    node_id                       VARCHAR,
    parent_cluster_id             VARCHAR,
    hierarchy_level               INTEGER
);

-- The plotting projection (PCA) of a full run: assign runs based on it place their
-- rows on the same x, y[, z] map. components: one FLOAT[] of width dim per axis kept.
CREATE TABLE IF NOT EXISTS duckcluster.projections (
    run_id      VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    dimensions  INTEGER NOT NULL,
    mean        FLOAT[] NOT NULL,
    components  FLOAT[][] NOT NULL
);
