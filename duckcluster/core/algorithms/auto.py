"""``algorithm := 'auto'``: look at the data, pick the pipeline, never collapse.

The pipeline, chosen from n and d and recorded in ``cluster_runs.choices``:

1. **Reduction.** Inputs wider than :data:`REDUCE_ABOVE_DIMS` dimensions with at
   least :data:`REDUCE_MIN_ROWS` rows go through duckcluster's own UMAP (a
   neighbour graph: 5 components, 15 neighbours, min_dist 0, cosine), the step
   that makes sentence embeddings cluster; narrower or smaller inputs are clustered
   as they are.
2. **k-means in that space**, k swept over 2..``max_clusters`` (at most n / 5), every
   candidate fitted on every row. After UMAP, k is the smallest whose partition's
   modularity on UMAP's own neighbour graph is within
   :data:`._choose_k.MODULARITY_TOLERANCE` of the best candidate's; without a reduction,
   the one with the highest mean silhouette on a seeded sample. Candidates with two
   clusters or fewer and candidates whose largest cluster holds more than half of the
   rows are passed over (:mod:`._choose_k`). With ``n_clusters`` given, that k is used
   (a target, not a sweep).
3. **Merges of weak cuts** (after UMAP, no ``n_clusters`` given): two clusters are
   merged, the cheapest first, while merging them costs less than
   :data:`._choose_k.MERGE_TOLERANCE` modularity on the graph, down to 3 clusters and
   never into one of more than half of the rows (``choices.pipeline``'s ``merge`` step
   lists them). On overlapping categories k-means splits topics into pieces that the
   graph barely separates.

Every row gets a cluster (no noise). Measured (``bench/auto.py``, all-MiniLM-L6-v2
text sets and digits, medians of 3 seeds, ARI against the known categories / #clusters;
tuned on the first four, the last three held out): docstrings8 (8 topics) 0.561 / 10,
packages10 (10 overlapping Debian sections) 0.357 / 11, digits 0.918 / 11, demo_docs (9
stdlib topics) 0.534 / 10; manpages6 (6 manual sections) 0.428 / 12, infomanuals8 (8 GNU
manuals) 0.536 / 9, libdocs10 (10 libraries' docstrings) 0.360 / 10. The previous rule
(the smallest k within 0.01 of the best modularity, no merges): 0.567 / 8, 0.344 / 12,
0.859 / 11, 0.534 / 10; 0.429 / 13, 0.545 / 10, 0.345 / 10. ``bench/auto_rules.py``
compares the tolerances (the best-modularity k and merges of cuts under 0.005 gave
fewer clusters, manpages6 10, but lost 0.06 on demo_docs). Before that, the silhouette
in the reduced space chose 0.565 / 11, 0.315 / 20, 0.834 / 10 and 0.294 / 18 on
manpages6: it rewards splitting the tight islands UMAP makes of near-duplicate texts.
k-means told the true k on the raw vectors: 0.438, 0.346, 0.664; 0.390, 0.354, 0.201;
umap-learn + HDBSCAN collapses to 2-4 clusters on the first two; EVoC's defaults 0.413,
0.206, 0.280; 0.112, 0.151, 0.161. Why not density clustering here: HDBSCAN's clusters
are purer but leave 15-50 % of the rows of these sets as noise, and once that noise
joins its nearest cluster the ARI is below k-means's (0.50 vs 0.56 docstrings8, 0.31 vs
0.33 packages10).

Seeded: the same rows and seed give the same reduction, sweep and choice.

Warm start (a re-run of a definition, :data:`.kmeans.WARM` in the params): every
candidate k-means of the sweep starts from the previous run's clusters (the mean
positions in this run's UMAP space of their rows still present), plus new centres
seeded among the rows those fit poorly (:func:`.kmeans.warm_init`); the sweep then
decides whether a new cluster is worth it, and only cuts weaker than
:data:`WARM_MERGE_TOLERANCE` are merged after it (a re-run keeps its clusters, but a topic
whose rows left does not live on as a sliver, and k can fall from run to run).
``choices.warm_start``: kept, added.
"""

from __future__ import annotations

import numpy as np

from ..._params import Param
from . import _choose_k
from ._base import Algorithm, Fitted, explained, labels_of, random_state
from .kmeans import WARM

#: Inputs with more dimensions than this are reduced first (UMAP): sentence embeddings
#: (128-4096) and digits (64) are; low-dimensional features are clustered as they are,
#: where distances do not concentrate and k-means alone does well.
REDUCE_ABOVE_DIMS = 32
#: Fewer rows than this are clustered without a reduction (a neighbour graph of a
#: few dozen rows says little; k-means on the rows themselves is as good).
REDUCE_MIN_ROWS = 100

