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

import numpy as np
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


# -- errors and progress in a kernel; pictures with names ----------------------------------


def run_cells(workdir: Path, *sources: str):
    """Run ``sources`` as the cells of a fresh notebook; errors stay in the outputs."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in sources])
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def test_errors_are_one_line_in_a_kernel(tmp_path):
    """With the extension loaded, a duckcluster error raised through SQL shows as its one
    line (no traceback, no DuckDB UDF wrapping); DuckDB's own errors as DuckDB says them."""
    nb = run_cells(
        tmp_path,
        "%load_ext duckcluster.notebook\nimport duckcluster\ncon = duckcluster.connect()",
        "con.sql(\"SELECT cluster_execute('missing')\").fetchall()",
        "con.sql('SELECT * FROM nope').fetchall()",
    )
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert len(errors) == 2
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    first = [ansi.sub("", line) for line in errors[0]["traceback"]]
    assert first == ["UnknownNameError: No cluster definition named 'missing'. Existing "
                     "definitions: none yet. Create one with SELECT cluster_create('missing', "
                     "source := ..., embedding := ...)."]
    second = [ansi.sub("", line) for line in errors[1]["traceback"]]
    assert second[0] == "Catalog Error: Table with name nope does not exist!"


def test_progress_display_shows_percent_and_eta():
    """Counted work (here UMAP layout epochs) shows a bar with % done and an ETA; stage
    messages are kept with their times."""
    from duckcluster.notebook import Progress

    p = Progress()
    p._show = lambda: None  # no IPython display outside a kernel; the rendering is tested
    p.report("topics: preprocessing")
    p.report("UMAP layout epochs", 10, 200)
    time.sleep(0.05)
    p.report("UMAP layout epochs", 100, 200)
    html_text, text = p._repr_html_(), repr(p)
    assert '<progress value="0.5000" max="1"' in html_text
    assert "UMAP layout epochs 100/200 · 50% · ETA" in html_text
    assert "topics: preprocessing" in text and "50% · ETA" in text
    p.finish()
    assert "done in" in repr(p) and "ETA" not in repr(p)


def _words(k: int) -> list[str]:
    syllables = ["ba", "ko", "mi", "ru", "te", "so", "la", "vi", "ne", "zu"]
    return [syllables[i % 10] + syllables[(i // 10 + 3) % 10] + "nar" for i in range(k)]


def _named_run(con, k: int, d: int, n_per: int = 30, algorithm: str = "kmeans"):
    """A run of k blobs (kmeans, or auto told k) whose member texts give each cluster its
    own word."""
    from conftest import blobs, load_table

    X, truth = blobs(n_per=n_per, k=k, d=d, spread=0.05, seed=3)
    words = _words(k)
    texts = [f"{words[t]} {words[t]} shared filler text number {i % 7}"
             for i, t in enumerate(truth)]
    load_table(con, "docs", X, body=texts)
    con.sql("SELECT cluster_create('topics', 'docs', 'embedding', id := 'doc_id', "
            f"algorithm := '{algorithm}', params := {{'n_clusters': {k}}})").fetchall()
    con.sql("SELECT cluster_execute('topics')").fetchall()
    con.sql("SELECT cluster_label('topics')").fetchall()


def _visible_texts(ax):
    return [t for t in ax.texts if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("k,d,algorithm", [(4, 3, "kmeans"), (50, 16, "kmeans"),
                                           (50, 48, "auto")])
def test_plot_clusters_names_clusters(k, d, algorithm):
    """Clusters are named by their keywords at (or beside) the clusters, never by number;
    no legend; no two names overlap; neighbouring clusters get different colours. On the
    PCA map (kmeans) and on the graph map (auto on 48-d input lays out its UMAP graph)."""
    import matplotlib

    matplotlib.use("Agg")
    import duckcluster
    from duckcluster.notebook import COLOUR_NEIGHBOURS, cluster_names, plot_clusters

    con = duckcluster.connect()
    try:
        _named_run(con, k, d, algorithm=algorithm)
        names = cluster_names(con, "topics")
        assert len(names) == k
        ax = plot_clusters(con, "topics")
        kind = "graph" if algorithm == "auto" else "PCA"
        assert f"{kind} map" in ax.get_title()
    finally:
        con.close()
    texts = _visible_texts(ax)
    shown = " ".join(t.get_text().replace("\n", " ") for t in texts)
    words = _words(k)
    assert len(texts) == k
    assert all(w in shown for w in words), shown  # every cluster by its word
    assert not any(t.get_text().strip().isdigit() for t in texts)
    assert ax.get_legend() is None

    renderer = ax.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlaps = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                if boxes[i].overlaps(boxes[j])]
    assert overlaps == []
    # one scatter per cluster after the noise layer; colours of nearest centres differ
    clusters = [c for c in ax.collections if len(c.get_offsets())]
    centres = np.array([np.median(np.asarray(c.get_offsets()), axis=0) for c in clusters])
    colours = [tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in clusters]
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    for i in range(len(clusters)):
        for j in np.argsort(dist[i])[:min(COLOUR_NEIGHBOURS, 5, len(clusters) - 1)]:
            assert colours[i] != colours[j], (i, j)


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
