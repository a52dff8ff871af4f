-- Every document with its topic: January's from the run, later ones assigned to the
-- nearest topic (-1 when no topic is close: new content).
{{ config(materialized='table') }}
{{ dbt_duckcluster.enriched('topics', ref('docs'), id='doc_id',
                            fields=['cluster_id', 'label', 'keywords',
                                    'cosine_similarity_to_centroid', 'assigned']) }}
-- depends_on: {{ ref('topics') }}
