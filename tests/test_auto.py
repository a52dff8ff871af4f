"""algorithm := 'auto' and n_clusters := 'auto': the pipeline they pick, the guard against
collapse, seeding, and the choices recorded in cluster_runs. Quality figures on real
embeddings live in bench/auto.py."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import duckcluster
from duckcluster.core.algorithms import get_algorithm, validate_algorithm_params
from duckcluster.core.algorithms._choose_k import (GRAPH_CRITERION, MERGE_TOLERANCE,
                                                   MODULARITY_TOLERANCE, merge_weak,
                                                   modularity, silhouette_from, sweep_range)


def blobs(k=6, per=100, d=32, sigma=0.05, seed=0, centres=None):
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = rng.normal(size=(k, d))
    centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(centres)), per)
    X = centres[y] + rng.normal(scale=sigma, size=(y.size, centres.shape[1]))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def two_families(d=32, seed=0):
    """Two far-apart families of three close blobs each: the silhouette alone peaks at 2."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, d))
    centres = np.vstack([f + 0.25 * rng.normal(size=(3, d)) for f in (a * 3, b * 3)])
    return blobs(centres=centres, sigma=0.02, per=80, seed=seed)


def fit(name, X, params=None, seed=0):
    p = validate_algorithm_params(name, params or {})
    return get_algorithm(name).fit_explained(X, p, seed)


def test_high_dimensional_input_gets_a_neighbour_graph_reduction():
    X, _ = blobs(d=48)
    c = fit("auto", X).choices
    assert c["algorithm"] == "auto"
    assert c["pipeline"][0]["step"] == "umap"
    assert c["pipeline"][0]["n_components"] == 5 and c["pipeline"][0]["n_neighbors"] == 15
    assert c["pipeline"][1] == {"step": "kmeans", "n_clusters": c["n_clusters"],
                                "space": "reduced"}
    assert c["input"] == {"rows": 600, "dimensions": 48}


def test_low_dimensional_or_small_input_is_clustered_as_it_is():
    X, _ = blobs(d=32)
    assert fit("auto", X).choices["pipeline"][0]["step"] == "none"
    X, _ = blobs(d=48, per=10)  # 60 rows
    assert fit("auto", X).choices["pipeline"][0]["step"] == "none"
    X, _ = blobs(d=48)
    assert fit("auto", X, {"reduction": "none"}).choices["pipeline"][0]["step"] == "none"
    assert fit("auto", X[:300, :32], {"reduction": "umap"}).choices["pipeline"][0]["step"] == \
        "umap"


def test_auto_finds_separated_blobs_and_reports_every_candidate():
    X, y = blobs(k=6, d=48)
    r = fit("auto", X)
    assert len(np.unique(r.labels)) == 6 and (r.labels >= 0).all()
    cands = r.choices["candidates"]
    assert [c["n_clusters"] for c in cands] == sweep_range(600)
    assert sum(c["chosen"] for c in cands) == 1
    chosen = next(c for c in cands if c["chosen"])
    assert chosen["n_clusters"] == r.choices["n_clusters"] == 6
    eligible = [c for c in cands if "passed_over" not in c]
    # after UMAP: the smallest k within the tolerance of the best modularity on its graph
    best = max(c["modularity"] for c in eligible)
    assert chosen["modularity"] >= best - MODULARITY_TOLERANCE
    assert all(c["modularity"] < best - MODULARITY_TOLERANCE for c in eligible
               if c["n_clusters"] < chosen["n_clusters"])
    assert r.choices["criterion"] == GRAPH_CRITERION
    # separated blobs: no cut between them is weak, nothing is merged
    assert r.choices["pipeline"][2] == {"step": "merge", "n_clusters": 6,
                                        "tolerance": MERGE_TOLERANCE, "merges": []}


def _triangles(k=4, link=2.0):
    """k triangles; triangles 2i and 2i+1 joined by one edge of weight ``link``."""
    import scipy.sparse

    A = np.kron(np.eye(k), np.ones((3, 3))) - np.eye(3 * k)
    for i in range(0, k - 1, 2):
        A[3 * i + 2, 3 * i + 3] = A[3 * i + 3, 3 * i + 2] = link
    return scipy.sparse.csr_matrix(A), np.repeat(np.arange(k), 3)


