"""The public surface is exactly __all__, and the docstring examples run."""

import doctest

import duckcluster


def test_exported_members():
    public = {n for n in dir(duckcluster) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(duckcluster, n)).__name__ == "module"}
    assert public - modules == set(duckcluster.__all__) - {"__version__"}


def test_error_tree():
    assert issubclass(duckcluster.SpecError, ValueError)
    assert issubclass(duckcluster.UnknownNameError, duckcluster.SpecError)
    assert issubclass(duckcluster.MissingDependencyError, ImportError)
    for name in ("SpecError", "DataError", "RunNotFoundError", "RunFailedError"):
        assert issubclass(getattr(duckcluster, name), duckcluster.DuckclusterError)


def test_docstrings_run():
    failures, _ = doctest.testmod(duckcluster)
    assert failures == 0


def test_unregister_then_install_again():
    from duckcluster import functions as _sql

    con = duckcluster.connect()
    try:
        _sql.unregister(con)
        duckcluster.install(con)
        assert con.sql("SELECT count(*) FROM cluster_list()").fetchall() == [(0,)]
    finally:
        con.close()


def test_connect_imports_no_heavy_library():
    """Every `duckcluster sql` call and dbt run is a fresh process: opening a
    connection must not import what only a fit, a drift test or a report needs
    (scipy.stats alone took ~3 s of every connect())."""
    import subprocess
    import sys

    code = ("import sys, duckcluster; duckcluster.connect(':memory:').close(); "
            "print(' '.join(m for m in ('scipy.stats', 'sklearn', 'umap', 'hdbscan', "
            "'numba', 'pynndescent', 'ray', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at connect(): {out.stdout.strip()}"
