"""The drift report: one self-contained HTML page (``duckcluster report drift``).

What the playbook asks for, on one page: what moved, in words (the regions of
``embedding_drift_explain``: new, vanished, grown and shrunk content, named by
their keywords when a text expression is given, with shares on both sides and
examples), a 2-D PCA scatter of baseline vs current (axes fitted on the
baseline, so they mean the same thing week after week; the two sides drawn in
one shuffled order, half transparent, so neither hides the other; changed
regions named on the plot), PC1 histograms of both sides on shared bins, a
chart of the changed regions' shares, and the table of every method's
statistic, p-value and decision. Images are PNGs
inline as base64 (``data:`` URLs): the file has no external resources and opens
offline, in a mail attachment or a CI artifact. The numbers come from the SQL
functions ``embedding_drift`` and ``embedding_drift_explain`` on the same
connection, so the page and a SQL query agree.
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
from .spec import DriftSpec

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
                 title: str | None = None, text: str | None = None,
                 id: str | None = None) -> str:
    """Compute drift between two sides and write the HTML report to ``out``; returns ``out``.

    ``baseline``/``current``: a table or view, a Parquet path, a query in
    parentheses, or ``'run:<run_id>'``. ``methods``: a name, a list or
    ``'all'`` (default). ``reference``: a cluster definition whose centroids the
    ``cluster`` method uses. ``text``: a column or SQL expression whose keywords
    name the regions that moved; ``id``: the id column of their examples.
    """
    plt = _pyplot()
    emb = [embedding] if isinstance(embedding, str) else list(embedding)
    method_list = list(DRIFT_METHODS) if methods == "all" else \
        ([methods] if isinstance(methods, str) else list(methods))
    rows = _results(con, baseline, current, emb, method_list, reference, reference_run, seed,
                    alpha)
    regions = _regions(con, baseline, current, emb, text, id, seed, alpha)
    if reference is not None and not text:
        _name_by_reference(con, regions, reference, reference_run)
    spec = DriftSpec.from_dict({"embedding": emb, "seed": seed})
    with con.cursor() as cur:
        B = _drift.read_side(cur, baseline, spec.embedding, PLOT_ROWS, seed=seed,
                             role="baseline")
        C = _drift.read_side(cur, current, spec.embedding, PLOT_ROWS, seed=seed,
                             role="current")
    centres = [(region_name(r), r["centre"]) for r in regions
               if r["kind"] != "stable"][:NAMED_REGIONS]
    figures = {
        "pca": _figure(plt, _pca_scatter, B.X, C.X, centres, seed),
        "pc1": _figure(plt, _pc1_histograms, B.X, C.X),
        "regions": _figure(plt, _region_chart, regions),
    }
    page = _page(title or f"Embedding drift: {current} vs {baseline}", baseline, current, emb, rows,
                 regions, figures, B, C, alpha, text)
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


def _regions(con, baseline, current, emb, text, id_col, seed, alpha) -> list[dict[str, Any]]:
    """The rows of ``embedding_drift_explain`` (the same function), with region centres."""
    spec = DriftSpec.from_dict({"embedding": emb, "seed": seed, "alpha": alpha})
    options = {k: v for k, v in (("text", text), ("id", id_col)) if v is not None}
    with con.cursor() as cur:
        return _drift.explain_drift(cur, baseline, current, spec, options, centres=True)


def _name_by_reference(con, regions: list[dict[str, Any]], reference: str,
                       reference_run: str | None) -> None:
    """Without a text expression: name each region after the labelled cluster of the
    ``reference`` run nearest its centre ("like 'label'"), when that run has labels."""
    rows = con.execute("SELECT label, keywords, centroid FROM cluster_centroids(?, run_id := ?) "
                       "WHERE coalesce(hierarchy_level, 0) = 0 AND centroid IS NOT NULL "
                       "AND (label IS NOT NULL OR len(keywords) > 0)",
                       [reference, reference_run]).fetchall()
    if not rows:
        return
    names = [lab or ", ".join(list(kw)[:3]) for lab, kw, _ in rows]
    cents = np.asarray([c for _, _, c in rows], dtype=np.float64)
    cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    for r in regions:
        centre = np.asarray(r["centre"], dtype=np.float64)
        if r.get("label") or centre.shape[0] != cents.shape[1]:
            continue
        r["nearest_reference_label"] = names[int(np.argmax(cents @ centre))]


def region_name(r: dict[str, Any]) -> str:
    """A region's label; else the label of the nearest reference cluster; else its number
    and first example id."""
    if r.get("label"):
        return str(r["label"])
    if r.get("nearest_reference_label"):
        return f"like '{r['nearest_reference_label']}'"
    ex = r.get("example_ids") or []
    return f"region {r['region_id']}" + (f" (e.g. id {ex[0]})" if ex else "")


#: Changed regions named on the scatter plot and drawn in the region chart.
NAMED_REGIONS, CHART_REGIONS = 5, 12


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
    from ..core.projection import fit_scores

    return fit_scores(B, 2)


def _pca_scatter(fig, B: np.ndarray, C: np.ndarray, centres=(), seed: int = 42) -> None:
    proj = _baseline_pca(B)
    PB, PC = proj(B) * proj.scale, proj(C) * proj.scale
    ax = fig.add_subplot(1, 1, 1)
    P = np.concatenate([PB, PC])
    y = P[:, 1] if P.shape[1] > 1 else np.zeros(len(P))
    colors = np.array([BASELINE_COLOR] * len(PB) + [CURRENT_COLOR] * len(PC))
    # one shuffled draw order: neither side is painted over the other
    order = np.random.default_rng(seed).permutation(len(P))
    ax.scatter(P[order, 0], y[order], s=6, alpha=0.4, c=colors[order], linewidths=0)
    ax.scatter([], [], s=18, color=BASELINE_COLOR, label=f"baseline (n={len(PB):,})")
    ax.scatter([], [], s=18, color=CURRENT_COLOR, label=f"current (n={len(PC):,})")
    for name, v in centres:
        xy = proj(v[None, :])[0] * proj.scale
        ax.annotate(name if len(name) <= 32 else name[:31] + "\u2026",
                    (xy[0], xy[1] if len(xy) > 1 else 0.0), fontsize=8, ha="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0})
    ratio = proj.explained_variance_ratio
    ax.set_xlabel(f"PC1 of the baseline ({ratio[0]:.0%} of its variance)")
    if len(ratio) > 1:
        ax.set_ylabel(f"PC2 of the baseline ({ratio[1]:.0%})")
    ax.set_title("Baseline vs current on the baseline's first two components")
    ax.legend(loc="best", frameon=False)


def _pc1_histograms(fig, B: np.ndarray, C: np.ndarray) -> None:
    proj = _baseline_pca(B)
    b, c = proj(B)[:, 0] * proj.scale[0], proj(C)[:, 0] * proj.scale[0]
    bins = np.histogram_bin_edges(np.concatenate([b, c]), bins=40)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, values, color, name in ((axes[0], b, BASELINE_COLOR, "baseline"),
                                    (axes[1], c, CURRENT_COLOR, "current")):
        ax.hist(values, bins=bins, color=color, density=True)
        ax.set_title(f"PC1, {name}")
        ax.set_xlabel("PC1 of the baseline")
    axes[0].set_ylabel("density")


def _region_chart(fig, regions: list[dict[str, Any]]) -> None:
    changed = [r for r in regions if r["kind"] != "stable"][:CHART_REGIONS]
    # the biggest unchanged regions for scale, up to 8 bars in all
    stable = sorted((r for r in regions if r["kind"] == "stable"),
                    key=lambda r: -(r["baseline_share"] + r["current_share"]))
    shown = changed + stable[:max(0, 8 - len(changed))]
    ax = fig.add_subplot(1, 1, 1)
    names = [region_name(r) for r in shown]
    names = [n if len(n) <= 28 else n[:27] + "\u2026" for n in names]
    y = np.arange(len(shown))[::-1]
    ax.barh(y + 0.2, [r["baseline_share"] for r in shown], 0.4, color=BASELINE_COLOR,
            label="baseline")
    ax.barh(y - 0.2, [r["current_share"] for r in shown], 0.4, color=CURRENT_COLOR,
            label="current")
    ax.set_yticks(y, [f"{n} [{r['kind']}]" for n, r in zip(names, shown)], fontsize=8)
    ax.set_xlabel("share of rows")
    ax.set_title("Regions that changed most (both sides, same regions)")
    ax.legend(frameon=False, loc="lower right")


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
.kind-new, .kind-grown { color: #8a4b00; font-weight: 600; }
.kind-vanished, .kind-shrunk { color: #1f4e8c; font-weight: 600; }
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
    keep = ("n_tested_baseline", "n_tested_current", "sampled", "strongest_component",
            "bandwidth", "roc_auc", "pc1_wasserstein", "pc1_energy_distance",
            "new_content_share", "chi2_p_value", "n_components", "reference")
    parts = [f"{k}={_fmt(d[k], 3)}" for k in keep if k in d]
    return ", ".join(parts)


def _doc_html(method: str) -> str:
    """A method's documentation paragraph, ``code`` spans rendered."""
    text = html.escape(" ".join(DRIFT_METHODS[method].doc.split()))
    parts = text.split("``")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


