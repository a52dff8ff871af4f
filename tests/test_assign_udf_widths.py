"""assign_cluster through the FLOAT[d]-typed UDFs equals the generic FLOAT[] path.

The macro dispatches on ``typeof(embedding)``: widths in ``_ASSIGN_DIMS`` reach a
UDF typed FLOAT[d] (no array-to-list cast), others the FLOAT[] UDF. Both must
give the same rows, across the 2,048-row vector boundary and with NULLs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import duckcluster
from duckcluster.functions.core import _ASSIGN_DIMS


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    d = 64
    assert d in _ASSIGN_DIMS
    rng = np.random.default_rng(3)
    C = rng.normal(size=(5, d)).astype(np.float32)
    X = (C[rng.integers(0, 5, 5000)] + 0.3 * rng.normal(size=(5000, d))).astype(np.float32)
    c = duckcluster.connect(str(tmp_path_factory.mktemp("w") / "w.duckdb"))
    c.register("__t", pa.table({"doc_id": np.arange(len(X)),
                                "e": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d)}))
    c.execute(f"CREATE TABLE docs AS SELECT doc_id, CASE WHEN doc_id % 997 = 5 THEN NULL "
              f"ELSE CAST(e AS FLOAT[{d}]) END AS embedding FROM __t")
    c.sql("SELECT cluster_create('w', source := 'docs', embedding := 'embedding', "
          "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5})").fetchall()
    c.sql("SELECT cluster_execute('w')").fetchall()
    yield c
    c.close()


def test_typed_udf_is_used(con):
    plan = con.sql("EXPLAIN SELECT assign_cluster(embedding, 'w') FROM docs").fetchall()[0][1]
    assert "_dc_assign_f64" in plan


def test_typed_and_generic_paths_agree(con):
    rows = con.sql("""
        SELECT doc_id,
               assign_cluster(embedding, 'w', threshold := 0.3) AS typed,
               assign_cluster(CAST(embedding AS FLOAT[]), 'w', threshold := 0.3) AS generic,
               assign_cluster(CAST(embedding AS DOUBLE[64]), 'w', threshold := 0.3) AS dbl,
               assign_cluster_detail(embedding, 'w') AS d_typed,
               assign_cluster_detail(CAST(embedding AS FLOAT[]), 'w') AS d_generic
        FROM docs ORDER BY doc_id""").fetchall()
    assert len(rows) == 5000
    assert sum(r[1] is None for r in rows) == sum(r[0] % 997 == 5 for r in rows) > 0
    assert all(r[1] == r[2] == r[3] for r in rows)
    assert all(r[4] == r[5] for r in rows)
    assert len({r[1] for r in rows} - {None, -1}) == 5
