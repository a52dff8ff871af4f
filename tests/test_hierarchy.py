"""Hierarchical sub-clustering: ids, parent/child links, noise, depth, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import duckcluster.core.hierarchy as hierarchy_mod
from duckcluster.core.assign import normalize_rows
from duckcluster._errors import SpecError
from duckcluster.core.hierarchy import build_hierarchy


def nested(n_per=100, d=32, seed=0):
    """2 top blobs, each made of 2 sub-blobs: (X, top labels, sub labels 0..3)."""
    rng = np.random.default_rng(seed)
    tops = normalize_rows(rng.normal(size=(2, d)))
    X, sub = [], []
    for t in range(2):
        for s in range(2):
            centre = tops[t] + 0.35 * normalize_rows(rng.normal(size=(1, d)))[0]
            X.append(centre + 0.02 * rng.normal(size=(n_per, d)))
            sub += [2 * t + s] * n_per
    sub = np.array(sub)
    return normalize_rows(np.vstack(X)), sub // 2, sub


def check_links(h, n):
    """Every structural invariant of a hierarchy over n rows."""
    by_id = {nd.node_id: nd for nd in h.nodes}
    assert len(by_id) == len(h.nodes)
    for nd in h.nodes:
        if nd.parent_id is None:
            assert nd.level == 0 and nd.node_id == f"cl_{nd.cluster_id}"
        else:
            parent = by_id[nd.parent_id]
            assert nd.node_id in parent.child_ids
            assert nd.level == parent.level + 1 and nd.cluster_id == parent.cluster_id
            assert nd.node_id.startswith(parent.node_id + "_sub_")
            assert np.isin(nd.members, parent.members).all()
        for j, child in enumerate(nd.child_ids):
            assert child == f"{nd.node_id}_sub_{j}" and by_id[child].parent_id == nd.node_id
        if nd.child_ids:
            kids = np.concatenate([by_id[c].members for c in nd.child_ids])
            assert np.unique(kids).size == kids.size  # children are disjoint
            sizes = [by_id[c].members.size for c in nd.child_ids]
            assert sizes == sorted(sizes, reverse=True)  # numbered by decreasing size
    assert h.leaf_of.shape == (n,)
    for nd in h.nodes:  # a row's leaf is the deepest node containing it
        direct = np.setdiff1d(
            nd.members, np.concatenate([by_id[c].members for c in nd.child_ids] or [[]])
        )
        assert (h.leaf_of[direct] == nd.node_id).all()


def test_two_blobs_of_two_sub_blobs():
    X, top, sub = nested()
    h = build_hierarchy(X, top, max_depth=2, seed=0)
    assert [nd.node_id for nd in h.nodes] == [
        "cl_0", "cl_0_sub_0", "cl_0_sub_1", "cl_1", "cl_1_sub_0", "cl_1_sub_1",
    ]
    assert [nd.level for nd in h.nodes] == [0, 1, 1, 0, 1, 1]
    assert h.node("cl_0").child_ids == ("cl_0_sub_0", "cl_0_sub_1")
    assert h.node("cl_1_sub_1").parent_id == "cl_1"
    assert h.node("cl_0").members.tolist() == np.flatnonzero(top == 0).tolist()
    check_links(h, X.shape[0])
    leaf = np.array([str(v) for v in h.leaf_of])
    assert adjusted_rand_score(sub, leaf) == 1.0


def test_same_seed_same_hierarchy():
    X, top, _ = nested(seed=1)
    a = build_hierarchy(X, top, max_depth=3, seed=5)
    b = build_hierarchy(X, top, max_depth=3, seed=5)
    assert [n.node_id for n in a.nodes] == [n.node_id for n in b.nodes]
    assert (a.leaf_of == b.leaf_of).all()
    check_links(a, X.shape[0])


def test_max_depth_one_is_top_level_only_and_noise_has_no_node():
    X, top, _ = nested()
    labels = top.copy()
    labels[:3] = -1
    h = build_hierarchy(X, labels, max_depth=1, seed=0)
    assert [(n.node_id, n.child_ids, n.parent_id) for n in h.nodes] == [
        ("cl_0", (), None), ("cl_1", (), None),
    ]
    assert h.leaf_of[:3].tolist() == [None, None, None]
    assert h.leaf_of[3] == "cl_0" and h.leaf_of[-1] == "cl_1"


def halves(X, seed):
    """Toy splitter: sign of the first coordinate; rows with |x0| < 0.05 are noise."""
    out = np.where(X[:, 0] > 0, 0, 1)
    out[np.abs(X[:, 0]) < 0.05] = -1
    return out


def test_custom_splitter_three_levels_and_sub_noise_stays_in_parent():
    # 1-d structure along x0 inside cluster 0; cluster 1 is too small to split
    x0 = np.array([-0.9, -0.5, -0.2, 0.0, 0.3, 0.6, 0.95, 0.01, 0.5, -0.5])
    X = np.stack([x0, np.ones_like(x0)], axis=1).astype(np.float32)
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])

    def shifted(Xs, seed):  # second level splits around the subset's mean
        return halves(Xs - np.array([Xs[:, 0].mean(), 0], dtype=np.float32), seed)

    calls = []

    def splitter(Xs, seed):
        calls.append(len(Xs))
        return halves(Xs, seed) if len(calls) == 1 else shifted(Xs, seed)

    h = build_hierarchy(X, labels, max_depth=3, seed=0, min_size=3, subcluster=splitter)
    check_links(h, len(X))
    ids = [n.node_id for n in h.nodes]
    assert ids[:2] == ["cl_0", "cl_0_sub_0"] and "cl_0_sub_1_sub_0" in ids
    # rows 3 (x0=0.0) and 7 (0.01) are noise of the first split: they stay in cl_0
    assert h.leaf_of[3] == "cl_0" and h.leaf_of[7] == "cl_0"
    assert h.node("cl_1").child_ids == ()  # 2 rows < min_size
    assert max(n.level for n in h.nodes) == 2  # depth 3 = levels 0, 1, 2
    assert all(isinstance(v, str) for v in h.leaf_of)


def test_a_split_into_one_cluster_is_not_a_split():
    X, top, _ = nested()
    h = build_hierarchy(X, top, max_depth=3, seed=0,
                        subcluster=lambda Xs, seed: np.zeros(len(Xs), dtype=np.int64))
    assert [n.child_ids for n in h.nodes] == [(), ()]


def test_default_splitter_uses_umap_for_big_clusters(monkeypatch):
    """Above UMAP_MIN_MEMBERS the reduction is UMAP; the split is still found."""
    monkeypatch.setattr(hierarchy_mod, "UMAP_MIN_MEMBERS", 150)
    X, top, sub = nested(n_per=100, seed=2)
    h = build_hierarchy(X, top, max_depth=2, seed=0)
    check_links(h, X.shape[0])
    leaf = np.array([str(v) for v in h.leaf_of])
    assert [len(h.node(f"cl_{k}").child_ids) for k in (0, 1)] == [2, 2]
    assert adjusted_rand_score(sub, leaf) >= 0.95


def test_invalid_depth():
    X, top, _ = nested(n_per=5)
    with pytest.raises(SpecError, match=r"max_hierarchy_depth must be an int >= 1 \(1 = top "
                       r"level only\). Got 0 instead."):
        build_hierarchy(X, top, max_depth=0, seed=0)


@pytest.mark.parametrize("d", [32, 384])
def test_umap_splitter_leaves_a_blob_whole_and_splits_two(d):
    """From UMAP_MIN_MEMBERS rows the default splitter (duckcluster's UMAP step, no
    umap-learn) finds no sub-clusters in one Gaussian blob and two in two."""
    from duckcluster.core.assign import normalize_rows
    from duckcluster.core.hierarchy import UMAP_MIN_MEMBERS, default_subcluster

    rng = np.random.default_rng(1)
    c = rng.standard_normal(d)
    scale = np.linalg.norm(c) / np.sqrt(d)
    blob = normalize_rows(c + 0.3 * scale * rng.standard_normal((UMAP_MIN_MEMBERS + 200, d)))
    lab = default_subcluster(blob, 0)
    assert np.unique(lab[lab >= 0]).size <= 1
    c2 = c + 0.6 * scale * rng.standard_normal(d)
    half = (UMAP_MIN_MEMBERS + 200) // 2
    two = normalize_rows(np.vstack([c + 0.15 * scale * rng.standard_normal((half, d)),
                                    c2 + 0.15 * scale * rng.standard_normal((half, d))]))
    lab = default_subcluster(two, 0)
    truth = np.repeat([0, 1], half)
    assert np.unique(lab[lab >= 0]).size == 2
    assert adjusted_rand_score(truth[lab >= 0], lab[lab >= 0]) > 0.95
