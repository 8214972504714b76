"""Retrying one request: the repair prompt after an invalid answer, the JSON-mode downgrade order, the
backoff delay (the provider's Retry-After, else full jitter) and the per-model circuit breaker. Decides on
error types (distill.errors), never on message text; sends nothing itself (the gateway does).
"""

from __future__ import annotations

import random

from distill.errors import RateLimited, TransientLLMError, WorkerLost
from distill.llm.answers import FormatLevel
from distill.llm.ratelimit import retry_after

# Sent after an answer that did not validate. Fixed text (no catalog data), so it lives with the retry logic.
REPAIR_INSTRUCTION = (
    "Your previous answer could not be used: {error}\n"
    "Reply again with only the corrected JSON, matching the requested structure exactly."
)
FORMAT_LEVELS: tuple[FormatLevel, ...] = ("json_schema", "json_object", "none")


class Exhausted(Exception):
    """Internal: a model kept failing with transient errors for one prompt."""


def backoff_delay(
    attempt: int, exc: BaseException, rng: random.Random, *, base: float, cap: float, retry_after_cap: float
) -> float:
    asked = retry_after(exc)
    if asked is not None:
        return min(asked, retry_after_cap)
    # Full jitter: spreads a burst of 429s so the retries do not collide again.
    return rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))


class CircuitBreaker:
    """`failures` failed requests in a row (no answer between them) mark a model down for the rest of the run,
    so an unreachable server stops the run instead of failing every prompt."""

    def __init__(self, failures: int) -> None:
        self._failures = failures
        self.streak: dict[str, int] = {}  # model -> failed requests since its last answer
        self.down: dict[str, str] = {}  # model -> why the breaker opened; no more requests go to it
        self.last_cause: dict[str, str] = {}

    def answered(self, model: str) -> None:
        self.streak[model] = 0

    def failed(self, model: str, error: TransientLLMError) -> None:
        self.last_cause[model] = error.cause
        if isinstance(error, (RateLimited, WorkerLost)):
            return  # the provider is up and answered (429), or never got to fail (our worker died); retries handle it
        self.streak[model] = self.streak.get(model, 0) + 1
        if self.streak[model] >= self._failures:
            self.down.setdefault(model, f"{self.last_cause[model]} ({self.streak[model]} failed requests in a row)")
