"""group_by: rows that move together (a session, a user, a day) are relabelled together.

Fixture: sessions of 20 near-identical rows around a random centre; both sides are
sessions drawn from one distribution, so there is no drift. Row-level permutations
treat the 20 rows of a session as 20 independent draws: every row's neighbours are
its session mates, all on its own side, and the test flags drift nearly always.
Relabelling whole sessions keeps the false-alarm rate at alpha.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from duckcluster import SpecError
from duckcluster.drift import run_method
from duckcluster.drift._base import blocks, permutation_labels

SESSION_ROWS = 20


def sessions(n_sessions: int, seed: int, d: int = 16, shift: float = 0.0):
    """(rows, session ids): each session is 20 rows close to its own random centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_sessions, d))
    centres[:, 0] += shift
    X = np.repeat(centres, SESSION_ROWS, axis=0) + 0.05 * rng.normal(size=(n_sessions * SESSION_ROWS, d))
    ids = np.repeat([f"s{seed}_{i}" for i in range(n_sessions)], SESSION_ROWS)
    return X.astype(np.float32), ids


def null_pair(seed: int):
    B, gb = sessions(25, 2 * seed)
    C, gc = sessions(25, 2 * seed + 1)
    return B, C, blocks(gb, gc)


FAST = {"n_permutations": 199}


@pytest.mark.parametrize("method", ["knn", "mmd", "mean_shift", "classifier"])
def test_row_permutations_false_alarm_and_group_permutations_do_not(method):
    rows = [run_method(method, *null_pair(s)[:2], FAST, seed=s).p_value for s in range(8)]
    groups = [run_method(method, *null_pair(s)[:2], FAST, seed=s, groups=null_pair(s)[2]).p_value
              for s in range(8)]
    if method in ("knn", "mmd"):  # local statistics see the sessions as tight clusters
        assert sum(p < 0.05 for p in rows) >= 6, rows
    assert sum(p < 0.05 for p in groups) <= 1, groups
    assert 0.2 < np.mean(groups) < 0.8


def test_group_permutations_still_see_real_drift():
    B, gb = sessions(25, 1)
    C, gc = sessions(25, 2, shift=3.0)
    r = run_method("knn", B, C, FAST, groups=blocks(gb, gc))
    assert r.drift_detected and r.details["permutation_unit"] == "group"


def test_group_relabellings_move_whole_blocks():
    g = blocks(np.array(["a", "a", "b", "b", "b"]), np.array(["c", "a", "c"]))
    # ("a", baseline), ("b", baseline), ("a", current) and ("c", current) are four blocks
    assert len(set(g)) == 4 and g[0] == g[1] and g[2] == g[3] == g[4] and g[5] == g[7]
    assert g[6] != g[0]  # the same value on the other side is another block
    Z = permutation_labels(5, 3, 50, np.random.default_rng(0), g)
    for col in Z.T:
        for b in set(g):
            assert len(set(col[g == b])) == 1  # a block is never split
        assert len({b for b in set(g) if col[g == b][0] == 1}) == 2  # two baseline blocks


def test_group_by_needs_a_method_that_relabels():
    B, C, g = null_pair(0)
    with pytest.raises(SpecError, match="cannot relabel whole groups"):
        run_method("cluster", B, C, groups=g)
    with pytest.raises(SpecError, match="leave the max_samples of mmd NULL"):
        run_method("mmd", B, C, {"max_samples": 100}, groups=g)


def test_group_by_from_sql(con):
    X1, g1 = sessions(25, 10)
    X2, g2 = sessions(25, 11)
    X = np.concatenate([X1, X2])
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    con.register("__s", pa.table({"session_id": np.concatenate([g1, g2]),
                                  "side": np.repeat([0, 1], len(X1)), "embedding": emb}))
    con.execute("CREATE TABLE events AS SELECT * FROM __s")
    q = ("SELECT p_value, details FROM embedding_drift('(SELECT * FROM events WHERE side = 0)', "
         "'(SELECT * FROM events WHERE side = 1)', 'embedding'{})")
    row_p, _ = con.sql(q.format("")).fetchall()[0]
    group_p, details = con.sql(q.format(", group_by := 'session_id'")).fetchall()[0]
    assert row_p < 0.05 < group_p
    d = json.loads(details)
    assert d["group_by"] == "session_id" and d["n_groups"] == 50 and d["permutation_unit"] == "group"
    # an expression works too, and a NULL group is refused with the fix
    con.sql(q.format(", group_by := 'upper(session_id)'")).fetchall()
    con.execute("UPDATE events SET session_id = NULL WHERE session_id = 's11_3'")
    import duckdb

    with pytest.raises(duckdb.Error, match="group_by 'session_id' is NULL on 20 rows of the current"):
        con.sql(q.format(", group_by := 'session_id'")).fetchall()