#: A warm-started run merges only cuts weaker than this (a cold run: :data:`._choose_k.
#: MERGE_TOLERANCE`): hysteresis, so a cut that hovers near the cold threshold does not
#: merge and re-split from run to run, while the sliver a departing topic leaves (a cut
#: of almost no modularity) still merges and the topic dies.
WARM_MERGE_TOLERANCE = 0.001

#: Above this many rows, UMAP and the k sweep run on a seeded sample of this many and
#: the other rows join the nearest centroid. Measured on 100k rows like docstrings8's
#: (bench/auto_scale.py, load 10): sample 5,000: ARI 0.548, 12 clusters, 6.2 s; 10,000:
#: 0.483, 18, 19.6 s; 20,000: 0.415, 22, 93.7 s. The modularity of the candidates keeps
#: rising with k on larger graphs (finer neighbourhoods), so a fixed sample also keeps
#: the choice as it was measured on the real sets (2.5k-6.5k rows). Joining the nearest
#: raw centroid lost nothing against a 15-NN vote among the sample (ARI 0.526 vs 0.538,
#: 0.350 vs 0.324 when 2,000 of docstrings8 / packages10 are fitted).
FIT_ROWS = 5_000

PARAMS = {
    "n_clusters": Param(int, None, low=1, nullable=True,
                        doc="about this many clusters (a target); None = chosen over a sweep "
                            "of 2..max_clusters (modularity on UMAP's graph, else silhouette)"),
    "max_clusters": Param(int, _choose_k.MAX_CLUSTERS, low=2,
                          doc="largest k of the sweep (it also stops at n / 5)"),
    "reduction": Param(str, "auto", choices=("auto", "umap", "none"),
                       doc=f"'auto': UMAP when the input has more than {REDUCE_ABOVE_DIMS} "
                           f"dimensions and at least {REDUCE_MIN_ROWS} rows"),
    "n_components": Param(int, 5, low=2, doc="dimensions of the UMAP reduction"),
    "n_neighbors": Param(int, 15, low=2, doc="neighbours of the UMAP graph"),
    "n_epochs": Param(int, None, low=1, nullable=True,
                      doc="UMAP layout epochs; None = 100 up to 10k rows, then fewer (50 from "
                          "20k rows)"),
    "fit_rows": Param(int, FIT_ROWS, low=100, nullable=True,
                      doc="above this many rows, UMAP and the k sweep run on a seeded sample "
                          "of this many and every other row joins the nearest (cosine) "
                          "centroid of the sample's clusters; None = every row"),
}


def _reduction(X: np.ndarray, p: dict) -> tuple[str, str]:
    n, d = X.shape
    if p["reduction"] == "none":
        return "none", "reduction 'none' given"
    if p["reduction"] == "umap":
        return ("umap", "reduction 'umap' given") if n >= 4 else \
            ("none", f"{n} rows: too few for UMAP")
    if d <= REDUCE_ABOVE_DIMS:
        return "none", f"{d} dimensions <= {REDUCE_ABOVE_DIMS}: clustered as they are"
    if n < REDUCE_MIN_ROWS:
        return "none", f"{n} rows < {REDUCE_MIN_ROWS}: clustered as they are"
    return "umap", (f"{d} dimensions > {REDUCE_ABOVE_DIMS}: a neighbour-graph reduction "
                    "(UMAP) first")


def _kmeans(Z: np.ndarray, k: int, seed: int, warm: np.ndarray | None = None,
            reports: dict | None = None) -> np.ndarray:
    from .kmeans import KMEANS, PARAMS as KM

    p = {name: param.default for name, param in KM.items()}
    p["n_clusters"] = k
    if warm is None:
        return KMEANS.fit_predict(Z, p, seed)
    p[WARM] = warm  # started from the previous run's clusters' means in Z
    fitted = KMEANS.fit_explained(Z, p, seed)
    if reports is not None:
        reports[k] = (fitted.choices or {}).get("warm_start")
    return fitted.labels


def _fit(X: np.ndarray, p: dict, seed: int) -> Fitted:
    n, d = X.shape
    method, why = _reduction(X, p)
    m = p["fit_rows"]
    if method != "umap" or m is None or n <= m:
        return _fit_all(X, p, seed, method, why)
    rows = np.sort(np.random.default_rng(random_state(seed)).choice(n, size=m, replace=False))
    warm = p.get(WARM)
    fitted = _fit_all(X[rows], p if warm is None else {**p, WARM: warm[rows]}, seed, method,
                      why)
    labels = _join_nearest(X, rows, fitted.labels)
    choices = {**fitted.choices, "input": {"rows": int(n), "dimensions": int(d)},
               "sample": {"rows": int(m), "of": int(n), "seeded": True,
                          "rest": "nearest centroid (cosine) of the sample's clusters"}}
    return Fitted(labels, choices)


