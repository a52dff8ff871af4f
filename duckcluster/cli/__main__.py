"""``python -m duckcluster.cli``: the same as the ``duckcluster`` command."""

from . import main

main()
