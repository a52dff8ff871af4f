-- One-shot clustering, no stored definition: every document plus cluster_id and
-- cosine_similarity_to_centroid.
{{ config(materialized='table') }}
select *
from cluster_embeddings('{{ ref("docs") }}', 'embedding', algorithm := 'kmeans',
                        params := {'n_clusters': 4}, id := 'doc_id')
