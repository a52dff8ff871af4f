-- duckcluster catalog, labels area: label details, LLM label cache, label failures,
-- enrichment history, taxonomies. Idempotent; run by duckcluster.install(con) after
-- catalog.sql. Labels, summaries and keywords themselves live on duckcluster.centroids.
-- API keys are never stored here.

CREATE SCHEMA IF NOT EXISTS duckcluster;

-- One row per labeled cluster node of a run: where its label came from.
CREATE TABLE IF NOT EXISTS duckcluster.labels (
    run_id              VARCHAR NOT NULL,
    name                VARCHAR NOT NULL,
    node_id             VARCHAR NOT NULL,
    label               VARCHAR,
    summary             VARCHAR,
    keywords            VARCHAR[],
    attributes          JSON,              -- response_shape keys beyond label/summary/keywords
    source              VARCHAR NOT NULL,  -- offline | llm | cache | carried
    provider            VARCHAR,
    model               VARCHAR,
    representative_ids  VARCHAR[],         -- closest to the centroid first
    merged_into         VARCHAR,           -- label dedup: the node whose label this one took
    labeled_at          TIMESTAMP NOT NULL,
    carried_from_run_id VARCHAR            -- source 'carried': the run whose labeling made it
);
-- files written before labels were carried forward
ALTER TABLE duckcluster.labels ADD COLUMN IF NOT EXISTS carried_from_run_id VARCHAR;

-- LLM answers by request hash (provider, model, endpoint, prompt, shape); expires after the TTL.
CREATE TABLE IF NOT EXISTS duckcluster.label_cache (
    cache_key   VARCHAR NOT NULL,
    provider    VARCHAR,
    model       VARCHAR,
    response    JSON NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL
);

-- LLM calls that failed after their retries; the node kept its offline label.
CREATE TABLE IF NOT EXISTS duckcluster.label_failures (
    run_id     VARCHAR NOT NULL,
    name       VARCHAR NOT NULL,
    node_id    VARCHAR,            -- NULL: a failure of the whole step (label dedup)
    provider   VARCHAR,
    model      VARCHAR,
    kind       VARCHAR NOT NULL,   -- timeout | rate_limit | http | connection | auth | malformed_json | off_shape
    error      VARCHAR NOT NULL,
    attempts   INTEGER,
    failed_at  TIMESTAMP NOT NULL
);

-- One row per cluster_enrich call that committed.
CREATE TABLE IF NOT EXISTS duckcluster.enrichments (
    name            VARCHAR NOT NULL,
    run_id          VARCHAR NOT NULL,
    target          VARCHAR NOT NULL,
    id_column       VARCHAR NOT NULL,
    fields          VARCHAR[] NOT NULL,
    columns         VARCHAR[] NOT NULL,   -- target columns written (prefix applied)
    created_target  BOOLEAN NOT NULL,
    n_rows          BIGINT,               -- target rows after the call
    n_matched       BIGINT,               -- target rows that are members of the run
    n_inserted      BIGINT,               -- source rows added to an existing target
    enriched_at     TIMESTAMP NOT NULL
);

-- Taxonomies: reference nodes promoted from clusters; assign_taxonomy walks them.
CREATE TABLE IF NOT EXISTS duckcluster.taxonomies (
    taxonomy     VARCHAR NOT NULL,
    threshold    DOUBLE NOT NULL,      -- default minimum cosine similarity of assign_taxonomy
    dim          INTEGER NOT NULL,
    n_nodes      INTEGER NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS duckcluster.taxonomy_nodes (
    taxonomy        VARCHAR NOT NULL,
    node_id         VARCHAR NOT NULL,
    parent_node_id  VARCHAR,
    level           INTEGER NOT NULL,
    label           VARCHAR,
    summary         VARCHAR,
    keywords        VARCHAR[],
    centroid        FLOAT[] NOT NULL,
    size            BIGINT,
    source_name     VARCHAR,
    source_run_id   VARCHAR,
    source_node_id  VARCHAR,
    promoted_at     TIMESTAMP NOT NULL
);
