-- duckcluster read side: pure SQL macros over the `duckcluster` catalog schema.
--
-- Load in any DuckDB client (no Python needed), e.g. the stock CLI:
--     duckdb analytics.duckdb -c ".read sql/duckcluster.sql" -c "SELECT * FROM cluster_quality('topics')"
-- duckcluster.install(con) runs this same file, then replaces assign_cluster with
-- a vectorized Python UDF under the same name and with the same results.
-- The macros are TEMP (per connection), so read-only databases work.
--
-- Macro parameters must not share a name with a catalog column, so the table
-- column run_id is referenced as COLUMNS('^run_id$') where a run_id parameter exists.

-- The latest successful run of a definition (any mode), or an error saying what to do.
CREATE OR REPLACE TEMP MACRO _dc_latest_run(cluster_name) AS (
    SELECT CASE
        WHEN (SELECT count(*) FROM duckcluster.definitions d WHERE d.name = cluster_name) = 0
            THEN error('No cluster definition named ''' || cluster_name || '''. List them with SELECT * FROM cluster_list().')
        WHEN count(*) = 0
            THEN error('Cluster ''' || cluster_name || ''' has no successful run yet. Run SELECT cluster_execute(''' || cluster_name || ''') first.')
        ELSE max_by(r.run_id, r.run_seq) END
    FROM duckcluster.runs r WHERE r.name = cluster_name AND r.status = 'succeeded'
);

-- The latest successful *full* run: the centroids assign_cluster uses.
CREATE OR REPLACE TEMP MACRO _dc_latest_full_run(cluster_name) AS (
    SELECT CASE
        WHEN (SELECT count(*) FROM duckcluster.definitions d WHERE d.name = cluster_name) = 0
            THEN error('No cluster definition named ''' || cluster_name || '''. List them with SELECT * FROM cluster_list().')
        WHEN count(*) = 0
            THEN error('Cluster ''' || cluster_name || ''' has no successful full run yet. Run SELECT cluster_execute(''' || cluster_name || ''') first.')
        ELSE max_by(r.run_id, r.run_seq) END
    FROM duckcluster.runs r WHERE r.name = cluster_name AND r.status = 'succeeded' AND r.mode = 'full'
);

CREATE OR REPLACE TEMP MACRO _dc_check_run(cluster_name, rid) AS (
    SELECT CASE WHEN count(*) = 0
        THEN error('No successful run ''' || rid || ''' of cluster ''' || cluster_name || '''. List runs with SELECT * FROM cluster_runs(''' || cluster_name || ''').')
        ELSE rid END
    FROM duckcluster.runs r WHERE r.run_id = rid AND r.name = cluster_name AND r.status = 'succeeded'
);

CREATE OR REPLACE TEMP MACRO _dc_run(cluster_name, rid) AS
    CASE WHEN rid IS NULL THEN _dc_latest_run(cluster_name) ELSE _dc_check_run(cluster_name, rid) END;

-- Execution history, oldest first.
CREATE OR REPLACE TEMP MACRO cluster_runs(cluster_name) AS TABLE
    SELECT r.run_id, r.name, r.mode, r.status, r.error, r.started_at, r.finished_at, r.duration_s,
           r.n_rows, r.n_null, r.n_members, r.n_fit, r.n_clusters, r.dim, r.seed, r.input_hash,
           r.base_run_id, r.assignment_threshold, r.silhouette_score, r.mean_cosine_to_centroid,
           r.noise_ratio, r.cluster_size_entropy, r.davies_bouldin, r.calinski_harabasz,
           r.should_recluster, r.artifacts_path, r.timings, r.versions, r.spec
    FROM duckcluster.runs r
    WHERE r.name = cluster_name
    ORDER BY r.run_seq;

-- One row per member: id, cluster_id (-1 = noise), similarity, x, y[, z], hierarchy fields.
CREATE OR REPLACE TEMP MACRO cluster_members(cluster_name, run_id := NULL) AS TABLE
    SELECT m.run_id, m.id, m.cluster_id, m.cosine_similarity_to_centroid, m.x, m.y, m.z,
           m.node_id, m.parent_cluster_id, m.hierarchy_level
    FROM duckcluster.members m
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    ORDER BY m.cluster_id, m.id;

-- One row per cluster node: top level (hierarchy_level 0) and sub-clusters.
CREATE OR REPLACE TEMP MACRO cluster_centroids(cluster_name, run_id := NULL) AS TABLE
    SELECT c.run_id, c.cluster_id, c.node_id, c.centroid, c.size, c.mean_cosine_similarity,
           c.min_cosine_similarity, c.label, c.summary, c.keywords, c.parent_cluster_id,
           c.child_cluster_ids, c.hierarchy_level
    FROM duckcluster.centroids c
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    ORDER BY c.hierarchy_level, c.cluster_id, c.node_id;

-- Quality metrics of a run and the should_recluster recommendation with its reasons.
CREATE OR REPLACE TEMP MACRO cluster_quality(cluster_name, run_id := NULL) AS TABLE
    SELECT r.run_id, r.silhouette_score, r.mean_cosine_to_centroid, r.noise_ratio,
           r.cluster_size_entropy, r.davies_bouldin, r.calinski_harabasz, r.n_clusters,
           r.should_recluster,
           CAST(json_extract(r.quality, '$.reasons') AS VARCHAR[]) AS reasons,
           CAST(json_extract(r.quality, '$.silhouette_sample_size') AS BIGINT) AS silhouette_sample_size
    FROM duckcluster.runs r
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id);

-- Definitions and their latest run (by run_seq, whatever its status). The latest run's
-- columns come from that one row: max_by would skip its NULLs (a running run has no
-- finished_at, a failed one no n_clusters) and report an older run's values.
CREATE OR REPLACE TEMP MACRO cluster_list() AS TABLE
    WITH latest AS (
        SELECT r.name, count(*) OVER (PARTITION BY r.name) AS n_runs, r.run_id, r.status,
               r.finished_at, r.n_clusters
        FROM duckcluster.runs r
        QUALIFY row_number() OVER (PARTITION BY r.name ORDER BY r.run_seq DESC) = 1)
    SELECT d.name, json_extract_string(d.spec, '$.algorithm') AS algorithm,
           json_extract_string(d.spec, '$.source') AS source, d.created_at, d.updated_at,
           coalesce(l.n_runs, 0) AS n_runs,
           l.run_id AS latest_run_id,
           l.status AS latest_status,
           l.finished_at AS latest_finished_at,
           l.n_clusters AS latest_n_clusters
    FROM duckcluster.definitions d LEFT JOIN latest l ON l.name = d.name
    ORDER BY d.name;

-- An embedding (FLOAT[N], DOUBLE[], ...) as FLOAT[]. The CASE matters: casting a NULL
-- FLOAT[N] leaves NULL elements in the list's child vector, and list_cosine_similarity
-- then fails for the whole vector ("can not contain NULL values", DuckDB 1.5 and 2.0).
CREATE OR REPLACE TEMP MACRO _dc_as_list(embedding) AS
    CASE WHEN embedding IS NULL THEN NULL ELSE CAST(embedding AS FLOAT[]) END;

-- Cosine similarity of an embedding (FLOAT[]) to a stored centroid, as the Python version
-- computes it: a zero vector has similarity NaN, a dimension mismatch is an error.
CREATE OR REPLACE TEMP MACRO _dc_cosine_to_centroid(e, centroid, cluster_name, rid) AS
    CASE WHEN len(e) <> len(centroid)
             THEN error('assign_cluster: the embedding has ' || len(e) || ' dimensions but cluster '''
                        || cluster_name || ''' (run ' || rid || ') has ' || len(centroid)
                        || '. Use the same embedding model as the definition''s source.')
         WHEN list_dot_product(e, e) = 0 THEN 'NaN'::FLOAT
         ELSE list_cosine_similarity(e, centroid)::FLOAT END;

-- Nearest centroid of the latest successful full run by cosine; -1 below the threshold.
-- Same results as the Python version: ties go to the lowest cluster_id, a NULL embedding
-- or name gives NULL, a NULL threshold means no threshold, a zero vector is -1 with
-- similarity NaN whatever the threshold (DuckDB orders NaN above every number, hence
-- isnan), and a run without clusters gives -1 with similarity NULL.
CREATE OR REPLACE TEMP MACRO assign_cluster_detail(embedding, cluster_name, threshold := 0.5) AS
    CASE WHEN embedding IS NULL OR cluster_name IS NULL THEN NULL ELSE (
        SELECT CASE WHEN NOT isnan(max(s.sim))
                         AND (threshold IS NULL OR max(s.sim) >= CAST(threshold AS FLOAT))
                    THEN {'cluster_id': arg_max(s.cluster_id, {'sim': s.sim, 'neg_id': -s.cluster_id})::INTEGER,
                          'similarity': max(s.sim)}
                    ELSE {'cluster_id': -1::INTEGER, 'similarity': max(s.sim)} END
        FROM (SELECT c.cluster_id,
                     _dc_cosine_to_centroid(_dc_as_list(embedding), c.centroid, cluster_name, c.run_id) AS sim
              FROM duckcluster.centroids c
              WHERE c.run_id = _dc_latest_full_run(cluster_name) AND c.hierarchy_level = 0) s
    ) END;

CREATE OR REPLACE TEMP MACRO assign_cluster(embedding, cluster_name, threshold := 0.5) AS
    assign_cluster_detail(embedding, cluster_name, threshold := threshold).cluster_id;