def test_merge_weak_joins_weakly_cut_clusters_within_the_guards():
    G, lab = _triangles(6)
    merged, merges = merge_weak(G, lab, tolerance=0.01, min_clusters=1, max_share=1.0)
    assert merged.tolist() == np.repeat([0, 1, 2], 6).tolist()
    assert [m["clusters"] for m in merges] == [[0, 1], [2, 3], [4, 5]]
    # each merge's recorded change is the change of the modularity it made
    before = modularity(G, lab)
    assert sum(m["modularity_change"] for m in merges) == pytest.approx(
        modularity(G, merged) - before, abs=1e-4)
    # the guards: never fewer than min_clusters, never a cluster over max_share
    few, _ = merge_weak(G, lab, tolerance=0.01, min_clusters=5, max_share=1.0)
    assert len(np.unique(few)) == 5
    small, _ = merge_weak(G, lab, tolerance=1.0, min_clusters=1, max_share=0.34)
    assert np.bincount(small).max() <= 0.34 * len(lab)
    # a cut that costs more than the tolerance stays
    kept, none = merge_weak(*_triangles(6, link=0.01), tolerance=0.001, min_clusters=1,
                            max_share=1.0)
    assert none == [] and len(np.unique(kept)) == 6


def test_auto_records_its_merges_and_a_given_k_is_not_merged():
    """Two pairs of near-duplicate blobs: what auto merged is in its pipeline."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=(4, 48))
    centres = np.vstack([base, base[:2] + 0.08 * rng.normal(size=(2, 48))])
    X, _ = blobs(centres=centres, sigma=0.05, per=80, seed=4)
    r = fit("auto", X)
    merge = r.choices["pipeline"][2]
    assert merge["step"] == "merge" and merge["tolerance"] == MERGE_TOLERANCE
    assert merge["n_clusters"] == r.choices["n_clusters"] == len(np.unique(r.labels))
    kmeans_k = r.choices["pipeline"][1]["n_clusters"]
    assert merge["n_clusters"] == kmeans_k - len(merge["merges"])
    assert all(m["modularity_change"] > -MERGE_TOLERANCE for m in merge["merges"])
    assert len(np.unique(r.labels)) >= 3 and np.bincount(r.labels).max() <= 0.5 * len(X)
    given = fit("auto", X, {"n_clusters": 6})
    assert [s["step"] for s in given.choices["pipeline"]] == ["umap", "kmeans"]
    assert len(np.unique(given.labels)) == 6


def test_never_collapses_to_two_families():
    """The silhouette prefers 2 here (two far families); auto passes over it."""
    X, _ = two_families()
    r = fit("auto", X, {"reduction": "none"})
    cands = {c["n_clusters"]: c for c in r.choices["candidates"]}
    assert cands[2]["silhouette"] == max(c["silhouette"] for c in cands.values())
    assert cands[2]["passed_over"] == "<= 2 clusters"
    sizes = np.bincount(r.labels)
    assert len(sizes) >= 3 and sizes.max() <= 0.5 * len(X)


def test_same_seed_same_choice_other_seed_recorded():
    X, _ = blobs(k=5, sigma=0.15, d=48)
    a, b = fit("auto", X, seed=3), fit("auto", X, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.choices == b.choices


def test_n_clusters_is_a_target():
    X, _ = blobs(k=6)
    r = fit("auto", X, {"n_clusters": 4})
    assert len(np.unique(r.labels)) == 4
    assert [c["n_clusters"] for c in r.choices["candidates"]] == [4]
    assert r.choices["criterion"].startswith("n_clusters 4 given")


@pytest.mark.parametrize("name,key", [("kmeans", "n_clusters"), ("agglomerative", "n_clusters"),
                                      ("spectral", "n_clusters"),
                                      ("gaussian_mixture", "n_components")])
def test_n_clusters_auto_sweeps_and_records(name, key):
    X, _ = blobs(k=5, per=80)
    r = fit(name, X, {key: "auto"})
    assert r.choices["algorithm"] == name and r.choices[key] == 5
    assert len(np.unique(r.labels)) == 5
    assert len(r.choices["candidates"]) == len(sweep_range(400))
    assert fit(name, X, {key: 5}).choices is None  # a fixed k records nothing


def test_modularity_matches_networkx_convention():
    """Newman's modularity on a weighted graph: two triangles joined by one edge."""
    import scipy.sparse

    edges = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0), (3, 4, 2.0), (4, 5, 2.0), (3, 5, 2.0),
             (2, 3, 0.5)]
    r, c, w = (np.array(v) for v in zip(*edges))
    G = scipy.sparse.coo_matrix((np.r_[w, w], (np.r_[r, c], np.r_[c, r])), shape=(6, 6))
    labels = np.array([0, 0, 0, 1, 1, 1])
    m = w.sum()
    deg = np.asarray(G.sum(axis=1)).ravel()
    expected = sum(w[i] for i in range(len(w)) if labels[r[i]] == labels[c[i]]) / m - sum(
        (deg[labels == g].sum() / (2 * m)) ** 2 for g in (0, 1))
    assert modularity(G.tocsr(), labels) == pytest.approx(expected, abs=1e-12)
    assert modularity(G.tocsr(), np.zeros(6, int)) == pytest.approx(0.0, abs=1e-12)