_KIND_TEXT = {"new": "new", "vanished": "vanished", "grown": "grew", "shrunk": "shrank",
              "stable": "stable"}


def _moved_table(regions: list[dict[str, Any]], alpha: float) -> str:
    """The "What moved" table: changed regions first (at most 12), named."""
    e = html.escape
    changed = [r for r in regions if r["kind"] != "stable"]
    shown = changed[:CHART_REGIONS] or regions[:3]
    body = []
    for r in shown:
        examples = r.get("examples") or [f"id {i}" for i in r.get("example_ids") or []]
        ex = "<br>".join(e(x) for x in examples[:2])
        kw = ", ".join(r.get("keywords") or [])
        body.append(
            f"<tr><td class=kind-{e(r['kind'])}>{e(_KIND_TEXT[r['kind']])}</td>"
            f"<td><b>{e(region_name(r))}</b>{('<br><span class=small>' + e(kw) + '</span>') if kw else ''}</td>"
            f"<td class=num>{r['baseline_share']:.1%}</td><td class=num>{r['current_share']:.1%}</td>"
            f"<td class=num>{r['delta']:+.1%}<br><span class=small>[{r['delta_ci_low']:+.1%}, "
            f"{r['delta_ci_high']:+.1%}]</span></td>"
            f"<td class=num>{_fmt(r['p_value_adjusted'])}</td><td class=small>{ex}</td></tr>")
    lead = (f"{len(changed)} of {len(regions)} regions changed (Benjamini-Hochberg adjusted "
            f"p-value below {alpha:g})." if changed else
            f"No region changed significantly ({len(regions)} regions); the largest moves:")
    return (f"<p>{e(lead)}</p><table><thead><tr><th>what</th><th>region</th><th>baseline</th>"
            "<th>current</th><th>change [95% CI]</th><th>adjusted p</th><th>examples</th></tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table>")


