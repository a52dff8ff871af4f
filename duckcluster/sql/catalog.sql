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
    status                  VARCHAR NOT NULL,      -- queued | running | succeeded | failed | cancelled | abandoned
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
    hierarchy_level               INTEGER,
    fingerprint                   BIGINT            -- of the vector (core/lineage.py fingerprints)
);
-- what algorithm 'auto' (or n_clusters 'auto') chose and the candidates it compared
ALTER TABLE duckcluster.runs ADD COLUMN IF NOT EXISTS choices JSON;
-- noise := 'assign': the algorithm left the row as noise, the policy put it in a cluster
ALTER TABLE duckcluster.members ADD COLUMN IF NOT EXISTS noise_assigned BOOLEAN;
-- partition_by: the partition (as text) of each member, cluster and lineage row; NULL for
-- definitions without partition_by (and for the NULL partition of one with it)
ALTER TABLE duckcluster.members ADD COLUMN IF NOT EXISTS partition VARCHAR;
ALTER TABLE duckcluster.centroids ADD COLUMN IF NOT EXISTS partition VARCHAR;
-- files written before rows had fingerprints
ALTER TABLE duckcluster.members ADD COLUMN IF NOT EXISTS fingerprint BIGINT;

-- The plotting projection (PCA) of a full run: assign runs based on it place their
-- rows on the same x, y[, z] map. components: one FLOAT[] of width dim per axis kept.
CREATE TABLE IF NOT EXISTS duckcluster.projections (
    run_id      VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    dimensions  INTEGER NOT NULL,
    mean        FLOAT[] NOT NULL,
    components  FLOAT[][] NOT NULL
);

-- Cluster lineage: what happened to each cluster between a full run and the full run
-- before it (written in the newer run's transaction). One row per cluster, or per
-- (previous, new) pair for split and merged; core/lineage.py defines every column.
CREATE TABLE IF NOT EXISTS duckcluster.lineage (
    name                 VARCHAR NOT NULL,
    run_id               VARCHAR NOT NULL,   -- the newer full run
    previous_run_id      VARCHAR NOT NULL,   -- the successful full run before it
    event                VARCHAR NOT NULL,   -- continued | born | died | split | merged
    previous_cluster_id  INTEGER,            -- NULL for born
    cluster_id           INTEGER,            -- NULL for died
    matched              BOOLEAN NOT NULL,   -- the optimal assignment paired them (same id when stable)
    centroid_similarity  DOUBLE,             -- born / died: the best candidate's
    member_overlap       DOUBLE,             -- Jaccard over rows in both runs; NULL without shared rows
    previous_share       DOUBLE,             -- of the previous cluster's shared rows, the share in this one
    share                DOUBLE,             -- of this cluster's shared rows, the share from the previous one
    shared_members       BIGINT,
    previous_size        BIGINT,
    size                 BIGINT
);

ALTER TABLE duckcluster.lineage ADD COLUMN IF NOT EXISTS partition VARCHAR;

-- Per definition, the next cluster id never used (stable ids never come back).
CREATE TABLE IF NOT EXISTS duckcluster.cluster_id_marks (
    name             VARCHAR NOT NULL,
    next_cluster_id  INTEGER NOT NULL
);

-- Run lifecycle. process_token: boot id, pid and start time of the process running a run
-- (a reused pid is not taken for a dead writer); tmp_path: its temporary artifact folder
-- (removed when its process died, whatever artifacts_dir the next open uses).
ALTER TABLE duckcluster.runs ADD COLUMN IF NOT EXISTS process_token VARCHAR;
ALTER TABLE duckcluster.runs ADD COLUMN IF NOT EXISTS tmp_path VARCHAR;

-- The claim row: every run start (which takes the next run_seq here), start of a queued run
-- and cluster_delete updates it first, in its own transaction, so they serialize: DuckDB gives
-- the second of two concurrent writers of this row a conflict, and it retries. No index on
-- purpose: on a table with a primary key, DuckDB lets a concurrent committed update be lost.
CREATE TABLE IF NOT EXISTS duckcluster.run_claims (
    scope      VARCHAR NOT NULL,
    run_seq    BIGINT NOT NULL,
    claimed_at TIMESTAMP
);
INSERT INTO duckcluster.run_claims
    SELECT 'runs', coalesce(max(run_seq), 0), NULL FROM duckcluster.runs
    WHERE NOT EXISTS (SELECT 1 FROM duckcluster.run_claims WHERE scope = 'runs');

-- The run_seq each definition was created at ('incarnation:<name>'; its runs are above it),
-- for definitions that have none yet (an older duckcluster, rows written by hand): the last
-- run of that name that started before it was created.
INSERT OR IGNORE INTO duckcluster.meta
    SELECT 'incarnation:' || d.name, CAST(coalesce((SELECT max(r.run_seq) FROM duckcluster.runs r
        WHERE r.name = d.name AND r.started_at < d.created_at), 0) AS VARCHAR)
    FROM duckcluster.definitions d;
