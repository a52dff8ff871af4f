"""notebooks/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient).

Also checks what the notebook promises: images (cluster scatter, centroid
images, drift picture), no drift for the held-out rows and drift for the shifted
set, and no machine paths in the outputs. `python tests/test_notebook.py --write`
re-executes the notebook and saves its outputs into the repository.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("sql", reason="jupysql is not installed")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
# Absolute paths that would leak the machine the outputs were made on.
PATH_RE = re.compile(r"(/(home|tmp|work|Users|root|var|private|opt)/[\w.-]+)|([A-Za-z]:\\\\)")


def execute(workdir: Path) -> tuple[object, float]:
    """Run every cell in a fresh kernel with cwd=workdir; returns (notebook, seconds)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ.setdefault("PLOOMBER_STATS_ENABLED", "false")  # jupysql: no telemetry calls
    os.environ.setdefault("PLOOMBER_VERSION_CHECK_DISABLED", "true")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == kind or kind in o.get("data", {})]


def text_of(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append(o.get("text", ""))
        parts.extend(str(v) for v in o.get("data", {}).values())
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    return execute(tmp_path_factory.mktemp("notebook"))


def test_runs_top_to_bottom(executed):
    nb, seconds = executed
    assert not outputs(nb, "error")
    assert seconds < 120, f"the quickstart should stay quick; it took {seconds:.0f} s"


def test_has_images_and_tables(executed):
    nb, _ = executed
    # cluster scatter, centroid images, drift picture
    assert len(outputs(nb, "image/png")) >= 3
    assert len(outputs(nb, "text/html")) >= 6


def test_shows_progress_quality_and_drift(executed):
    nb, _ = executed
    code = [c for c in nb.cells if c.cell_type == "code"]
    run_cell = next(c for c in code if "cluster_execute('digits')" in c.source)
    assert "fitting kmeans" in text_of(run_cell) and "done in" in text_of(run_cell)
    quality = next(c for c in code if "FROM cluster_quality('digits')" in c.source)
    assert "silhouette" in text_of(quality)
    ari = next(c for c in code if "adjusted_rand_score(" in c.source)
    assert float(text_of(ari).strip()) > 0.5
    no_drift, drift = [c for c in code if "embedding_drift('digits'" in c.source]
    assert "true" not in text_of(no_drift).lower().split("drift_detected", 1)[1]
    assert text_of(drift).lower().count("true") >= 3


def test_no_machine_paths_in_outputs(executed):
    nb, _ = executed
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not PATH_RE.search(text_of(cell)), text_of(cell)


def test_saved_notebook_has_outputs():
    """The notebook in the repository was saved executed, images included."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert len(outputs(nb, "image/png")) >= 3
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not PATH_RE.search(text_of(cell))


if __name__ == "__main__":  # python tests/test_notebook.py --write
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/test_notebook.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        nb, seconds = execute(Path(tmp))
    for cell in nb.cells:
        if cell.cell_type == "code" and PATH_RE.search(text_of(cell)):
            sys.exit(f"a machine path in the outputs of:\n{cell.source}\n{text_of(cell)}")
    if outputs(nb, "error"):
        sys.exit("the notebook raised an error; not saved")
    nbformat.write(nb, NOTEBOOK)
    print(f"executed in {seconds:.1f} s; saved {NOTEBOOK.name}")
