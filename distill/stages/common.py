"""What every model-facing stage shares: `call_llm` (prompts through the gateway, failures turned into
rejections) and `stage_report` (the StageReport of one stage call). Owns no prompt and no stage logic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import BaseModel

from distill.llm.prompts import RenderedPrompt
from graph_schema.models import LLMUsage, Rejection, StageReport

if TYPE_CHECKING:
    from distill.llm.gateway import CallResult, LLMGateway

A = TypeVar("A", bound=BaseModel)


@dataclass
class LLMCalls(Generic[A]):
    """The answers of one LLM stage, split into the usable and the rest (failed or still pending)."""

    answered: list[tuple[RenderedPrompt[A], A]] = field(default_factory=list)
    pending: list[RenderedPrompt[A]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    usage: LLMUsage = field(default_factory=LLMUsage)
    models: dict[int, str] = field(default_factory=dict)
    """id(prompt) -> the model that answered it (a fallback model when the primary was unavailable)."""


def call_llm(
    gateway: LLMGateway, prompts: Sequence[RenderedPrompt[A]], *, stage: str, progress: bool, per_item: bool = True
) -> LLMCalls[A]:
    """Run prompts through the gateway; a failed prompt becomes one rejection per product it was about
    (`per_item`), or one for the whole prompt when the stage records its own items (verify: per pair)."""
    out: LLMCalls[A] = LLMCalls()
    if not prompts:
        return out
    before = gateway.usage(stage)
    results: list[CallResult[A]] = gateway.run_many(prompts, stage=stage, progress=progress)
    for result in results:
        if result.pending:
            out.pending.append(result.prompt)
        elif result.value is not None:
            out.answered.append((result.prompt, result.value))
            if result.model is not None:
                out.models[id(result.prompt)] = result.model
        else:
            detail = result.rejection.reason if result.rejection is not None else "no answer"
            raw = result.rejection.raw if result.rejection is not None else None
            items = result.prompt.item_ids if per_item else (",".join(result.prompt.item_ids)[:256],)
            for pid in items or ("?",):
                out.rejections.append(Rejection(stage=stage, item=pid, reason=f"llm call failed: {detail}"[:200],
                                                raw=raw))
    after = gateway.usage(stage)
    out.usage = _usage_delta(after, before)
    return out


def _usage_delta(after: LLMUsage, before: LLMUsage) -> LLMUsage:
    """Usage of this call of the stage alone (a gateway accumulates per stage name over its lifetime)."""
    return LLMUsage(
        calls=max(after.calls - before.calls, 0),
        cached_calls=max(after.cached_calls - before.cached_calls, 0),
        failed_calls=max(after.failed_calls - before.failed_calls, 0),
        input_tokens=max(after.input_tokens - before.input_tokens, 0),
        output_tokens=max(after.output_tokens - before.output_tokens, 0),
        cost_usd=max(after.cost_usd - before.cost_usd, 0.0),
    )


def reason_counts(rejections: Sequence[Rejection]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rejection in rejections:
        key = rejection.reason.split(":", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def stage_report(
    stage: str,
    *,
    items_in: int,
    items_out: int,
    rejections: Sequence[Rejection],
    started: float,
    llm: LLMUsage | None = None,
) -> StageReport:
    """The StageReport of a model-facing stage: counts, rejection reasons, usage, wall time since `started`."""
    return StageReport(
        stage=stage,
        items_in=items_in,
        items_out=items_out,
        rejected=len(rejections),
        rejection_reasons=reason_counts(rejections),
        llm=llm or LLMUsage(),
        wall_seconds=time.perf_counter() - started,
    )
