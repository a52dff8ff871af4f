-- duckcluster read side, persistent views: what any DuckDB client (a BI tool, the stock CLI,
-- dbt) reads from the file with no set-up. Pure SQL over the catalog tables, so they are
-- always current: each picks the latest successful run (any mode, by run_seq) of every
-- definition, the run cluster_members(name) & co. show by default. One row per definition
-- (latest_runs, latest_quality) or per cluster / member of its latest run, with the
-- definition's name as a column. Created (and replaced when duckcluster changes them) by
-- duckcluster.connect / install on a writable file, next to the persistent read-side macros
-- duckcluster.cluster_members(...), duckcluster.cluster_quality(...), ...
--
-- Noise is a group like the others: latest_centroids has a row for cluster_id -1
-- (label 'noise', no centroid) whenever the run has noise (one per partition with
-- partition_by), and latest_members carries each
-- member's top-level label, so GROUP BY label or a join on cluster_id keeps every row.
-- Ids in latest_members are text (the view spans definitions whose ids differ in type);
-- duckcluster.cluster_members('name') gives them in the source's own type.
-- partition: the value of the definition's partition_by (as text), NULL for definitions
-- without one; cluster ids are unique across a run's partitions.

CREATE OR REPLACE VIEW duckcluster.latest_runs AS
    SELECT r.name, json_extract_string(d.spec, '$.algorithm') AS algorithm,
           json_extract_string(d.spec, '$.source') AS source,
           r.run_id, r.mode, r.started_at, r.finished_at, r.duration_s, r.n_rows, r.n_null,
           r.n_members, r.n_fit, r.n_clusters, r.dim, r.seed, r.input_hash, r.base_run_id,
           r.assignment_threshold, r.silhouette_score, r.mean_cosine_to_centroid,
           r.noise_ratio, r.cluster_size_entropy, r.davies_bouldin, r.calinski_harabasz,
           r.should_recluster, r.artifacts_path
    FROM duckcluster.runs r JOIN duckcluster.definitions d
        ON d.name = r.name  -- the definition's incarnation (see duckcluster.sql)
        AND coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)
    WHERE r.status = 'succeeded'
    QUALIFY row_number() OVER (PARTITION BY r.name ORDER BY r.run_seq DESC) = 1;

-- scope 'run': one row per definition; a partition_by definition also has one row per
-- partition (scope 'partition', partition its value as text, n_members its rows).
CREATE OR REPLACE VIEW duckcluster.latest_quality AS
    SELECT r.name, r.run_id, r.silhouette_score, r.mean_cosine_to_centroid, r.noise_ratio,
           r.cluster_size_entropy, r.davies_bouldin, r.calinski_harabasz, r.n_clusters,
           r.should_recluster,
           CAST(json_extract(q.quality, '$.reasons') AS VARCHAR[]) AS reasons,
           CAST(json_extract(q.quality, '$.silhouette_sample_size') AS BIGINT) AS silhouette_sample_size,
           'run' AS scope, NULL::VARCHAR AS partition, r.n_members
    FROM duckcluster.latest_runs r JOIN duckcluster.runs q ON q.run_id = r.run_id
    UNION ALL
    SELECT r.name, r.run_id, CAST(json_extract(u.p, '$.silhouette_score') AS DOUBLE),
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
           CAST(json_extract(u.p, '$.n_members') AS BIGINT)
    FROM duckcluster.latest_runs r JOIN duckcluster.runs q ON q.run_id = r.run_id,
         unnest(CAST(json_extract(q.quality, '$.partitions') AS JSON[])) AS u(p);

CREATE OR REPLACE VIEW duckcluster.latest_centroids AS
    SELECT l.name, c.run_id, c.cluster_id, c.node_id, c.centroid, c.size,
           c.mean_cosine_similarity, c.min_cosine_similarity, c.label, c.summary, c.keywords,
           c.parent_cluster_id, c.child_cluster_ids, c.hierarchy_level, c.partition
    FROM duckcluster.latest_runs l JOIN duckcluster.centroids c ON c.run_id = l.run_id
    UNION ALL
    SELECT l.name, l.run_id, -1 AS cluster_id, NULL AS node_id, NULL AS centroid,
           count(*) AS size, avg(m.cosine_similarity_to_centroid) AS mean_cosine_similarity,
           min(m.cosine_similarity_to_centroid) AS min_cosine_similarity, 'noise' AS label,
           'Rows the algorithm left out of every cluster (or below the assignment threshold).' AS summary,
           NULL AS keywords, NULL AS parent_cluster_id, []::VARCHAR[] AS child_cluster_ids,
           0 AS hierarchy_level, m.partition
    FROM duckcluster.latest_runs l JOIN duckcluster.members m ON m.run_id = l.run_id
    WHERE m.cluster_id = -1
    GROUP BY l.name, l.run_id, m.partition;

CREATE OR REPLACE VIEW duckcluster.latest_members AS
    SELECT l.name, m.run_id, m.id, m.cluster_id, m.cosine_similarity_to_centroid, m.x, m.y, m.z,
           m.node_id, m.parent_cluster_id, m.hierarchy_level,
           CASE WHEN m.cluster_id = -1 THEN 'noise' ELSE c.label END AS label,
           c.keywords, m.partition
    FROM duckcluster.latest_runs l
    JOIN duckcluster.members m ON m.run_id = l.run_id
    LEFT JOIN duckcluster.centroids c
        ON c.run_id = m.run_id AND c.cluster_id = m.cluster_id AND c.hierarchy_level = 0;