def _page(title, baseline, current, emb, rows, regions, figures, B, C, alpha, text) -> str:
    e = html.escape
    n_drift = sum(1 for r in rows if r["drift_detected"])
    verdict_cls = "drift" if n_drift else "none"
    verdict = (f"Drift detected by {n_drift} of {len(rows)} methods at alpha {alpha:g}."
               if n_drift else f"No method detects drift at alpha {alpha:g} ({len(rows)} methods).")
    table = "\n".join(
        f"<tr><td><code>{e(r['method'])}</code></td><td class=num>{_fmt(r['statistic'])}</td>"
        f"<td class=num>{_fmt(r['p_value'])}</td><td class=num>{_fmt(r['p_value_adjusted'])}</td>"
        f"<td class=num>{_fmt(r['threshold'], 2)}</td>"
        f"<td class={'yes' if r['drift_detected'] else 'no'}>"
        f"{'drift' if r['drift_detected'] else 'no drift'}</td>"
        f"<td class=small>{_key_details(r['details'])}</td></tr>" for r in rows)
    notes = "\n".join(f"<li><code>{e(r['method'])}</code>: {_doc_html(r['method'])}</li>"
                      for r in rows)
    first = rows[0] if rows else {"n_baseline": B.n_rows, "n_current": C.n_rows}
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text_arg = f", text := {e(repr(text))}" if text else ""
    naming = "" if text else (" Without a text expression (<code>--text</code>) a region is "
                              "named after the nearest labelled cluster of the reference "
                              "(&ldquo;like &hellip;&rdquo;) when there is one; pass one to "
                              "name the regions by their own keywords.")
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
<h2>What moved</h2>
{_moved_table(regions, alpha)}
<p class=small>Regions: k-means of both sides' rows pooled, fitted without looking at the sides;
each region's share is compared by Fisher's exact test.{naming}</p>
<h2>Method results</h2>
<table><thead><tr><th>method</th><th>statistic</th><th>p-value</th><th>adjusted</th><th>alpha</th>
<th>decision</th><th>details</th></tr></thead><tbody>
{table}
</tbody></table>
<p class=small>The decision uses the Benjamini-Hochberg adjusted p-value over the methods shown.</p>
<h2>Pictures</h2>
<div class=grid>
<figure><img alt="2-D PCA scatter of baseline and current" src="{figures['pca']}">
<figcaption>Both sides on the baseline's first two principal components (seeded sample of
at most {PLOT_ROWS:,} rows per side), drawn in one shuffled order so neither side hides the
other; changed regions are named where their rows sit.</figcaption></figure>
<figure><img alt="PC1 histograms of baseline and current" src="{figures['pc1']}">
<figcaption>PC1 of the baseline, histogram of each side on shared bins.</figcaption></figure>
<figure><img alt="Region shares of baseline and current" src="{figures['regions']}">
<figcaption>Share of each side in the regions that changed most (and the largest unchanged
ones, for scale).</figcaption></figure>
</div>
<h2>What each method sees</h2>
<ul class=small>{notes}</ul>
<p class=small>Reproduce in SQL: <code>SELECT * FROM embedding_drift({e(repr(baseline))},
{e(repr(current))}, {e(repr(emb[0]) if len(emb) == 1 else repr(emb))}, method := 'all');</code>
and <code>SELECT * FROM embedding_drift_explain({e(repr(baseline))}, {e(repr(current))},
{e(repr(emb[0]) if len(emb) == 1 else repr(emb))}{text_arg});</code></p>
</body></html>
"""
