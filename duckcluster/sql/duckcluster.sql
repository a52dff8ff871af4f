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
--
-- A definition's runs are those of its incarnation: their run_seq is above the one it was
-- created at (duckcluster.meta 'incarnation:<name>'; cluster_create, replace := true keeps
-- it), so a wall clock set back meanwhile hides nothing; without that row (a catalog
-- written by hand or by an older duckcluster), started at or after its created_at. Runs
-- kept from a deleted definition of the same name are not served for a re-created one.

-- The latest successful run of a definition (any mode), or an error saying what to do.
CREATE OR REPLACE TEMP MACRO _dc_latest_run(cluster_name) AS (
    SELECT CASE
        WHEN (SELECT count(*) FROM duckcluster.definitions d WHERE d.name = cluster_name) = 0
            THEN error('No cluster definition named ''' || cluster_name || '''. List them with SELECT * FROM cluster_list().')
        WHEN count(*) = 0
            THEN error('Cluster ''' || cluster_name || ''' has no successful run yet. Run SELECT cluster_execute(''' || cluster_name || ''') first.')
        ELSE max_by(r.run_id, r.run_seq) END
    FROM duckcluster.runs r WHERE r.name = cluster_name AND r.status = 'succeeded'
      AND (SELECT coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)
           FROM duckcluster.definitions d WHERE d.name = cluster_name)
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
      AND (SELECT coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)
           FROM duckcluster.definitions d WHERE d.name = cluster_name)
);

-- The name of an existing definition, or an error saying what to do.
CREATE OR REPLACE TEMP MACRO _dc_definition(cluster_name) AS (
    SELECT CASE WHEN count(*) = 0
        THEN error('No cluster definition named ''' || cluster_name || '''. List them with SELECT * FROM cluster_list().')
        ELSE cluster_name END
    FROM duckcluster.definitions d WHERE d.name = cluster_name
);

-- true when a definition of that name exists, when rows kept from a deleted one carry the
-- name (n_kept > 0) or when no name was given; else the error of the other read functions.
-- Listings use it so that a misspelled name is an error, not an empty result.
CREATE OR REPLACE TEMP MACRO _dc_known(cluster_name, n_kept) AS (
    SELECT CASE WHEN cluster_name IS NULL OR count(*) > 0 OR n_kept > 0 THEN true
        ELSE error('No cluster definition named ''' || cluster_name || '''. List them with SELECT * FROM cluster_list().')
        END
    FROM duckcluster.definitions d WHERE d.name = cluster_name
);

CREATE OR REPLACE TEMP MACRO _dc_check_run(cluster_name, rid) AS (
    SELECT CASE WHEN count(*) = 0
        THEN error('No successful run ''' || rid || ''' of cluster ''' || cluster_name || '''. List runs with SELECT * FROM cluster_runs(''' || cluster_name || ''').')
        ELSE rid END
    FROM duckcluster.runs r WHERE r.run_id = rid AND r.name = cluster_name AND r.status = 'succeeded'
      AND (SELECT coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)
           FROM duckcluster.definitions d WHERE d.name = cluster_name)
);

CREATE OR REPLACE TEMP MACRO _dc_run(cluster_name, rid) AS
    CASE WHEN rid IS NULL THEN _dc_latest_run(cluster_name) ELSE _dc_check_run(cluster_name, rid) END;

-- Execution history, oldest first: the runs of the current definition of that name, or,
-- when there is none, the runs kept from deleted ones.
CREATE OR REPLACE TEMP MACRO cluster_runs(cluster_name) AS TABLE
    SELECT r.run_id, r.name, r.mode, r.status, r.error, r.started_at, r.finished_at, r.duration_s,
           r.n_rows, r.n_null, r.n_members, r.n_fit, r.n_clusters, r.dim, r.seed, r.input_hash,
           r.base_run_id, r.assignment_threshold, r.silhouette_score, r.mean_cosine_to_centroid,
           r.noise_ratio, r.cluster_size_entropy, r.davies_bouldin, r.calinski_harabasz,
           r.should_recluster, r.artifacts_path, r.timings, r.versions, r.spec,
           r.progress, r.submitted_at, r.choices
    FROM duckcluster.runs r
    WHERE r.name = cluster_name
      AND _dc_known(cluster_name, (SELECT count(*) FROM duckcluster.runs k WHERE k.name = cluster_name))
      AND coalesce((SELECT coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)
                FROM duckcluster.definitions d WHERE d.name = cluster_name), true)
    ORDER BY r.run_seq;

-- The view holding one definition's members with ids in the source's own type (duckcluster
-- keeps one per definition, next to duckcluster.members, which stores ids as text). A table
-- macro's query_table() argument must fold to a constant when the query is bound, so the
-- definitions and their views are read once, when this file is loaded, into the variable
-- _dc_members_views (getvariable folds): a known name gives its view (duckcluster.members,
-- ids as text, for a definition written before typed ids), any other name the same error as
-- the other read functions. Pure SQL over the catalog tables and duckdb_views(), so it works
-- on a file opened read-only whatever duckcluster version wrote it. (A read-only session
-- sees no new definitions, and nothing else writes the file while the stock CLI has it open.
-- Python connections, which create definitions, and the persistent macros use instead
-- duckcluster._dc_members_view_of, a CASE over the names that every write of the
-- definitions rewrites: catalog/read_side.py.)
SET VARIABLE _dc_members_views = (
    SELECT {'names': coalesce(list(d.name ORDER BY d.name), []::VARCHAR[]),
            'views': coalesce(list(coalesce('duckcluster."' || v.view_name || '"', 'duckcluster.members')
                                   ORDER BY d.name), []::VARCHAR[])}
    FROM duckcluster.definitions d
    LEFT JOIN (SELECT view_name FROM duckdb_views()
               WHERE database_name = current_database() AND schema_name = 'duckcluster') v
        ON lower(v.view_name) = lower('members of ''' || replace(regexp_replace(d.name, '([A-Z^])', '^\1', 'g'), '"', '^_') || ''''));

CREATE OR REPLACE TEMP MACRO _dc_members_view(cluster_name) AS
    CASE WHEN cluster_name IS NULL
             THEN error('cluster_members needs a definition name, not NULL. List them with SELECT * FROM cluster_list().')
         WHEN list_contains(getvariable('_dc_members_views').names, cluster_name)
             THEN getvariable('_dc_members_views').views[list_position(getvariable('_dc_members_views').names, cluster_name)]
         ELSE error('No cluster definition named ''' || cluster_name || '''. List them with SELECT * FROM cluster_list().') END;

-- One row per member: id (in the source's type), cluster_id (-1 = noise), similarity,
-- x, y[, z], hierarchy fields, noise_assigned (left as noise by the algorithm, then put in
-- its nearest cluster by noise := 'assign'), partition (partition_by's value as text; NULL
-- without partition_by). The name must be a constant (the view is picked when the query is
-- bound).
CREATE OR REPLACE TEMP MACRO cluster_members(cluster_name, run_id := NULL) AS TABLE
    SELECT m.run_id, m.id, m.cluster_id, m.cosine_similarity_to_centroid, m.x, m.y, m.z,
           m.node_id, m.parent_cluster_id, m.hierarchy_level, m.noise_assigned, m.partition
    -- (the empty UNION BY NAME gives NULL noise_assigned and partition in files written
    -- before those columns existed)
    FROM (FROM query_table(_dc_members_view(cluster_name))
          UNION ALL BY NAME SELECT NULL::BOOLEAN AS noise_assigned, NULL::VARCHAR AS partition
          WHERE false) m
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    ORDER BY m.cluster_id, m.id;

-- One row per cluster node: top level (hierarchy_level 0) and sub-clusters.
-- label_source: offline | llm | cache | carried (kept from an earlier run, which
-- label_note names); label_note also says why a label is NULL. partition: the cluster's
-- partition (NULL without partition_by); cluster ids are unique across its partitions.
CREATE OR REPLACE TEMP MACRO cluster_centroids(cluster_name, run_id := NULL) AS TABLE
    SELECT c.run_id, c.cluster_id, c.node_id, c.centroid, c.size, c.mean_cosine_similarity,
           c.min_cosine_similarity, c.label, c.summary, c.keywords, c.parent_cluster_id,
           c.child_cluster_ids, c.hierarchy_level, l.source AS label_source,
           CASE WHEN l.source = 'carried' THEN 'carried from ' || l.carried_from_run_id
                WHEN c.label IS NULL THEN coalesce(
                    (SELECT r.error FROM duckcluster.runs r
                     WHERE r.run_id = c.run_id AND r.error LIKE 'run succeeded; %'),
                    'not labeled: label it with SELECT cluster_label(''' || cluster_name || ''')')
           END AS label_note, c.partition
    -- (files written before the partition column: NULL, as in cluster_members)
    FROM (FROM duckcluster.centroids
          UNION ALL BY NAME SELECT NULL::VARCHAR AS partition WHERE false) c
    -- (files written before labels were carried forward: carried_from_run_id NULL)
    LEFT JOIN (SELECT l.run_id AS l_run, l.node_id AS l_node, l.source, l.carried_from_run_id
               FROM (FROM duckcluster.labels UNION ALL BY NAME
                     SELECT NULL::VARCHAR AS carried_from_run_id WHERE false) l) l
        ON l.l_run = c.run_id AND l.l_node = c.node_id
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    ORDER BY c.hierarchy_level, c.cluster_id, c.node_id;

-- What happened to each cluster between consecutive successful full runs (oldest pair
-- first): continued | born | died | split | merged, with the centroid similarity, member
-- overlap and shares that decided it (core/lineage.py; thresholds: the definition's
-- lineage := {...}). run_id := a full run gives only its pairing with the run before it.
-- partition: with partition_by, clusters are matched within their partition only.
CREATE OR REPLACE TEMP MACRO cluster_lineage(cluster_name, run_id := NULL) AS TABLE
    WITH seq AS (
        SELECT r.run_id AS rid, r.run_seq AS seq FROM duckcluster.runs r
        WHERE r.name = _dc_definition(cluster_name)),
    chosen AS (
        SELECT CASE WHEN run_id IS NULL THEN NULL ELSE _dc_check_run(cluster_name, run_id) END AS rid)
    SELECT l.previous_run_id, l.run_id, l.event, l.previous_cluster_id, l.cluster_id, l.matched,
           l.centroid_similarity, l.member_overlap, l.previous_share, l.share,
           l.shared_members, l.previous_size, l.size, l.partition
    FROM (FROM duckcluster.lineage
          UNION ALL BY NAME SELECT NULL::VARCHAR AS partition WHERE false) l
        JOIN seq ON seq.rid = l.run_id, chosen
    WHERE l.name = cluster_name AND (chosen.rid IS NULL OR COLUMNS('^run_id$') = chosen.rid)
    ORDER BY seq.seq,
             CASE l.event WHEN 'continued' THEN 0 WHEN 'born' THEN 1 WHEN 'died' THEN 2
                          WHEN 'split' THEN 3 ELSE 4 END,
             l.previous_cluster_id NULLS LAST, l.cluster_id NULLS LAST;

-- Quality metrics of a run and the should_recluster recommendation with its reasons.
-- scope 'run': the whole run (one row); with partition_by, also one row per partition
-- (scope 'partition', partition its value, n_members its rows) after it.
CREATE OR REPLACE TEMP MACRO cluster_quality(cluster_name, run_id := NULL) AS TABLE
    SELECT * EXCLUDE (__dc_order) FROM (
    SELECT r.run_id, r.silhouette_score, r.mean_cosine_to_centroid, r.noise_ratio,
           r.cluster_size_entropy, r.davies_bouldin, r.calinski_harabasz, r.n_clusters,
           r.should_recluster,
           CAST(json_extract(r.quality, '$.reasons') AS VARCHAR[]) AS reasons,
           CAST(json_extract(r.quality, '$.silhouette_sample_size') AS BIGINT) AS silhouette_sample_size,
           'run' AS scope, NULL::VARCHAR AS partition, r.n_members, 0 AS __dc_order
    FROM duckcluster.runs r
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    UNION ALL
    SELECT r.run_id, CAST(json_extract(u.p, '$.silhouette_score') AS DOUBLE),
           CAST(json_extract(u.p, '$.mean_cosine_to_centroid') AS DOUBLE),
           CAST(json_extract(u.p, '$.noise_ratio') AS DOUBLE),
           CAST(json_extract(u.p, '$.cluster_size_entropy') AS DOUBLE),
           CAST(json_extract(u.p, '$.davies_bouldin') AS DOUBLE),
           CAST(json_extract(u.p, '$.calinski_harabasz') AS DOUBLE),
           CAST(json_extract(u.p, '$.n_clusters') AS INTEGER),
           CAST(json_extract(u.p, '$.should_recluster') AS BOOLEAN),
           CAST(coalesce(json_extract(u.p, '$.reasons'), '[]') AS VARCHAR[]),
           CAST(json_extract(u.p, '$.silhouette_sample_size') AS BIGINT),
           'partition', json_extract_string(u.p, '$.partition'),
           CAST(json_extract(u.p, '$.n_members') AS BIGINT), 1
    FROM duckcluster.runs r, unnest(CAST(json_extract(r.quality, '$.partitions') AS JSON[])) AS u(p)
    WHERE COLUMNS('^run_id$') = _dc_run(cluster_name, run_id))
    ORDER BY __dc_order, partition NULLS LAST;

-- Definitions and their latest run (by run_seq, whatever its status). The latest run's
-- columns come from that one row: max_by would skip its NULLs (a running run has no
-- finished_at, a failed one no n_clusters) and report an older run's values.
CREATE OR REPLACE TEMP MACRO cluster_list() AS TABLE
    WITH latest AS (
        SELECT r.name, count(*) OVER (PARTITION BY r.name) AS n_runs, r.run_id, r.status,
               r.finished_at, r.n_clusters
        FROM duckcluster.runs r JOIN duckcluster.definitions d0
            ON d0.name = r.name AND coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d0.name), r.started_at >= d0.created_at)
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
-- computes it; a dimension mismatch is an error.
CREATE OR REPLACE TEMP MACRO _dc_cosine_to_centroid(e, centroid, cluster_name, rid) AS
    CASE WHEN len(e) <> len(centroid)
             THEN error('assign_cluster: the embedding has ' || len(e) || ' dimensions but cluster '''
                        || cluster_name || ''' (run ' || rid || ') has ' || len(centroid)
                        || '. Use the same embedding model as the definition''s source.')
         ELSE list_cosine_similarity(e, centroid)::FLOAT END;

-- The first values of an embedding for an error message, formatted as Python's {:g}.
CREATE OR REPLACE TEMP MACRO _dc_preview(e) AS
    array_to_string(list_transform(e[1:4], lambda x: printf('%g', x)), ', ')
    || CASE WHEN len(e) > 4 THEN ', ...' ELSE '' END || '], ' || len(e) || ' values)';

-- true, or the error the Python version raises for the same embedding (FLOAT[], not NULL):
-- NaN/Inf, or a zero vector (no direction, so no nearest centroid). The squared norm is
-- taken in DOUBLE, so tiny or huge but finite values are fine.
CREATE OR REPLACE TEMP MACRO _dc_placeable(e) AS
    CASE WHEN isfinite(list_dot_product(CAST(e AS DOUBLE[]), CAST(e AS DOUBLE[])))
              AND list_dot_product(CAST(e AS DOUBLE[]), CAST(e AS DOUBLE[])) > 0 THEN true
         WHEN NOT isfinite(list_dot_product(CAST(e AS DOUBLE[]), CAST(e AS DOUBLE[])))
             THEN error('assign_cluster: an embedding has NaN or Inf ([' || _dc_preview(e)
                        || ', so it has no nearest centroid. Filter such rows (WHERE NOT list_any('
                        || 'list_transform(embedding::FLOAT[], lambda x: isnan(x) OR isinf(x)))) or '
                        || 'fix the embedding pipeline.')
         ELSE error('assign_cluster: an embedding is a zero vector ([' || _dc_preview(e)
                    || ', which has no direction, so no nearest centroid by cosine. Filter such rows '
                    || '(WHERE list_dot_product(embedding::FLOAT[], embedding::FLOAT[]) > 0) or fix '
                    || 'the embedding pipeline (a zero vector often means an empty input text).') END;

-- true, or the Python version's error: a threshold is a cosine similarity in [-1, 1]
-- (NaN fails both comparisons), or NULL for the run's own threshold.
CREATE OR REPLACE TEMP MACRO _dc_threshold_ok(threshold) AS
    CASE WHEN threshold IS NULL OR (CAST(threshold AS FLOAT) >= -1 AND CAST(threshold AS FLOAT) <= 1)
             THEN true
         ELSE error('assign_cluster: threshold must be a cosine similarity in the range [-1, 1] '
                    || '(-1 keeps every assignment), or NULL for the run''s own threshold. Got '
                    || printf('%g', CAST(threshold AS FLOAT)) || ' instead.') END;

-- true, or the Python version's error: partition := is given exactly when the definition
-- has partition_by (given: partition is not the default STRUCT).
CREATE OR REPLACE TEMP MACRO _dc_partition_ok(cluster_name, given) AS
    CASE WHEN (SELECT json_extract_string(d.spec, '$.partition_by') FROM duckcluster.definitions d
               WHERE d.name = cluster_name) IS NULL
             THEN CASE WHEN given THEN error('assign_cluster: cluster ''' || cluster_name
                      || ''' has no partition_by, so it takes no partition; drop partition := from the call.')
                  ELSE true END
         WHEN NOT given THEN error('assign_cluster: cluster ''' || cluster_name || ''' is partitioned by '''
             || (SELECT json_extract_string(d.spec, '$.partition_by') FROM duckcluster.definitions d
                 WHERE d.name = cluster_name)
             || '''; pass each row''s partition, e.g. assign_cluster(embedding, ''' || cluster_name
             || ''', partition := ' || (SELECT json_extract_string(d.spec, '$.partition_by')
                                        FROM duckcluster.definitions d WHERE d.name = cluster_name) || ').')
         ELSE true END;

-- The assignment threshold a full run stored for itself (its assignment_threshold: the
-- noise policy's threshold, else the 10 % quantile of its members' cosine similarity to
-- their own centroid), 0.5 for runs stored before it was.
CREATE OR REPLACE TEMP MACRO _dc_own_threshold(rid) AS COALESCE((
    SELECT CAST(r.assignment_threshold AS FLOAT) FROM duckcluster.runs r WHERE r.run_id = rid),
    CAST(0.5 AS FLOAT));

-- Nearest centroid of the latest successful full run by cosine; -1 below the threshold.
-- partition := the row's partition, for a definition with partition_by: the nearest cluster
-- of that partition (NULL is a partition too); a partition the run does not have gives -1.
-- Same results and errors as the Python version: ties go to the lowest cluster_id, a NULL
-- embedding or name gives NULL, no threshold (or NULL) means the run's own threshold
-- (_dc_own_threshold; -1 keeps every row), a threshold outside [-1, 1], a NaN/Inf embedding
-- and a zero vector are errors that say so, and a run without clusters gives -1 with
-- similarity NULL.
CREATE OR REPLACE TEMP MACRO assign_cluster_detail(embedding, cluster_name, threshold := NULL,
    partition := {'unpartitioned': true}) AS
    CASE WHEN NOT _dc_threshold_ok(threshold) THEN NULL  -- (never: it is true or an error)
         WHEN embedding IS NULL OR cluster_name IS NULL THEN NULL
         WHEN NOT _dc_partition_ok(cluster_name, typeof(partition) <> 'STRUCT(unpartitioned BOOLEAN)')
             THEN NULL  -- (never: it is true or an error)
         WHEN _dc_placeable(_dc_as_list(embedding)) THEN (
        SELECT CASE WHEN NOT isnan(max(s.sim))
                         AND max(s.sim) >= coalesce(CAST(threshold AS FLOAT),
                                                    _dc_own_threshold(_dc_latest_full_run(cluster_name)))
                    THEN {'cluster_id': arg_max(s.cluster_id, {'sim': s.sim, 'neg_id': -s.cluster_id})::INTEGER,
                          'similarity': max(s.sim)}
                    ELSE {'cluster_id': -1::INTEGER, 'similarity': max(s.sim)} END
        FROM (SELECT c.cluster_id,
                     _dc_cosine_to_centroid(_dc_as_list(embedding), c.centroid, cluster_name, c.run_id) AS sim
              FROM (FROM duckcluster.centroids  -- (partition NULL in files from before it)
                    UNION ALL BY NAME SELECT NULL::VARCHAR AS partition WHERE false) c
              WHERE c.run_id = _dc_latest_full_run(cluster_name) AND c.hierarchy_level = 0
                    AND (typeof(partition) = 'STRUCT(unpartitioned BOOLEAN)'
                         OR c.partition IS NOT DISTINCT FROM CAST(partition AS VARCHAR))) s
    ) END;

CREATE OR REPLACE TEMP MACRO assign_cluster(embedding, cluster_name, threshold := NULL,
    partition := {'unpartitioned': true}) AS
    assign_cluster_detail(embedding, cluster_name, threshold := threshold,
                          partition := partition).cluster_id;

-- The successful run just before run `rid` of a definition: cluster_drift's default baseline.
CREATE OR REPLACE TEMP MACRO _dc_previous_run(cluster_name, rid) AS (
    SELECT CASE WHEN count(*) = 0
        THEN error('Cluster ''' || cluster_name || ''' has no successful run before ''' || rid || '''; cluster_drift compares two runs. Execute it again later, or pass baseline_run := ''run_...'' (see SELECT * FROM cluster_runs(''' || cluster_name || ''')).')
        ELSE max_by(r.run_id, r.run_seq) END
    FROM duckcluster.runs r
    WHERE r.name = cluster_name AND r.status = 'succeeded'
      AND (SELECT coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)
           FROM duckcluster.definitions d WHERE d.name = cluster_name)
      AND r.run_seq < (SELECT r2.run_seq FROM duckcluster.runs r2 WHERE r2.run_id = rid)
);

-- Cluster-share drift between two runs of one definition (default: the latest run against
-- the one before it). Clusters are aligned by what is known about their identity
-- (matched_by, the same on every row):
--   'base run'   both runs use the clusters of one full run (an assign run and its base,
--                or two assign runs of one base): each cluster is aligned with itself;
--   'lineage'    the current run's full run was matched to the baseline's when it ran
--                (cluster_lineage): continued clusters are aligned, a split old cluster is
--                divided among its parts and the parts of a merge are gathered, in
--                proportion to where their members went (status split / merged), born
--                clusters are new and died ones vanished;
--   'centroids'  otherwise (runs from before lineage, runs further apart): a baseline
--                and a current cluster match when each is the other's most similar by
--                centroid cosine (ties: lowest id) and the similarity is >= match_threshold.
-- One row per aligned pair, per unaligned baseline cluster (vanished), per unaligned current
-- cluster (new) and for noise (-1 on both sides, when either run has noise). Shares are of
-- all members of a run, noise included; a split or merged row's sizes are the part of the
-- cluster that row stands for. status: new (no baseline rows) | vanished (no current rows) |
-- split | merged | grown / shrunk (two-proportion |z| >= significance_z and the share changed
-- by at least min_change of the baseline share) | stable. Totals on every row: cluster counts
-- and their change, js_divergence (base 2, 0..1) over the aligned shares, unmatched_share
-- (current members in clusters that match no baseline cluster) and drift_detected =
-- js_divergence > js_threshold OR |cluster_count_change| > max_count_change. For a p-value
-- see cluster_drift_test (Python) or embedding_drift(..., method := 'cluster').
CREATE OR REPLACE TEMP MACRO cluster_drift(cluster_name, baseline_run := NULL, current_run := NULL,
    match_threshold := 0.8, min_change := 0.2, significance_z := 1.96, js_threshold := 0.05,
    max_count_change := 2) AS TABLE
    WITH ids AS MATERIALIZED (
        SELECT _dc_run(cluster_name, current_run) AS cur_id),
    chosen AS MATERIALIZED (
        SELECT CASE WHEN baseline_run IS NULL THEN _dc_previous_run(cluster_name, ids.cur_id)
                    ELSE _dc_check_run(cluster_name, baseline_run) END AS base_id, ids.cur_id
        FROM ids),
    pair AS MATERIALIZED (
        SELECT CASE WHEN base_id = cur_id
                    THEN error('cluster_drift compares two different runs; baseline and current are both ''' || cur_id || '''.')
                    ELSE base_id END AS base_id, cur_id
        FROM chosen),
    -- the full run whose clusters each side uses (an assign run: its base run)
    fulls AS MATERIALIZED (
        SELECT (SELECT CASE WHEN r.mode = 'assign' THEN r.base_run_id ELSE r.run_id END
                FROM duckcluster.runs r WHERE r.run_id = pair.base_id) AS fb,
               (SELECT CASE WHEN r.mode = 'assign' THEN r.base_run_id ELSE r.run_id END
                FROM duckcluster.runs r WHERE r.run_id = pair.cur_id) AS fc
        FROM pair),
    how AS MATERIALIZED (
        SELECT CASE WHEN fb = fc THEN 'base run'
                    WHEN EXISTS (SELECT 1 FROM duckcluster.lineage l
                                 WHERE l.run_id = fc AND l.previous_run_id = fb) THEN 'lineage'
                    ELSE 'centroids' END AS how, fb, fc
        FROM fulls),
    sizes AS MATERIALIZED (
        SELECT CASE WHEN m.run_id = pair.base_id THEN 'b' ELSE 'c' END AS side, m.cluster_id,
               count(*) AS n
        FROM duckcluster.members m, pair
        WHERE m.run_id = pair.base_id OR m.run_id = pair.cur_id
        GROUP BY ALL),
    totals AS MATERIALIZED (
        SELECT coalesce(sum(n) FILTER (WHERE side = 'b'), 0) AS nb,
               coalesce(sum(n) FILTER (WHERE side = 'c'), 0) AS nc
        FROM sizes),
    cents AS MATERIALIZED (
        SELECT CASE WHEN c.run_id = pair.base_id THEN 'b' ELSE 'c' END AS side, c.cluster_id,
               c.centroid
        FROM duckcluster.centroids c, pair
        WHERE (c.run_id = pair.base_id OR c.run_id = pair.cur_id) AND c.hierarchy_level = 0),
    sim AS MATERIALIZED (
        SELECT b.cluster_id AS bid, k.cluster_id AS cid,
               list_cosine_similarity(b.centroid, k.centroid) AS s
        FROM cents b, cents k, how WHERE b.side = 'b' AND k.side = 'c' AND how.how = 'centroids'),
    best_for_c AS (
        SELECT cid, arg_max(bid, {'s': s, 'neg_id': -bid}) AS bid, max(s) AS s FROM sim GROUP BY cid),
    best_for_b AS (
        SELECT bid, arg_max(cid, {'s': s, 'neg_id': -cid}) AS cid, max(s) AS s FROM sim GROUP BY bid),
    matched AS (
        SELECT fc.bid, fc.cid, fc.s FROM best_for_c fc JOIN best_for_b fb
            ON fb.bid = fc.bid AND fb.cid = fc.cid
        WHERE fc.s >= match_threshold),
    by_centroids AS (
        SELECT bid, cid, s FROM matched
        UNION ALL
        SELECT c.cluster_id, NULL, fb.s FROM cents c LEFT JOIN best_for_b fb ON fb.bid = c.cluster_id
        WHERE c.side = 'b' AND c.cluster_id NOT IN (SELECT bid FROM matched)
          AND (SELECT how FROM how) = 'centroids'
        UNION ALL
        SELECT NULL, c.cluster_id, fc.s FROM cents c LEFT JOIN best_for_c fc ON fc.cid = c.cluster_id
        WHERE c.side = 'c' AND c.cluster_id NOT IN (SELECT cid FROM matched)
          AND (SELECT how FROM how) = 'centroids'),
    -- lineage rows of the current full run against the baseline's; a cluster in several
    -- rows (split, merged) is divided among them by its member shares
    lin AS (
        SELECT l.previous_cluster_id AS bid, l.cluster_id AS cid, l.centroid_similarity AS s,
               l.event, l.previous_share, l.share
        FROM duckcluster.lineage l, how
        WHERE how.how = 'lineage' AND l.run_id = how.fc AND l.previous_run_id = how.fb),
    by_lineage AS (
        SELECT bid, cid, s, event,
               coalesce(previous_share / nullif(sum(previous_share) OVER (PARTITION BY bid), 0),
                        1.0 / count(*) OVER (PARTITION BY bid)) AS wb,
               coalesce(share / nullif(sum(share) OVER (PARTITION BY cid), 0),
                        1.0 / count(*) OVER (PARTITION BY cid)) AS wc
        FROM lin),
    aligned AS (
        SELECT bid, cid, s, NULL AS event, 1.0 AS wb, 1.0 AS wc FROM by_centroids
        UNION ALL
        SELECT bid, cid, s, event, CASE WHEN bid IS NULL THEN 1.0 ELSE wb END,
               CASE WHEN cid IS NULL THEN 1.0 ELSE wc END FROM by_lineage
        UNION ALL
        SELECT DISTINCT c.cluster_id, c.cluster_id, 1.0, NULL, 1.0, 1.0
        FROM cents c, how WHERE how.how = 'base run'
        UNION ALL
        SELECT DISTINCT -1, -1, NULL, NULL, 1.0, 1.0 FROM sizes WHERE cluster_id = -1),
    rows AS (
        SELECT a.bid, a.cid, a.s, a.event,
               a.wb * coalesce((SELECT n FROM sizes WHERE side = 'b' AND cluster_id = a.bid), 0) AS nb_i,
               a.wc * coalesce((SELECT n FROM sizes WHERE side = 'c' AND cluster_id = a.cid), 0) AS nc_i,
               totals.nb, totals.nc
        FROM aligned a, totals),
    scored AS (
        SELECT *, CASE WHEN nb > 0 THEN nb_i / nb ELSE 0 END AS p,
                  CASE WHEN nc > 0 THEN nc_i / nc ELSE 0 END AS q,
                  (nb_i + nc_i) / nullif(nb + nc, 0) AS pooled
        FROM rows),
    judged AS (
        SELECT *, q - p AS delta,
               CASE WHEN pooled > 0 AND pooled < 1 AND nb > 0 AND nc > 0
                    THEN (q - p) / sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nc)) END AS z
        FROM scored),
    labelled AS (
        SELECT *,
               CASE WHEN nb_i = 0 AND nc_i > 0 THEN 'new'
                    WHEN nc_i = 0 AND nb_i > 0 THEN 'vanished'
                    WHEN event IN ('split', 'merged') THEN event
                    WHEN z >= significance_z AND q >= p * (1 + min_change) THEN 'grown'
                    WHEN z <= -significance_z AND q <= p * (1 - min_change) THEN 'shrunk'
                    ELSE 'stable' END AS status,
               CASE WHEN p > 0 THEN 0.5 * p * log2(p / ((p + q) / 2)) ELSE 0 END
             + CASE WHEN q > 0 THEN 0.5 * q * log2(q / ((p + q) / 2)) ELSE 0 END AS js_term
        FROM judged),
    counts AS (
        SELECT count(DISTINCT cluster_id) FILTER (WHERE side = 'b' AND cluster_id >= 0) AS kb,
               count(DISTINCT cluster_id) FILTER (WHERE side = 'c' AND cluster_id >= 0) AS kc
        FROM sizes),
    -- sums over an ordered list: the same bits in every DuckDB version and thread count
    sums AS (
        SELECT greatest(list_sum(list(js_term ORDER BY bid NULLS LAST, cid NULLS LAST)), 0) AS js,
               list_sum(list(CASE WHEN bid IS NULL THEN q ELSE 0 END
                             ORDER BY bid NULLS LAST, cid NULLS LAST)) AS unmatched
        FROM labelled)
    SELECT pair.base_id AS baseline_run_id, pair.cur_id AS current_run_id,
           l.bid::INTEGER AS baseline_cluster_id, l.cid::INTEGER AS current_cluster_id,
           l.s::DOUBLE AS similarity, round(l.nb_i)::BIGINT AS baseline_size,
           round(l.nc_i)::BIGINT AS current_size,
           l.p::DOUBLE AS baseline_share, l.q::DOUBLE AS current_share, l.delta::DOUBLE AS delta,
           l.z::DOUBLE AS z, l.status,
           counts.kb::BIGINT AS baseline_n_clusters, counts.kc::BIGINT AS current_n_clusters,
           (counts.kc - counts.kb)::BIGINT AS cluster_count_change,
           sums.js::DOUBLE AS js_divergence, sums.unmatched::DOUBLE AS unmatched_share,
           (sums.js > js_threshold OR abs(counts.kc - counts.kb) > max_count_change) AS drift_detected,
           how.how AS matched_by
    FROM labelled l, pair, counts, sums, how
    ORDER BY l.bid NULLS LAST, l.cid NULLS LAST;

-- Labels, enrichments and taxonomies (pure SQL: the same in the stock CLI and in Python)

-- Where each label of a run came from (offline, llm, cache, or carried from the run
-- carried_from_run_id), its extra response_shape attributes, representative documents
-- and dedup merges.
CREATE OR REPLACE TEMP MACRO cluster_labels(cluster_name, run_id := NULL) AS TABLE
    SELECT l.run_id, l.node_id, l.label, l.summary, l.keywords, l.attributes, l.source,
           l.provider, l.model, l.representative_ids, l.merged_into, l.labeled_at,
           l.carried_from_run_id
    FROM duckcluster.labels l
    WHERE l.name = cluster_name AND COLUMNS('^run_id$') = _dc_run(cluster_name, run_id)
    ORDER BY l.node_id;

CREATE OR REPLACE TEMP MACRO cluster_label_failures(cluster_name) AS TABLE
    SELECT f.run_id, f.node_id, f.provider, f.model, f.kind, f.error, f.attempts, f.failed_at
    FROM duckcluster.label_failures f
    WHERE f.name = cluster_name
      AND _dc_known(cluster_name, (SELECT count(*) FROM duckcluster.label_failures k
                                   WHERE k.name = cluster_name))
    ORDER BY f.failed_at, f.node_id;

CREATE OR REPLACE TEMP MACRO cluster_enrichments(cluster_name) AS TABLE
    SELECT e.run_id, e.target, e.id_column, e.fields, e.columns, e.created_target, e.n_rows,
           e.n_matched, e.n_inserted, e.enriched_at
    FROM duckcluster.enrichments e
    WHERE e.name = cluster_name
      AND _dc_known(cluster_name, (SELECT count(*) FROM duckcluster.enrichments k
                                   WHERE k.name = cluster_name))
    ORDER BY e.enriched_at;

CREATE OR REPLACE TEMP MACRO taxonomy_list() AS TABLE
    SELECT t.taxonomy, t.n_nodes, t.dim, t.threshold, t.created_at, t.updated_at
    FROM duckcluster.taxonomies t ORDER BY t.taxonomy;

-- Each node, and where its source cluster is now: the walk follows the cluster's lineage
-- (cluster_lineage) from the run it was promoted from to the latest full run of its
-- definition. current_node_id: the cluster it continues as there (NULL when it ended);
-- lineage_note: current | continued | continued (split / merged on the way) | died / split /
-- merged in <run> | not followed (sub-clusters, runs without lineage).
CREATE OR REPLACE TEMP MACRO taxonomy_nodes(taxonomy_name) AS TABLE
    WITH RECURSIVE src AS (
        SELECT n.node_id AS t_node, n.source_name AS def,
               coalesce((SELECT CASE WHEN r.mode = 'assign' THEN r.base_run_id ELSE r.run_id END
                         FROM duckcluster.runs r WHERE r.run_id = n.source_run_id),
                        n.source_run_id) AS frun,
               TRY_CAST(regexp_extract(n.source_node_id, '^cl_(-?[0-9]+)$', 1) AS INTEGER) AS cid
        FROM duckcluster.taxonomy_nodes n WHERE n.taxonomy = taxonomy_name),
    walk(t_node, def, rid, cid, changed, steps) AS (
        SELECT t_node, def, frun, cid, false, 0 FROM src WHERE cid IS NOT NULL
        UNION ALL
        SELECT w.t_node, w.def, l.run_id, l.cluster_id, w.changed OR l.event <> 'continued',
               w.steps + 1
        FROM walk w JOIN duckcluster.lineage l
            ON l.name = w.def AND l.previous_run_id = w.rid AND l.previous_cluster_id = w.cid
        WHERE l.matched AND w.steps < 10000),
    last AS (
        SELECT t_node, arg_max(rid, steps) AS rid, arg_max(cid, steps) AS cid,
               arg_max(changed, steps) AS changed, max(steps) AS steps
        FROM walk GROUP BY t_node),
    ended AS (
        SELECT last.t_node, min(l.run_id) AS at_run,
               string_agg(DISTINCT l.event, ' / ' ORDER BY l.event) AS events
        FROM last JOIN src ON src.t_node = last.t_node JOIN duckcluster.lineage l
            ON l.name = src.def AND l.previous_run_id = last.rid AND l.previous_cluster_id = last.cid
        GROUP BY last.t_node),
    latest AS (
        SELECT r.name AS def, max_by(r.run_id, r.run_seq) AS rid FROM duckcluster.runs r
        WHERE r.status = 'succeeded' AND r.mode = 'full' GROUP BY r.name),
    followed AS (
        SELECT src.t_node, coalesce(ended.at_run, last.rid) AS current_run_id,
               CASE WHEN ended.t_node IS NULL AND last.rid = latest.rid THEN 'cl_' || last.cid END
                   AS current_node_id,
               CASE WHEN src.cid IS NULL THEN 'not followed: only top-level clusters are'
                    WHEN ended.t_node IS NOT NULL THEN ended.events || ' in ' || ended.at_run
                    WHEN last.rid IS DISTINCT FROM latest.rid
                        THEN 'not followed after ' || last.rid || ' (no lineage recorded)'
                    WHEN last.steps = 0 THEN 'current'
                    WHEN last.changed THEN 'continued (split / merged on the way)'
                    ELSE 'continued' END AS lineage_note
        FROM src LEFT JOIN last ON last.t_node = src.t_node
        LEFT JOIN ended ON ended.t_node = src.t_node
        LEFT JOIN latest ON latest.def = src.def)
    SELECT n.node_id, n.parent_node_id, n.level, n.label, n.summary, n.keywords, n.size,
           n.source_name, n.source_run_id, n.source_node_id, n.centroid, n.promoted_at,
           f.current_run_id, f.current_node_id, f.lineage_note
    FROM duckcluster.taxonomy_nodes n LEFT JOIN followed f ON f.t_node = n.node_id
    WHERE n.taxonomy = taxonomy_name
      AND (SELECT CASE WHEN count(*) > 0 THEN true
                       ELSE error('No taxonomy named ''' || taxonomy_name || '''. List them with SELECT * FROM taxonomy_list().')
                       END
           FROM duckcluster.taxonomies t WHERE t.taxonomy = taxonomy_name)
    ORDER BY n.level, n.node_id;

-- Drift monitors (pure SQL: the same in the stock CLI and in Python)

-- Every streaming drift monitor with its windows so far (one row per monitor).
CREATE OR REPLACE TEMP MACRO drift_monitor_list() AS TABLE
    SELECT m.name, m.reference_name, m.reference_run_id, m.window_size, m.reservoir_size,
           m.assignment_threshold, m.seed, m.dim, m.created_at, m.updated_at,
           count(w.window_start) AS n_windows, coalesce(sum(w.n_seen), 0) AS n_seen
    FROM duckcluster.drift_monitors m
    LEFT JOIN duckcluster.drift_windows w ON w.monitor = m.name
    GROUP BY ALL ORDER BY m.name;

-- Deprecated: the old name of drift_monitor_list() (every listing is *_list()).
CREATE OR REPLACE TEMP MACRO drift_monitors() AS TABLE SELECT * FROM drift_monitor_list();

-- Triggers and webhooks (pure SQL: the same in the stock CLI and in Python)

CREATE OR REPLACE TEMP MACRO cluster_trigger_history(cluster_name := NULL) AS TABLE
    SELECT f.fired_at, f.name, f.trigger_id, f.kind, f.reason, f.outcome, f.run_id,
           r.status AS run_status, r.duration_s, r.n_clusters,
           coalesce(f.error, r.error) AS error, f.scheduled_for, f.observed, f.firing_id
    FROM duckcluster.trigger_firings f
    LEFT JOIN duckcluster.runs r ON r.run_id = f.run_id
    WHERE (cluster_name IS NULL OR f.name = cluster_name OR f.trigger_id = cluster_name)
      AND _dc_known(cluster_name, (SELECT count(*) FROM duckcluster.triggers k
                                   WHERE k.name = cluster_name OR k.trigger_id = cluster_name)
                                + (SELECT count(*) FROM duckcluster.trigger_firings k
                                   WHERE k.name = cluster_name OR k.trigger_id = cluster_name))
    ORDER BY f.fired_at, f.firing_id;

CREATE OR REPLACE TEMP MACRO cluster_webhook_list(cluster_name := NULL) AS TABLE
    SELECT w.webhook_id, w.name, w.url, w.events,
           CASE WHEN w.secret IS NOT NULL THEN 'secret (stored, hidden)'
                ELSE 'env ' || w.secret_env END AS signing,
           w.timeout_s, w.max_attempts, w.enabled, w.created_at,
           (SELECT count(DISTINCT d.delivery_id) FROM duckcluster.webhook_deliveries d
            WHERE d.webhook_id = w.webhook_id AND d.status = 'delivered') AS n_delivered,
           (SELECT count(DISTINCT d.delivery_id) FROM duckcluster.webhook_deliveries d
            WHERE d.webhook_id = w.webhook_id AND d.status = 'failed') AS n_failed
    FROM duckcluster.webhooks w
    WHERE (cluster_name IS NULL OR w.name = cluster_name OR w.name IS NULL)
      AND _dc_known(cluster_name, (SELECT count(*) FROM duckcluster.webhooks k
                                   WHERE k.name = cluster_name))
    ORDER BY w.created_at, w.webhook_id;

CREATE OR REPLACE TEMP MACRO cluster_webhook_deliveries(cluster_name := NULL) AS TABLE
    SELECT d.attempted_at, d.webhook_id, d.name, d.event, d.subject_id, d.delivery_id,
           d.attempt, d.status, d.http_status, d.error, d.duration_s, d.payload
    FROM duckcluster.webhook_deliveries d
    WHERE (cluster_name IS NULL OR d.name = cluster_name OR d.webhook_id = cluster_name)
      AND _dc_known(cluster_name, (SELECT count(*) FROM duckcluster.webhooks k
                                   WHERE k.name = cluster_name OR k.webhook_id = cluster_name)
                                + (SELECT count(*) FROM duckcluster.webhook_deliveries k
                                   WHERE k.name = cluster_name OR k.webhook_id = cluster_name))
    ORDER BY d.attempted_at, d.delivery_id, d.attempt;
