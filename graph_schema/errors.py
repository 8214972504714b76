"""The root of shelfgraph's error tree and the errors of the graph-store contract (`graph_schema.store`).

They live here, below both the distiller and the stores, so that `graph_store` and `serve` can raise and
catch them without importing `distill`. The whole tree is drawn in `distill/errors.py`, which re-exports these.
"""


class ShelfgraphError(Exception):
    """Base of every error shelfgraph raises on purpose."""


class StoreError(ShelfgraphError):
    pass


class PublisherBusy(StoreError):
    """Another live publisher is writing to the same store; nothing was written (try again later)."""


class VersionNotFound(StoreError):
    pass
