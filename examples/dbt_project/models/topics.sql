{#- The managed workflow: a stored definition named 'topics' (this model's name)
    whose source is this model's SQL, fitted on January's documents on every build
    and labeled offline from the body text. The table is January's documents with
    cluster_id, cosine_similarity_to_centroid, x, y and run_id; centroids, quality
    and history are in cluster_centroids('topics'), cluster_quality('topics') and
    cluster_runs('topics'). -#}
{{ config(materialized='cluster_run', embedding='embedding', id='doc_id',
          algorithm='kmeans', params={'n_clusters': 4}, dimensions=2,
          label={'text': 'body'}) }}
select doc_id, published_on, body, embedding
from {{ ref('docs') }}
where published_on < date '2024-02-01'