def test_silhouette_matches_scikit_learn():
    from sklearn.metrics import silhouette_score

    X, _ = blobs(k=4, per=30, sigma=0.3)
    labels = np.random.default_rng(0).integers(0, 4, len(X))
    D = np.sqrt(((X[:, None].astype(np.float64) - X[None]) ** 2).sum(-1))
    assert silhouette_from(D, labels) == pytest.approx(
        silhouette_score(D, labels, metric="precomputed"), abs=1e-9)


def test_a_run_records_the_choices_in_cluster_runs(tmp_path):
    X, _ = blobs(k=6, d=48)
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    duckcluster.install(con)
    con.register("v", pa.table({"id": np.arange(len(X)),
                                "e": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()),
                                                                       X.shape[1])}))
    con.execute("CREATE TABLE docs AS SELECT * FROM v")
    con.execute("SELECT cluster_create('t', source := 'docs', embedding := 'e', id := 'id', "
                "algorithm := 'auto')")
    con.execute("SELECT cluster_execute('t')")
    n, raw = con.execute("SELECT n_clusters, choices FROM cluster_runs('t')").fetchall()[0]
    c = json.loads(raw)
    assert n == c["n_clusters"] == 6 and c["pipeline"][0]["step"] == "umap"
    con.execute("SELECT cluster_create('k', source := 'docs', embedding := 'e', id := 'id', "
                "algorithm := 'kmeans', params := {'n_clusters': 'auto'})")
    con.execute("SELECT cluster_execute('k')")
    n, raw = con.execute("SELECT n_clusters, choices FROM cluster_runs('k')").fetchall()[0]
    assert n == json.loads(raw)["n_clusters"] == 6
    con.execute("SELECT cluster_create('h', source := 'docs', embedding := 'e', id := 'id', "
                "algorithm := 'hdbscan')")
    con.execute("SELECT cluster_execute('h')")
    assert con.execute("SELECT choices FROM cluster_runs('h')").fetchall()[0][0] is None
    con.close()
    from click.testing import CliRunner

    from duckcluster.cli import main

    out = CliRunner().invoke(main, ["runs", str(tmp_path / "t.duckdb"), "t"])
    assert out.exit_code == 0, out.output
    assert "umap(5, 15) + kmeans k=6" in out.output


def noisy_blobs():
    """Four tight blobs plus rows scattered between them (hdbscan leaves those as -1)."""
    X, _ = blobs(k=4, per=60, d=16, sigma=0.08, seed=2)
    rng = np.random.default_rng(5)
    near = X[rng.integers(0, len(X), 40)] + rng.normal(scale=0.25, size=(40, 16))
    far = rng.normal(size=(10, 16))
    Z = np.vstack([X, near, far]).astype(np.float32)
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def _db(tmp_path, X):
    con = duckdb.connect(str(tmp_path / "n.duckdb"))
    duckcluster.install(con)
    con.register("v", pa.table({"id": np.arange(len(X)),
                                "e": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()),
                                                                       X.shape[1])}))
    con.execute("CREATE TABLE docs AS SELECT * FROM v")
    return con


def _members(con, name, extra=""):
    con.execute(f"SELECT cluster_create('{name}', source := 'docs', embedding := 'e', "
                f"id := 'id', algorithm := 'hdbscan', params := {{'min_cluster_size': 15}}"
                f"{extra})")
    con.execute(f"SELECT cluster_execute('{name}')")
    m = con.execute(f"SELECT id, cluster_id, cosine_similarity_to_centroid, noise_assigned "
                    f"FROM cluster_members('{name}') ORDER BY id").fetchnumpy()
    choices = con.execute(f"SELECT choices FROM cluster_runs('{name}')").fetchall()[0][0]
    return m, (json.loads(choices) if choices else None)


