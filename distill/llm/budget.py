"""The money/token budget of one gateway (one run) and the per-stage usage counters. A request reserves its
estimated tokens and cost before it is sent and settles the real figures after; a request that would break the
budget is never sent (`BudgetStop`), and the gateway turns that into BudgetExceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from graph_schema.models import LLMUsage


class BudgetStop(Exception):
    """Internal: starting another request would exceed the budget."""


@dataclass
class StageCounters:
    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def usage(self) -> LLMUsage:
        return LLMUsage(**self.__dict__)


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    # ~4 characters per token plus per-message framing: only used for budget and TPM reservations.
    return sum(len(m["content"]) for m in messages) // 4 + 8 * len(messages)


class Budget:
    """Spent and reserved USD and tokens against `usd` / `tokens` (None: no limit)."""

    def __init__(self, usd: float | None, tokens: int | None, *, expected_output_tokens: int) -> None:
        self.usd = usd
        self.tokens = tokens
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self._reserved_usd = 0.0
        self._reserved_tokens = 0
        self._expected_output = expected_output_tokens
        self._output_seen = (0, 0)  # (tokens, answers): running mean for output estimates
        self.hit = False

    def saw_output(self, output_tokens: int) -> None:
        seen_tokens, seen_answers = self._output_seen
        self._output_seen = (seen_tokens + output_tokens, seen_answers + 1)

    def admit(self, messages: list[dict[str, str]], cost_of: Callable[[int, int], float]) -> tuple[int, float]:
        """Reserve this request's estimated tokens and cost (`cost_of(input, output)`), or raise BudgetStop if
        they would break the budget."""
        if self.hit:
            raise BudgetStop
        seen_tokens, seen_answers = self._output_seen
        output = seen_tokens // seen_answers if seen_answers else self._expected_output
        tokens = estimate_tokens(messages) + output
        cost = cost_of(estimate_tokens(messages), output)
        if (self.usd is not None and self.spent_usd + self._reserved_usd + cost > self.usd) or (
            self.tokens is not None and self.spent_tokens + self._reserved_tokens + tokens > self.tokens
        ):
            self.hit = True
            raise BudgetStop
        self._reserved_usd += cost
        self._reserved_tokens += tokens
        return tokens, cost

    def release(self, estimate: tuple[int, float]) -> None:
        self._reserved_tokens -= estimate[0]
        self._reserved_usd -= estimate[1]

    def settle(self, estimate: tuple[int, float], tokens: int, cost: float) -> None:
        self.release(estimate)
        self.spent_tokens += tokens
        self.spent_usd += cost
