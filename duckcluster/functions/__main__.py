"""``python -m duckcluster.functions``: print the generated SQL function reference."""

from . import reference_markdown

print(reference_markdown(), end="")
