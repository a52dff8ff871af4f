"""The drift report: one self-contained HTML page (``duckcluster report drift``).

What the playbook asks for, on one page: a 2-D PCA scatter of baseline vs
current (axes fitted on the baseline, so they mean the same thing week after
week), PC1 histograms of both sides on shared bins, a per-cluster share chart
(both sides assigned to the same centroids; -1 = fits no baseline cluster), and
the table of every method's statistic, p-value and decision. Images are PNGs
inline as base64 (``data:`` URLs): the file has no external resources and opens
offline, in a mail attachment or a CI artifact. The numbers come from the SQL
function ``embedding_drift`` on the same connection, so the page and a SQL query
agree.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from .._params import optional_import
from . import DRIFT_METHODS
from . import sides as _drift

#: Rows per side drawn in the scatter and histograms (a seeded sample).
PLOT_ROWS = 2000
BASELINE_COLOR = "#1f77b4"
CURRENT_COLOR = "#ff7f0e"


def _pyplot():
    matplotlib = optional_import("matplotlib", "report", "The drift report's plots")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def drift_report(con: duckdb.DuckDBPyConnection, baseline: str, current: str, out: str, *,
                 embedding: str | Sequence[str] = "embedding",
                 methods: str | Sequence[str] = "all", reference: str | None = None,
                 reference_run: str | None = None, seed: int = 42, alpha: float = 0.05,
                 title: str | None = None) -> str:
    """Compute drift between two sides and write the HTML report to ``out``; returns ``out``.

    ``baseline``/``current``: a table or view, a Parquet path, a query in
    parentheses, or ``'run:<run_id>'``. ``methods``: a name, a list or
    ``'all'`` (default). ``reference``: a cluster definition whose centroids the
    share chart and the ``cluster`` method use (default: k-means on the baseline).
    """
    plt = _pyplot()
    emb = [embedding] if isinstance(embedding, str) else list(embedding)
    method_list = list(DRIFT_METHODS) if methods == "all" else \
        ([methods] if isinstance(methods, str) else list(methods))
    run_cluster = "cluster" not in method_list
    rows = _results(con, baseline, current, emb, method_list + (["cluster"] if run_cluster else []),
                    reference, reference_run, seed, alpha)
    cluster_row = next(r for r in rows if r["method"] == "cluster")
    if run_cluster:
        rows = [r for r in rows if r["method"] != "cluster"]
    spec = _drift.DriftSpec.from_dict({"embedding": emb, "seed": seed})
    with con.cursor() as cur:
        B = _drift.read_side(cur, baseline, spec.embedding, PLOT_ROWS, seed=seed,
                             role="baseline")
        C = _drift.read_side(cur, current, spec.embedding, PLOT_ROWS, seed=seed,
                             role="current")
    figures = {
        "pca": _figure(plt, _pca_scatter, B.X, C.X),
        "pc1": _figure(plt, _pc1_histograms, B.X, C.X),
        "shares": _figure(plt, _share_chart, cluster_row["details"]),
    }
    page = _page(title or f"Embedding drift: {current} vs {baseline}", baseline, current, emb, rows,
                 cluster_row, figures, B, C, alpha)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out


def _results(con, baseline, current, emb, methods, reference, reference_run, seed, alpha
             ) -> list[dict[str, Any]]:
    rel = con.execute(
        "SELECT * FROM embedding_drift(?, ?, ?, method := ?, reference := ?, "
        "reference_run := ?, seed := ?, alpha := ?)",
        [baseline, current, json.dumps(emb), json.dumps(methods), reference, reference_run,
         seed, alpha])
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r)) for r in rel.fetchall()]
    for r in rows:
        r["details"] = json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]
    return rows


def _figure(plt, draw, *args) -> str:
    """Draw with ``draw(fig, *args)``; return the PNG as a base64 data URL."""
    fig = plt.figure(figsize=(6.4, 4.2), dpi=100)
    try:
        draw(fig, *args)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _baseline_pca(B: np.ndarray):
    from ._projection import fit_projection

    return fit_projection(B, 2)


def _pca_scatter(fig, B: np.ndarray, C: np.ndarray) -> None:
    proj = _baseline_pca(B)
    PB, PC = proj(B) * proj.scale, proj(C) * proj.scale
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(PB[:, 0], PB[:, 1] if PB.shape[1] > 1 else np.zeros(len(PB)), s=6, alpha=0.45,
               color=BASELINE_COLOR, label=f"baseline (n={len(PB):,})", linewidths=0)
    ax.scatter(PC[:, 0], PC[:, 1] if PC.shape[1] > 1 else np.zeros(len(PC)), s=6, alpha=0.45,
               color=CURRENT_COLOR, label=f"current (n={len(PC):,})", linewidths=0)
    ratio = proj.explained_variance_ratio
    ax.set_xlabel(f"PC1 of the baseline ({ratio[0]:.0%} of its variance)")
    if len(ratio) > 1:
        ax.set_ylabel(f"PC2 of the baseline ({ratio[1]:.0%})")
    ax.set_title("Baseline vs current on the baseline's first two components")
    ax.legend(loc="best", markerscale=3, frameon=False)


def _pc1_histograms(fig, B: np.ndarray, C: np.ndarray) -> None:
    proj = _baseline_pca(B)
    b, c = proj(B)[:, 0] * proj.scale[0], proj(C)[:, 0] * proj.scale[0]
    bins = np.histogram_bin_edges(np.concatenate([b, c]), bins=40)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, values, color, name in ((axes[0], b, BASELINE_COLOR, "baseline"),
                                    (axes[1], c, CURRENT_COLOR, "current")):
        ax.hist(values, bins=bins, color=color, alpha=0.85, density=True)
        ax.set_title(f"PC1, {name}")
        ax.set_xlabel("PC1 of the baseline")
    axes[0].set_ylabel("density")


def _share_chart(fig, details: dict) -> None:
    clusters = [c for c in details.get("clusters", [])
                if c["baseline_count"] or c["current_count"]]
    ax = fig.add_subplot(1, 1, 1)
    labels = ["new / none" if c["cluster_id"] == -1 else str(c["cluster_id"]) for c in clusters]
    x = np.arange(len(clusters))
    ax.bar(x - 0.2, [c["baseline_share"] for c in clusters], 0.4, color=BASELINE_COLOR,
           label="baseline")
    ax.bar(x + 0.2, [c["current_share"] for c in clusters], 0.4, color=CURRENT_COLOR,
           label="current")
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 12 else 0)
    ax.set_xlabel("cluster (both sides assigned to the same centroids)")
    ax.set_ylabel("share of rows")
    ax.set_title(f"Cluster shares ({details.get('reference', 'reference')})")
    ax.legend(frameon=False)


# -- HTML -------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1080px; padding: 0 1rem; color: #1d232a; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #5b6570; margin-top: 0; }
.verdict { padding: .7rem 1rem; border-radius: 6px; font-weight: 600; margin: 1rem 0; }
.verdict.drift { background: #fde8e6; color: #8a1c10; }
.verdict.none { background: #e6f4ea; color: #1b5e20; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #dde2e7; vertical-align: top; }
th { background: #f4f6f8; }
td.num { text-align: right; }
.yes { color: #8a1c10; font-weight: 600; } .no { color: #1b5e20; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 1rem; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { color: #5b6570; font-size: .9rem; }
code { background: #f4f6f8; padding: 0 .25rem; border-radius: 3px; }
.small { font-size: .88rem; color: #5b6570; }
"""


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "&ndash;"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 10**6):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def _key_details(d: dict) -> str:
    keep = ("n_tested_baseline", "n_tested_current", "sampled", "bandwidth", "roc_auc",
            "pc1_wasserstein", "pc1_energy_distance", "new_content_share", "chi2_p_value",
            "n_components", "reference")
    parts = [f"{k}={_fmt(d[k], 3)}" for k in keep if k in d]
    return ", ".join(parts)


