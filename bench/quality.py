"""Quality metrics at 1M rows: ``compute_quality`` (what every run stores), its
silhouette against scikit-learn's.

    python -m bench.quality [--rows 1000000] [--repeat 3]

duckcluster computes the cosine silhouette exactly from cluster sums in
O(n k d) (see duckcluster/core/quality.py), so at 1M rows it uses every row
(``silhouette_sample_size`` = n). Reported:

- the time of ``compute_quality`` at ``--rows`` (silhouette, Davies-Bouldin,
  Calinski-Harabasz, entropy, noise, mean cosine) with the generating labels;
- its error against scikit-learn's exact ``silhouette_score(metric='cosine')`` at
  20k rows (O(n^2), so not feasible at 1M), and scikit-learn's time there;
- the peer at ``--rows``: scikit-learn's silhouette on a seeded 10k sample (the
  usual way to make it feasible), its time and its error against the exact value.
"""

from __future__ import annotations


from bench._common import cli, Row, make_clusters, median_time, verdict


def run(rows: int = 1_000_000, repeat: int = 3, check_rows: int = 20_000) -> list[Row]:
    from sklearn.metrics import silhouette_score

    from duckcluster.core.assign import centroids_from_labels, similarity_to_own
    from duckcluster.core.quality import compute_quality, cosine_silhouette

    X, y = make_clusters(rows)
    ids, C = centroids_from_labels(X, y)
    sims = similarity_to_own(X, C, y, ids)
    t_q, q = median_time(lambda: compute_quality(X, y, sims, seed=0), repeat)

    m = min(check_rows, rows)
    Xs, ys = X[:m], y[:m]
    t_sk_exact, sk_exact = median_time(lambda: silhouette_score(Xs, ys, metric="cosine"), 1)
    t_ours_small, ours_small = median_time(lambda: cosine_silhouette(Xs, ys), repeat)
    err_small = abs(ours_small - sk_exact)

    sample = min(10_000, rows)
    t_sk_sample, sk_sampled = median_time(
        lambda: silhouette_score(X, y, metric="cosine", sample_size=sample, random_state=0),
        repeat)
    err_sampled = abs(sk_sampled - q.silhouette_score)
    return [Row(
        workload="quality metrics (compute_quality: silhouette, DB, CH, entropy, noise)",
        rows=rows, duckcluster=t_q,
        peers={f"scikit-learn silhouette, {sample:,}-row sample": t_sk_sample,
               f"scikit-learn exact silhouette at {m:,} rows": t_sk_exact,
               f"duckcluster exact silhouette at {m:,} rows": t_ours_small},
        ratio=f"exact silhouette at {m:,} rows {t_sk_exact / t_ours_small:.0f}x faster than "
              "scikit-learn's",
        quality=(f"silhouette {q.silhouette_score:.4f} over {q.silhouette_sample_size:,} rows "
                 f"(exact); error vs scikit-learn exact at {m:,} rows: {err_small:.1e}; "
                 f"scikit-learn's {sample:,}-row sample is off by {err_sampled:.4f}"),
        target="seconds at 1M rows; sample size and error stated",
        verdict=verdict(t_q < 60 and err_small < 1e-4),
        notes=(f"silhouette_sample_size = {q.silhouette_sample_size:,}; davies_bouldin "
               f"{q.davies_bouldin:.3f}, calinski_harabasz {q.calinski_harabasz:,.0f}"),
    )]


def main() -> None:
    cli(run, rows=1_000_000, repeat=3)


if __name__ == "__main__":
    main()
