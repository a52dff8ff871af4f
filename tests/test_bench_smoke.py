"""The benchmark suite's smallest scale runs end to end (no timing is asserted).

``python -m bench --scale smoke`` runs every workload at its smallest size in
fresh processes and writes a Markdown table; this checks that it finishes,
that every workload produced its rows, and the results that must not depend
on the machine (assign_cluster's labels equal numpy's). Peers that are not
installed (faiss-cpu, fast-hdbscan: ``pip install 'duckcluster[bench]'``) are
skipped by the workloads themselves and named in the table's notes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(3000)
def test_smoke_scale_runs(tmp_path):
    out = tmp_path / "RESULTS.md"
    p = subprocess.run([sys.executable, "-m", "bench", "--scale", "smoke", "--repeat", "1",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=2900, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    for workload in ("assign_cluster", "time to first result", "k-means", "density pipeline",
                     "larger than memory", "quality metrics", "digits: kmeans"):
        assert workload in text, workload
    assert "labels identical to numpy: yes" in text
    assert "| workload | rows | duckcluster |" in text
