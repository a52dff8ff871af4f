-- One-shot clustering of a Parquet source: sources with an external_location (schema.yml)
-- render as their path, which duckcluster reads like any source.
-- depends_on: {{ ref('docs_lake') }}
{{ config(materialized='table') }}
select *
from cluster_embeddings({{ dbt_duckcluster.source_literal(source('lake', 'docs_lake')) }},
                        'embedding', algorithm := 'kmeans', params := {'n_clusters': 4},
                        id := 'doc_id')