def test_noise_keep_is_the_density_default_and_assign_joins_close_rows(tmp_path):
    X = noisy_blobs()
    con = _db(tmp_path, X)
    keep, c_keep = _members(con, "keep")
    assert c_keep is None and not keep["noise_assigned"].any()
    noise = keep["cluster_id"] < 0
    assert noise.sum() >= 20
    # default threshold: the 10 % quantile of the members' similarity to their own centroid
    got, c = _members(con, "assign", ", noise := 'assign'")
    rep = c["noise"]
    sims = np.ma.getdata(keep["cosine_similarity_to_centroid"])[~noise]
    assert rep["threshold"] == pytest.approx(np.quantile(sims, 0.10), abs=1e-3)
    assert rep["threshold_from"].startswith("10% quantile")
    assert rep["noise_rows"] == int(noise.sum())
    assert got["noise_assigned"].sum() == rep["assigned"]
    # a given threshold wins: rows near a cluster join it, far ones stay noise
    got, c = _members(con, "given", ", noise := 'assign', noise_threshold := 0.5")
    rep = c["noise"]
    assert rep["threshold"] == 0.5 and rep["threshold_from"] == "noise_threshold given"
    flagged = got["noise_assigned"]
    assert flagged.sum() == rep["assigned"] > 0 and rep["left_as_noise"] > 0
    assert noise[flagged].all()  # only rows that were noise are flagged
    np.testing.assert_array_equal(got["cluster_id"][~noise], keep["cluster_id"][~noise])
    assert (got["cluster_id"][flagged] >= 0).all()
    assert (got["cluster_id"][noise & ~flagged] == -1).all()
    none, c = _members(con, "strict", ", noise := 'assign', noise_threshold := 1.0")
    assert c["noise"]["assigned"] == 0 and not none["noise_assigned"].any()
    every, c = _members(con, "loose", ", noise := 'assign', noise_threshold := -1.0")
    assert (every["cluster_id"] >= 0).all() and every["noise_assigned"].sum() == noise.sum()


def test_similarity_is_truthful_after_assignment(tmp_path):
    """Stored similarity = cosine of the row with its cluster's stored centroid."""
    X = noisy_blobs()
    con = _db(tmp_path, X)
    got, _ = _members(con, "a", ", noise := 'assign', noise_threshold := -1.0")
    C = {int(k): np.asarray(v, dtype=np.float32) for k, v in con.execute(
        "SELECT cluster_id, centroid FROM cluster_centroids('a')").fetchall()}
    want = np.array([X[i] @ C[int(c)] for i, c in zip(got["id"], got["cluster_id"])])
    np.testing.assert_allclose(got["cosine_similarity_to_centroid"], want, atol=1e-5)


def test_noise_options_are_validated():
    from duckcluster._errors import SpecError
    from duckcluster.core.spec import ClusterSpec

    base = {"name": "t", "source": "docs", "embedding": "e"}
    with pytest.raises(SpecError, match="'noise' parameter of the cluster definition"):
        ClusterSpec.from_dict({**base, "noise": "drop"})
    with pytest.raises(SpecError, match="'noise_threshold' parameter"):
        ClusterSpec.from_dict({**base, "noise_threshold": 2.0})
    assert ClusterSpec.from_dict({**base, "algorithm": "auto"}).noise_policy == "assign"
    assert ClusterSpec.from_dict({**base, "algorithm": "hdbscan"}).noise_policy == "keep"


def test_above_fit_rows_a_seeded_sample_is_fitted_and_the_rest_joins_nearest_centroid():
    X, y = blobs(k=6, d=48, per=150)  # 900 rows
    r = fit("auto", X, {"fit_rows": 300}, seed=1)
    assert r.choices["sample"] == {"rows": 300, "of": 900, "seeded": True,
                                   "rest": "nearest centroid (cosine) of the sample's clusters"}
    assert r.choices["input"] == {"rows": 900, "dimensions": 48}
    assert r.labels.shape == (900,) and (r.labels >= 0).all()
    assert len(np.unique(r.labels)) == r.choices["n_clusters"] == 6
    # every blob is one cluster: the rows outside the sample joined their own blob
    assert all(len(np.unique(r.labels[y == b])) == 1 for b in range(6))
    again = fit("auto", X, {"fit_rows": 300}, seed=1)
    np.testing.assert_array_equal(r.labels, again.labels)
    assert "sample" not in fit("auto", X, {"fit_rows": None}).choices
    assert "sample" not in fit("auto", X).choices  # 900 rows <= the default
