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
    from duckcluster import _sql

    con = duckcluster.connect()
    try:
        _sql.unregister(con)
        duckcluster.install(con)
        assert con.sql("SELECT count(*) FROM cluster_list()").fetchall() == [(0,)]
    finally:
        con.close()
