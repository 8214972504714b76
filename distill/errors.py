"""Errors of the distiller, one tree. Foreign errors (polars, litellm, neo4j) are translated in the adapter
that meets them, with `raise ... from exc`; retry code tests the type, never a message string.

    ShelfgraphError
    ├── CatalogError              the catalog cannot be read or has too many bad rows
    │   └── TooManyRejected       (distill.ingest.catalog) carries the IngestReport with every row error
    ├── ConfigError               a setting is missing or inconsistent
    ├── EncoderError              (distill.evidence.embed_pool) a text-encoder worker process failed or died
    ├── StoreError                a graph store failed to publish or read
    │   ├── VersionNotFound       the requested graph version does not exist
    │   └── PublisherBusy         another publisher holds the store's publish lease
    ├── LLMError                  a model call failed
    │   ├── TransientLLMError     worth retrying: rate limit, timeout, 5xx, connection
    │   │   ├── RateLimited       HTTP 429: the provider is up and asks us to wait (never opens the breaker)
    │   │   └── WorkerLost        an LLM worker process (llm_processes) died during the call: retried, never
    │   │                         opens the breaker (the provider did not fail)
    │   ├── TerminalLLMError      not worth retrying: auth, bad request, context window; the run stops
    │   │   ├── PromptRefused     a content filter refused this one prompt: recorded, the run goes on
    │   │   ├── FormatRejected    the provider refused `response_format`: JSON mode is weakened, then retried
    │   │   └── ModelUnavailable  circuit breaker: every model failed N requests in a row, or every call of a
    │   │                         stage failed (connection refused, DNS, auth, 5xx); nothing is published
    │   └── BudgetExceeded        the run's money/token budget would be exceeded; state is resumable
    └── StageError                a pipeline stage cannot run (missing input of an earlier stage)
        └── QualityGateFailed     (nightly) the new version is clearly worse than the current one

ShelfgraphError and the StoreError branch are defined in `graph_schema.errors` (the stores and the server
raise them without importing distill) and re-exported here.
"""

from graph_schema.errors import PublisherBusy, ShelfgraphError, StoreError, VersionNotFound


class CatalogError(ShelfgraphError):
    pass


class ConfigError(ShelfgraphError):
    pass


class EncoderError(ShelfgraphError):
    """A worker process of the text encoder crashed, was killed, or raised; the message names the encoder,
    the worker's pid and exit code (or its traceback)."""


class LLMError(ShelfgraphError):
    """`cause`: a few words on why (e.g. "connection refused", "authentication failed (HTTP 401)")."""

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message


class TransientLLMError(LLMError):
    pass


class RateLimited(TransientLLMError):
    pass


class WorkerLost(TransientLLMError):
    """The worker process making the call (distill.llm.workers) died before it answered."""


class TerminalLLMError(LLMError):
    pass


class PromptRefused(TerminalLLMError):
    """Terminal for one prompt only: asking again gets the same refusal, other prompts are unaffected."""


class FormatRejected(TerminalLLMError):
    """The request is refused because of its `response_format`; the same prompt without it may work."""


class ModelUnavailable(TerminalLLMError):
    """No model can answer (the circuit breaker opened). `cause` names why: connection refused, DNS, ..."""


class BudgetExceeded(LLMError):
    pass


class StageError(ShelfgraphError):
    pass


class QualityGateFailed(StageError):
    """The nightly gate refused a version: it scored clearly worse than the current one on the label fold."""


__all__ = [
    "BudgetExceeded", "CatalogError", "ConfigError", "FormatRejected", "LLMError", "ModelUnavailable",
    "PromptRefused", "PublisherBusy", "QualityGateFailed", "RateLimited", "ShelfgraphError", "StageError",
    "StoreError", "TerminalLLMError", "TransientLLMError", "VersionNotFound", "WorkerLost",
]
