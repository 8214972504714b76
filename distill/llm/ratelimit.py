"""Client-side rate limits for model calls: requests per minute and tokens per minute. Pure asyncio
timing with an injectable sleep and clock, so tests run on a virtual clock."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime


class IntervalLimiter:
    """Requests per minute, spaced evenly (no bursts that a provider's per-second window would reject)."""

    def __init__(self, per_minute: int, sleep: Callable[[float], Awaitable[None]], clock: Callable[[], float]) -> None:
        self._interval = 60.0 / per_minute
        self._next = 0.0
        self._sleep = sleep
        self._clock = clock

    async def acquire(self) -> None:
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)


class TokenBucket:
    """Tokens per minute: reserve an estimate before a request, settle the difference after."""

    def __init__(self, per_minute: int, sleep: Callable[[float], Awaitable[None]], clock: Callable[[], float]) -> None:
        self._sleep = sleep
        self._clock = clock
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._rate = per_minute / 60.0
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self, tokens: int) -> None:
        # Take the tokens at once, going into debt if needed, then wait until the debt is refilled: callers
        # queue in arrival order and no wait loop can spin on rounding.
        self._refill()
        self._tokens -= min(float(tokens), self._capacity)
        if self._tokens < 0:
            await self._sleep(-self._tokens / self._rate)

    def settle(self, estimated: int, actual: int) -> None:
        self._tokens -= actual - estimated


def retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (Retry-After / retry-after-ms), if it said. An error that came back
    from a worker process (distill.llm.workers.ForwardedError) carries them as `retry_after_s`."""
    forwarded = getattr(exc, "retry_after_s", None)
    if isinstance(forwarded, (int, float)):
        return max(0.0, float(forwarded))
    candidates = [getattr(exc, "litellm_response_headers", None), getattr(getattr(exc, "response", None), "headers", None)]
    for headers in candidates:
        if not headers:
            continue
        try:
            if (ms := headers.get("retry-after-ms")) is not None:
                return max(0.0, float(ms) / 1000)
            if (value := headers.get("retry-after")) is not None:
                try:
                    return max(0.0, float(value))
                except ValueError:
                    return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, AttributeError):
            continue
    return None