def _join_nearest(X: np.ndarray, rows: np.ndarray, fit_labels: np.ndarray,
                  block: int = 65_536) -> np.ndarray:
    """Labels of every row of ``X``: the sample ``rows`` keep ``fit_labels``; every
    other row joins the cluster whose centroid (mean of the unit sample rows) is
    nearest by cosine, as assign_cluster would place it. Blocked: O(block x k) memory."""
    S = np.asarray(X[rows], dtype=np.float32)
    S = S / np.maximum(np.linalg.norm(S, axis=1, keepdims=True), 1e-12)
    k = int(fit_labels.max()) + 1
    C = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(C, fit_labels, S)
    C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    C = C.astype(np.float32)
    labels = np.empty(X.shape[0], dtype=np.int64)
    for s in range(0, X.shape[0], block):
        labels[s:s + block] = np.argmax(np.asarray(X[s:s + block], dtype=np.float32) @ C.T,
                                        axis=1)
    labels[rows] = fit_labels
    return labels


def _fit_all(X: np.ndarray, p: dict, seed: int, method: str, why: str) -> Fitted:
    from ..threads import limited

    n, d = X.shape
    step: dict = {"step": method, "why": why}
    Z, graph = X, None
    if method == "umap":
        from ..preprocess import auto_epochs, umap_with_graph, validate_steps

        epochs = p["n_epochs"] or auto_epochs(n)  # not the step's (HDBSCAN's) 500
        umap = {"method": "umap", "n_components": p["n_components"],
                "n_neighbors": p["n_neighbors"], "n_epochs": epochs}
        Z, graph = umap_with_graph(X, validate_steps([umap])[0][1], seed)
        step.update(n_components=int(Z.shape[1]), n_neighbors=min(p["n_neighbors"], n - 1),
                    n_epochs=epochs, metric="cosine", min_dist=0.0)
    if p["n_clusters"] is not None:
        ks = [min(p["n_clusters"], n)]
        criterion = f"n_clusters {p['n_clusters']} given: k-means with that k"
    else:
        ks = _choose_k.sweep_range(n, p["max_clusters"])
        criterion = _choose_k.CRITERION if graph is None else _choose_k.GRAPH_CRITERION
    warm = p.get(WARM)
    if warm is not None and len(warm) != n:
        warm = None
    if warm is not None and p["n_clusters"] is None:  # keep every previous cluster; the
        present = int(np.unique(warm[warm >= 0]).size)  # sweep decides what to add
        ks = [k for k in ks if k >= present] or [min(present, n)]
        criterion += (f"; warm start: k from the previous run's {present} clusters up "
                      f"(each candidate started from them), within "
                      f"{_choose_k.MODULARITY_TOLERANCE} of the best, then merges of cuts "
                      f"weaker than {WARM_MERGE_TOLERANCE}")

    reports: dict = {}

    def fit_k(R: np.ndarray, k: int) -> np.ndarray:  # warm only on these rows (not a sample)
        return _kmeans(R, k, seed, warm if warm is not None and len(R) == n else None,
                       reports)

    # small products: one BLAS/OpenMP thread is faster than two fighting on a busy machine
    with limited(1):
        if graph is None or len(ks) == 1:
            labels, k, candidates = _choose_k.choose_k(Z, fit_k, ks, seed)
        else:
            labels, k, candidates = _choose_k.choose_k_on_graph(Z, graph, fit_k, ks)
    pipeline = [step, {"step": "kmeans", "n_clusters": int(k),
                       "space": "reduced" if method == "umap" else "input"}]
    # Weak cuts are merged after a warm start too: otherwise k could only grow from run to
    # run (the sweep starts at the previous count), and a topic whose rows mostly left
    # would live on as a sliver instead of dying.
    if graph is not None and p["n_clusters"] is None and (len(ks) > 1 or warm is not None):
        tolerance = _choose_k.MERGE_TOLERANCE if warm is None else WARM_MERGE_TOLERANCE
        labels, merges = _choose_k.merge_weak(graph, labels, tolerance)
        pipeline.append({"step": "merge", "n_clusters": int(labels.max()) + 1,
                         "tolerance": tolerance, "merges": merges})
    choices = {
        "algorithm": "auto",
        "input": {"rows": int(n), "dimensions": int(d)},
        "pipeline": pipeline,
        "n_clusters": int(labels.max()) + 1,
        "criterion": criterion,
        "candidates": candidates,
    }
    if reports.get(k):  # every candidate k started from the previous clusters
        choices["warm_start"] = reports[k]
    return Fitted(labels, choices)


_explain = explained(_fit)

AUTO = Algorithm(
    name="auto",
    params=PARAMS,
    fit_predict=labels_of(_explain),
    min_rows=lambda p: p["n_clusters"] or 1,
    noise=False,
    doc="auto (the default): UMAP for high-dimensional input, then k-means with k chosen by "
        "modularity on UMAP's graph (or n_clusters as a target); what it chose is in "
        "cluster_runs.choices.",
    explain=_explain,
)
