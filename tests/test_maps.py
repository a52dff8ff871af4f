"""Maps from the graph (issue 15, item 7): pipelines that build a neighbour graph get x, y
(z) from a layout of that same graph, recorded in cluster_runs.choices; other pipelines
keep the PCA map; assign runs place new rows on the base run's map; files written
before graph maps keep working. Map quality on real sets is a figure of bench/maps.py."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

import duckcluster
from duckcluster.core.projection import PLACE_NEIGHBORS, GraphMap, reduce_coordinates
from tests.conftest import blobs, load_table

AUTO = ("SELECT cluster_create('{name}', source := 'docs', embedding := 'embedding', "
        "id := 'doc_id'{extra})")


def _con(path, X):
    con = duckdb.connect(str(path))
    duckcluster.install(con)
    load_table(con, "docs", X)
    return con


def _run(con, name, extra="", mode="full"):
    if mode == "full":
        con.execute(AUTO.format(name=name, extra=extra))
        con.execute(f"SELECT cluster_execute('{name}')")
    else:
        con.execute(f"SELECT cluster_execute('{name}', mode := 'assign', "
                    "assignment_threshold := 0.0)")
    run_id, raw = con.execute(f"SELECT run_id, choices FROM cluster_runs('{name}')"
                              ).fetchall()[-1]  # oldest first
    m = con.execute(f"SELECT id AS doc_id, cluster_id, x, y, z FROM cluster_members('{name}', "
                    f"'{run_id}') ORDER BY id").fetchnumpy()
    return run_id, (json.loads(raw) if raw else None), m


def _one_cluster_per_region(m, truth) -> float:
    """Share of rows whose nearest other row on the map has the same true group."""
    P = np.column_stack([m["x"], m["y"]]).astype(np.float64)
    D = ((P[:, None] - P[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    return float(np.mean(truth[np.argmin(D, axis=1)] == truth))


def test_auto_on_wide_input_gets_a_graph_map_recorded_in_the_run(tmp_path):
    X, y = blobs(n_per=80, k=5, d=48)
    con = _con(tmp_path / "m.duckdb", X)
    run_id, choices, m = _run(con, "t")
    assert choices["pipeline"][0]["step"] == "umap"
    assert choices["map"]["kind"] == "graph" and choices["map"]["dimensions"] == 2
    assert choices["map"]["reference_rows"] == len(X)  # fewer rows than REFERENCE_ROWS
    kind, = con.execute("SELECT kind FROM duckcluster.projections WHERE run_id = ?",
                        [run_id]).fetchall()[0]
    n_refs, = con.execute("SELECT count(*) FROM duckcluster.map_references WHERE run_id = ?",
                          [run_id]).fetchall()[0]
    assert kind == "graph" and n_refs == len(X)
    assert np.isfinite(m["x"]).all() and np.isfinite(m["y"]).all()
    assert np.ma.count(np.ma.masked_invalid(m["z"])) == 0  # no z on a 2-D map
    pca = reduce_coordinates(X / np.linalg.norm(X, axis=1, keepdims=True), 2, 0)
    assert not np.allclose(np.column_stack([m["x"], m["y"]]), pca, atol=1e-3)
    # the layout keeps the groups apart: every row's nearest row is of its group
    assert _one_cluster_per_region(m, y) == 1.0
    con.close()
    from click.testing import CliRunner

    from duckcluster.cli import main

    out = CliRunner().invoke(main, ["runs", str(tmp_path / "m.duckdb"), "t"])
    assert out.exit_code == 0, out.output
    assert "map: graph layout" in out.output, out.output


def test_umap_preprocessing_gets_a_graph_map_and_3d_when_asked(tmp_path):
    X, y = blobs(n_per=60, k=4, d=24)
    con = _con(tmp_path / "m.duckdb", X)
    _, choices, m = _run(con, "u", ", algorithm := 'kmeans', params := {'n_clusters': 4}, "
                         "preprocessing := [{'method': 'umap', 'n_components': 5, "
                         "'n_neighbors': 10}], dimensions := 3")
    assert choices == {"map": choices["map"]} and choices["map"]["kind"] == "graph"
    assert choices["map"]["dimensions"] == 3 and np.isfinite(m["z"]).all()
    con.close()


def test_other_pipelines_keep_the_pca_map(tmp_path):
    X, _ = blobs(n_per=50, k=4, d=16)
    con = _con(tmp_path / "m.duckdb", X)
    run_id, choices, m = _run(con, "k", ", algorithm := 'kmeans', params := {'n_clusters': 4}")
    assert choices is None  # no choices to record, and the map is PCA
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(np.column_stack([m["x"], m["y"]]),
                               reduce_coordinates(Xn, 2, 0), atol=1e-4)
    assert con.execute("SELECT kind FROM duckcluster.projections WHERE run_id = ?",
                       [run_id]).fetchall() == [("pca",)]
    # auto on narrow input clusters without a graph: PCA, said so in its choices
    _, choices, _ = _run(con, "a")
    assert choices["pipeline"][0]["step"] == "none" and choices["map"]["kind"] == "pca"
    con.close()


def test_the_map_is_the_same_for_the_same_seed(tmp_path):
    X, _ = blobs(n_per=60, k=4, d=40)
    con = _con(tmp_path / "m.duckdb", X)
    _, _, a = _run(con, "s1")
    _, _, b = _run(con, "s2")
    _, _, c = _run(con, "s3", ", seed := 7")
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
    assert not np.array_equal(a["x"], c["x"])
    con.close()


def test_assign_runs_place_new_rows_near_their_cluster_on_the_same_map(tmp_path):
    X, y = blobs(n_per=80, k=5, d=48)
    con = _con(tmp_path / "m.duckdb", X)
    _, _, base = _run(con, "t")
    # new rows: jittered copies of existing ones, under new ids
    rng = np.random.default_rng(3)
    pick = rng.choice(len(X), 60, replace=False)
    new = X[pick] + rng.normal(scale=0.01, size=(60, X.shape[1])).astype(np.float32)
    load_table(con, "docs", np.vstack([X, new]))
    _, _, m = _run(con, "t", mode="assign")
    old = m["doc_id"] < len(X)
    # rows the base run clustered keep their place; new rows land by their group's rows
    np.testing.assert_allclose(m["x"][old], base["x"], atol=1e-6)
    P = np.column_stack([base["x"], base["y"]])
    centres = np.array([np.median(P[y == g], axis=0) for g in range(5)])
    Q = np.column_stack([m["x"][~old], m["y"][~old]])
    nearest = np.argmin(((Q[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y[pick]).all()
    con.close()


def test_a_sampled_run_lays_out_its_sample_and_places_the_other_rows(tmp_path):
    X, y = blobs(n_per=100, k=4, d=40)
    con = _con(tmp_path / "m.duckdb", X)
    _, choices, m = _run(con, "s", ", sample_size := 200")
    assert choices["map"]["kind"] == "graph" and "200 rows" in choices["map"]["from"]
    assert np.isfinite(m["x"]).all()
    assert _one_cluster_per_region(m, y) > 0.95
    # a sampled run whose auto fits a sample of its sample: that graph's layout, the
    # other sampled rows placed on it, then every streamed row
    _, choices, m = _run(con, "s2", ", sample_size := 200, params := {'fit_rows': 120}")
    assert choices["map"]["kind"] == "graph" and "120 rows" in choices["map"]["from"]
    assert np.isfinite(m["x"]).all() and _one_cluster_per_region(m, y) > 0.95
    # the references go with the definition's other artifacts
    con.execute("SELECT cluster_delete('s', drop_artifacts := true)")
    con.execute("SELECT cluster_delete('s2', drop_artifacts := true)")
    assert con.execute("SELECT count(*) FROM duckcluster.map_references").fetchall() == [(0,)]
    con.close()


def test_auto_fitting_a_sample_lays_out_the_sample_and_places_the_rest(tmp_path):
    X, y = blobs(n_per=100, k=4, d=40)
    con = _con(tmp_path / "m.duckdb", X)
    _, choices, m = _run(con, "f", ", params := {'fit_rows': 150}")
    assert choices["sample"]["rows"] == 150
    assert choices["map"]["kind"] == "graph" and "150 rows" in choices["map"]["from"]
    assert choices["map"]["reference_rows"] == 150
    assert np.isfinite(m["x"]).all() and np.isfinite(m["y"]).all()
    assert _one_cluster_per_region(m, y) > 0.95
    con.close()


def test_files_from_before_graph_maps_still_assign_with_their_pca(tmp_path):
    path = tmp_path / "old.duckdb"
    X, _ = blobs(n_per=50, k=4, d=16)
    con = _con(path, X)
    _, _, base = _run(con, "k", ", algorithm := 'kmeans', params := {'n_clusters': 4}")
    # the catalog as it was before: no kind column, no map_references table
    con.execute("ALTER TABLE duckcluster.projections DROP COLUMN kind")
    con.execute("DROP TABLE duckcluster.map_references")
    con.close()
    con = duckdb.connect(str(path))
    duckcluster.install(con)
    _, _, m = _run(con, "k", mode="assign")
    np.testing.assert_allclose(m["x"], base["x"], atol=1e-5)
    con.close()


def test_graph_map_transform_is_a_weighted_mean_of_the_nearest_references():
    rng = np.random.default_rng(0)
    R = rng.normal(size=(40, 8)).astype(np.float32)
    pos = rng.normal(size=(40, 2)).astype(np.float32)
    gm = GraphMap(R, pos, 2)
    out = gm.transform(R[:5])
    U = R / np.linalg.norm(R, axis=1, keepdims=True)
    for i in range(5):  # inside the box of its PLACE_NEIGHBORS nearest references
        near = np.argsort(-(U @ U[i]))[:PLACE_NEIGHBORS]
        lo, hi = pos[near].min(0), pos[near].max(0)
        assert (out[i] >= lo - 1e-6).all() and (out[i] <= hi + 1e-6).all()
    assert np.array_equal(gm.transform(R[:5]), out)
    # with centroids: among the references nearest the row's own centroid
    C = np.stack([U[:20].mean(0), U[20:].mean(0)])
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    group = np.argmax(U @ C.T, axis=1)
    out = gm.transform(R, C)
    for i in range(len(R)):
        mine = np.flatnonzero(group == group[i])
        lo, hi = pos[mine].min(0), pos[mine].max(0)
        assert (out[i] >= lo - 1e-6).all() and (out[i] <= hi + 1e-6).all()
    empty = GraphMap(np.zeros((0, 8), np.float32), np.zeros((0, 2), np.float32), 2)
    assert (empty.transform(R[:3]) == 0).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_graph_layout_has_the_asked_dimensions(dims):
    from duckcluster.core.preprocess import capture_graphs, run_preprocessing, validate_steps
    from duckcluster.core.projection import graph_map

    X, _ = blobs(n_per=30, k=3, d=20)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    with capture_graphs() as g:
        run_preprocessing(X, validate_steps([{"method": "umap", "n_components": 2,
                                              "n_neighbors": 10}]), 0)
    gm, layout = graph_map(X, g[0][0], g[0][1], dims, 0)
    assert layout.shape == (len(X), dims) and np.isfinite(layout).all()
    assert gm.positions.shape == (len(X), dims)


def test_the_map_curve_constants_are_what_umap_fits_for_its_min_dist():
    from duckcluster.core.preprocess import _ab_params
    from duckcluster.core.projection import MAP_AB, MAP_MIN_DIST

    assert _ab_params(1.0, MAP_MIN_DIST) == pytest.approx(MAP_AB, rel=1e-6)


def test_the_map_goes_parallel_where_the_umap_step_does():
    from duckcluster.core.preprocess import PARALLEL_LAYOUT_MIN_ROWS
    from duckcluster.core.projection import MAP_PARALLEL_MIN_ROWS

    assert MAP_PARALLEL_MIN_ROWS == PARALLEL_LAYOUT_MIN_ROWS
