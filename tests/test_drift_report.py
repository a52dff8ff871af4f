"""The HTML drift report: written by `duckcluster report drift`, self-contained, and
rendered by headless Chromium (started by the test over the DevTools pipe) without
console errors, with the plots visible in the screenshot."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import duckcluster
from duckcluster.drift.report import BASELINE_COLOR, CURRENT_COLOR, drift_report

BASELINE = "(SELECT * FROM digits WHERE label <> 9 AND id % 2 = 0)"
CURRENT = "(SELECT * FROM digits WHERE id % 2 = 1)"  # ~10% nines, never in the baseline


@pytest.fixture(scope="module")
def digits_db(tmp_path_factory):
    from duckcluster.cli.demo import load_digits_table

    path = str(tmp_path_factory.mktemp("report") / "digits.duckdb")
    con = duckcluster.connect(path)
    tbl, _ = load_digits_table()
    con.register("__d", tbl)
    con.execute("CREATE TABLE digits AS SELECT id, label, CAST(embedding AS FLOAT[64]) AS "
                "embedding FROM __d")
    con.unregister("__d")
    con.sql("SELECT cluster_create('digits_kmeans', source := '(SELECT * FROM digits WHERE "
            "label <> 9)', embedding := 'embedding', id := 'id', algorithm := 'kmeans', "
            "params := {'n_clusters': 9})").fetchall()
    con.sql("SELECT cluster_execute('digits_kmeans')").fetchall()
    con.close()
    return path


@pytest.fixture(scope="module")
def report(digits_db, tmp_path_factory):
    """The report written by the CLI, as a subprocess (the user's path)."""
    out = str(tmp_path_factory.mktemp("html") / "drift.html")
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "report", "drift", digits_db,
                        "--baseline", BASELINE, "--current", CURRENT, "--out", out,
                        "--text", "'digit_' || label"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    return out


def test_report_is_one_self_contained_file(report):
    text = Path(report).read_text(encoding="utf-8")
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', text)
    assert [a for a, _ in images] == ["2-D PCA scatter of baseline and current",
                                      "PC1 histograms of baseline and current",
                                      "Region shares of baseline and current"]
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<script" not in text
    methods = re.findall(r"<tr><td><code>(\w+)</code>", text)
    assert methods == ["knn", "mmd", "energy", "wasserstein", "kl", "classifier", "cluster",
                       "mean_shift"]
    assert "Drift detected by" in text  # the default method sees the unseen nines


def test_report_names_what_moved(report):
    """The regions table names the new content by its keywords, not by a number."""
    text = Path(report).read_text(encoding="utf-8")
    moved = text.split("<h2>What moved</h2>", 1)[1].split("<h2>", 1)[0]
    first = re.search(r"<tr><td class=kind-(\w+)>[^<]*</td><td><b>([^<]+)</b>", moved)
    assert first and first.group(1) == "new" and first.group(2).startswith("digit_9")
    assert "region " not in first.group(2)


def test_report_numbers_are_the_sql_numbers(digits_db, tmp_path):
    """The page shows what embedding_drift and embedding_drift_explain return."""
    con = duckcluster.connect(digits_db, read_only=True)
    try:
        out = drift_report(con, BASELINE, CURRENT, str(tmp_path / "r.html"),
                           methods=["mmd", "cluster"], reference="digits_kmeans")
        sql = con.execute("SELECT method, p_value, details FROM embedding_drift(?, ?, "
                          "'embedding', method := ['mmd', 'cluster'], reference := "
                          "'digits_kmeans')", [BASELINE, CURRENT]).fetchall()
        regions = con.execute("SELECT kind, baseline_share, current_share, example_ids FROM "
                              "embedding_drift_explain(?, ?, 'embedding') WHERE kind <> 'stable'",
                              [BASELINE, CURRENT]).fetchall()
    finally:
        con.close()
    text = Path(out).read_text(encoding="utf-8")
    for method, p, _ in sql:
        assert re.search(rf"<code>{method}</code></td><td class=num>[^<]+</td>"
                         rf"<td class=num>{p:.4f}</td>", text), method
    assert json.loads(sql[1][2])["reference"].startswith("run ")
    assert regions and regions[0][0] == "new"
    for kind, b, c, ids in regions[:12]:
        assert f"<td class=num>{b:.1%}</td><td class=num>{c:.1%}</td>" in text
    # without a text expression a region is named by its number and an example id
    assert f"region 1 (e.g. id {regions[0][3][0]})" in text


def test_without_text_regions_are_named_after_the_reference_labels(digits_db, tmp_path):
    """No text expression, but the reference run has labels: each region is named after
    the labelled cluster nearest its centre, never by a number."""
    path = str(tmp_path / "labelled.duckdb")
    shutil.copy(digits_db, path)
    con = duckcluster.connect(path)
    try:
        con.sql("SELECT cluster_label('digits_kmeans', text := '''digit_'' || label')").fetchall()
        labels = {r[0] for r in con.sql("SELECT label FROM cluster_centroids('digits_kmeans')"
                                        ).fetchall()}
        out = drift_report(con, BASELINE, CURRENT, str(tmp_path / "r.html"),
                           methods=["knn"], reference="digits_kmeans")
    finally:
        con.close()
    moved = Path(out).read_text(encoding="utf-8").split("<h2>What moved</h2>", 1)[1] \
        .split("<h2>", 1)[0]
    names = re.findall(r"<tr><td class=kind-\w+>[^<]*</td><td><b>([^<]+)</b>", moved)
    assert names and all(html.unescape(n).startswith("like '") for n in names), names
    assert {html.unescape(n)[6:-1] for n in names} <= labels
    assert "region " not in moved.split("</table>", 1)[0]


def test_report_errors_are_clean(digits_db, tmp_path):
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "report", "drift", digits_db,
                        "--baseline", "digits", "--current", "digitz",
                        "--out", str(tmp_path / "x.html")], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 1 and "Did you mean 'digits'?" in r.stderr
    assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "x.html")


