"""Errors of the distiller, one tree. Foreign errors (polars, litellm, neo4j) are translated in the adapter
that meets them, with `raise ... from exc`; retry code tests the type, never a message string.

    ShelfgraphError
    ├── CatalogError              the catalog cannot be read or has too many bad rows
    │   └── TooManyRejected       (distill.catalog) carries the IngestReport with every row error
    ├── ConfigError               a setting is missing or inconsistent
    ├── StoreError                a graph store failed to publish or read
    │   ├── VersionNotFound       the requested graph version does not exist
    │   └── PublisherBusy         another publisher holds the store's publish lease
    ├── LLMError                  a model call failed
    │   ├── TransientLLMError     worth retrying: rate limit, timeout, 5xx, connection
    │   ├── TerminalLLMError      not worth retrying: auth, bad request, context window
    │   └── BudgetExceeded        the run's money/token budget would be exceeded; state is resumable
    └── StageError                a pipeline stage cannot run (missing input of an earlier stage)
"""


class ShelfgraphError(Exception):
    """Base of every error shelfgraph raises on purpose."""


class CatalogError(ShelfgraphError):
    pass


class ConfigError(ShelfgraphError):
    pass


class StoreError(ShelfgraphError):
    pass


class PublisherBusy(StoreError):
    """Another live publisher is writing to the same store; nothing was written (try again later)."""


class VersionNotFound(StoreError):
    pass


class LLMError(ShelfgraphError):
    pass


class TransientLLMError(LLMError):
    pass


class TerminalLLMError(LLMError):
    pass


class BudgetExceeded(LLMError):
    pass


class StageError(ShelfgraphError):
    pass
