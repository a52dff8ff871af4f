-- duckcluster catalog: the maps of runs (core/projection.py). Idempotent, like catalog.sql.
-- A run's map is a PCA of its vectors (kind 'pca': projections.mean, .components) or a
-- layout of the neighbour graph its pipeline built (kind 'graph'): then map_references
-- holds a seeded sample of the fitted rows (unit vectors) with their map positions, from
-- which assign runs place new rows (the weighted mean of their nearest references).
-- Files written before graph maps have kind NULL: PCA.
ALTER TABLE duckcluster.projections ADD COLUMN IF NOT EXISTS kind VARCHAR;

CREATE TABLE IF NOT EXISTS duckcluster.map_references (
    run_id    VARCHAR NOT NULL,
    name      VARCHAR NOT NULL,
    ord       INTEGER NOT NULL,      -- order of the reference within the run
    vector    FLOAT[] NOT NULL,
    x         FLOAT NOT NULL,
    y         FLOAT NOT NULL,
    z         FLOAT                  -- 3-D maps
);

-- Partitioned runs (partition_by): one map per partition, of the same kinds, keyed by the
-- partition value as text (NULL: the NULL partition); their graph maps' references are the
-- map_references rows with that partition. Unpartitioned runs keep theirs in projections.
CREATE TABLE IF NOT EXISTS duckcluster.partition_projections (
    run_id      VARCHAR NOT NULL,
    name        VARCHAR NOT NULL,
    partition   VARCHAR,
    dimensions  INTEGER NOT NULL,
    mean        FLOAT[] NOT NULL,
    components  FLOAT[][] NOT NULL,
    kind        VARCHAR
);
ALTER TABLE duckcluster.map_references ADD COLUMN IF NOT EXISTS partition VARCHAR;