# -- headless Chromium --------------------------------------------------------------------

def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")


class DevTools:
    """Headless Chromium over the DevTools protocol on a pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="dc-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def wire():  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--hide-scrollbars", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, pass_fds=(3, 4),
            preexec_fn=wire,  # noqa: PLW1509 (no threads run in this process's child setup)
            stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer over the DevTools pipe")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read(timeout)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, name: str, timeout: float = 60) -> dict:
        for i, m in enumerate(self.events):
            if m.get("method") == name:
                return self.events.pop(i)
        end = time.monotonic() + timeout
        while True:
            m = self._read(max(0.01, end - time.monotonic()))
            if m.get("method") == name:
                return m
            self.events.append(m)

    def console_errors(self) -> list[str]:
        errors = []
        for m in self.events:
            p = m.get("params", {})
            if m.get("method") == "Runtime.exceptionThrown":
                errors.append(str(p["exceptionDetails"]))
            elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(str(p.get("args")))
            elif m.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(str(p["entry"]))
        return errors

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):  # already gone: killed below
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def rendered(report):
    """(console errors, page facts, screenshot RGB array) of the report in Chromium."""
    from PIL import Image

    dt = DevTools(chromium_binary())
    try:
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            dt.send(f"{domain}.enable", session=s)
        size = {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        dt.send("Emulation.setDeviceMetricsOverride", size, session=s)
        dt.send("Page.navigate", {"url": "file://" + os.path.abspath(report)}, session=s)
        dt.wait_event("Page.loadEventFired")
        facts = json.loads(dt.send("Runtime.evaluate", {"returnByValue": True, "expression": """
            JSON.stringify({images: Array.from(document.images).map(i => ({
                complete: i.complete, width: i.naturalWidth, shown: i.getBoundingClientRect().width})),
              height: document.documentElement.scrollHeight,
              methods: document.querySelectorAll('tbody tr').length})"""},
                                   session=s)["result"]["value"])
        dt.send("Emulation.setDeviceMetricsOverride", {**size, "height": int(facts["height"])},
                session=s)
        shot = dt.send("Page.captureScreenshot", {"format": "png"}, session=s)
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"))
        return dt.console_errors(), facts, png
    finally:
        dt.close()


def test_page_loads_in_chromium_without_console_errors(rendered):
    errors, facts, _ = rendered
    assert errors == []
    assert len(facts["images"]) == 3
    for img in facts["images"]:
        assert img["complete"] and img["width"] == 640 and img["shown"] > 300


def test_screenshot_shows_the_plots(rendered):
    """Both series colours cover real area of the screenshot (scatter, histograms, bars)."""
    _, _, png = rendered

    def pixels_near(hex_color: str) -> int:
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(png.astype(int) - rgb).sum(axis=2) < 60).sum())

    assert png.shape[1] == 1200 and png.shape[0] > 1500
    assert pixels_near(BASELINE_COLOR) > 20_000
    assert pixels_near(CURRENT_COLOR) > 20_000
    assert (png.reshape(-1, 3).std(axis=0) > 10).all()  # not a blank page