def _doc_html(method: str) -> str:
    """A method's documentation paragraph, ``code`` spans rendered."""
    text = html.escape(" ".join(DRIFT_METHODS[method].doc.split()))
    parts = text.split("``")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _page(title, baseline, current, emb, rows, cluster_row, figures, B, C, alpha) -> str:
    e = html.escape
    n_drift = sum(1 for r in rows if r["drift_detected"])
    verdict_cls = "drift" if n_drift else "none"
    verdict = (f"Drift detected by {n_drift} of {len(rows)} methods at alpha {alpha:g}."
               if n_drift else f"No method detects drift at alpha {alpha:g} ({len(rows)} methods).")
    table = "\n".join(
        f"<tr><td><code>{e(r['method'])}</code></td><td class=num>{_fmt(r['statistic'])}</td>"
        f"<td class=num>{_fmt(r['p_value'])}</td><td class=num>{_fmt(r['threshold'], 2)}</td>"
        f"<td class={'yes' if r['drift_detected'] else 'no'}>"
        f"{'drift' if r['drift_detected'] else 'no drift'}</td>"
        f"<td class=small>{_key_details(r['details'])}</td></tr>" for r in rows)
    cd = cluster_row["details"]
    moved = sorted((c for c in cd.get("clusters", []) if c["baseline_count"] or c["current_count"]),
                   key=lambda c: -abs(c["delta"]))[:8]
    shares = "\n".join(
        f"<tr><td>{'new / none' if c['cluster_id'] == -1 else c['cluster_id']}</td>"
        f"<td class=num>{c['baseline_share']:.1%}</td><td class=num>{c['current_share']:.1%}</td>"
        f"<td class=num>{c['delta']:+.1%}</td></tr>" for c in moved)
    notes = "\n".join(f"<li><code>{e(r['method'])}</code>: {_doc_html(r['method'])}</li>"
                      for r in rows)
    first = rows[0] if rows else {"n_baseline": B.n_rows, "n_current": C.n_rows}
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p class=meta>baseline <code>{e(baseline)}</code> ({first['n_baseline']:,} rows) &middot;
current <code>{e(current)}</code> ({first['n_current']:,} rows) &middot; generated {generated}
by duckcluster</p>
<div class="verdict {verdict_cls}">{e(verdict)}</div>
<h2>Method results</h2>
<table><thead><tr><th>method</th><th>statistic</th><th>p-value</th><th>alpha</th><th>decision</th>
<th>details</th></tr></thead><tbody>
{table}
</tbody></table>
<h2>Pictures</h2>
<div class=grid>
<figure><img alt="2-D PCA scatter of baseline and current" src="{figures['pca']}">
<figcaption>Both sides on the baseline's first two principal components (seeded sample of
at most {PLOT_ROWS:,} rows per side). Look for shifted means, changed spread and new
groups.</figcaption></figure>
<figure><img alt="PC1 histograms of baseline and current" src="{figures['pc1']}">
<figcaption>PC1 of the baseline, histogram of each side on shared bins.</figcaption></figure>
<figure><img alt="Per-cluster shares of baseline and current" src="{figures['shares']}">
<figcaption>Share of each side per cluster ({cd.get('reference', 'reference centroids')});
"new / none" are rows below the assignment threshold
({_fmt(cd.get('assignment_threshold'), 3)}), which fit no cluster:
{cd.get('current_unassigned_share', cd.get('new_content_share', 0)):.1%} of current rows vs
{cd.get('baseline_unassigned_share', 0):.1%} of baseline rows. New content (kinds the
baseline barely has): {cd.get('new_content_share', 0):.1%} of current rows.</figcaption></figure>
<div><h2 style="margin-top:0">Clusters that moved most</h2>
<table><thead><tr><th>cluster</th><th>baseline</th><th>current</th><th>delta</th></tr></thead>
<tbody>{shares}</tbody></table>
<p class=small>Jensen-Shannon divergence of the shares {_fmt(cluster_row['statistic'])},
exact permutation p-value {_fmt(cluster_row['p_value'])}.</p></div>
</div>
<h2>What each method sees</h2>
<ul class=small>{notes}</ul>
<p class=small>Reproduce in SQL: <code>SELECT * FROM embedding_drift({e(repr(baseline))},
{e(repr(current))}, {e(repr(emb[0]) if len(emb) == 1 else repr(emb))}, method := 'all');</code></p>
</body></html>
"""
