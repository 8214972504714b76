"""Verify stage: the model judges (product, candidate, kind) pairs, all of one product's shortlisted pairs in
one prompt (split only beyond `batch_size`): a score in [0, 1] per pair and a one-line reason for the pairs it
scores >= REASON_MIN_SCORE. Only pairs the prompt asked about are accepted; the model cannot add an edge, only
rate one. Which pairs are worth a judgement is decided before (`distill.stages.verify_plan`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distill.candidates.model import Candidate
from distill.llm.prompts import REASON_MIN_SCORE, RenderedPrompt, VerifyAnswer, verify_prompt
from distill.stages.common import call_llm, stage_report
from graph_schema.models import Product, Rejection, StageReport

if TYPE_CHECKING:
    from distill.llm.gateway import LLMGateway

STAGE = "verify"


@dataclass(frozen=True)
class VerifyResult:
    candidates: list[Candidate]
    """All input candidates; the judged ones carry llm_score and llm_reason."""
    rejections: list[Rejection]
    report: StageReport
    pending: list[RenderedPrompt[VerifyAnswer]]


def shortlist(
    candidates: Sequence[Candidate], prescore: Callable[[Candidate], float], *, per_source: Mapping[str, int]
) -> list[Candidate]:
    """The best `per_source[kind]` candidates of each (source, kind) by the model-free score: the judge's time
    goes where it can change the final top-k."""
    grouped: dict[tuple[str, str], list[tuple[float, Candidate]]] = defaultdict(list)
    for cand in candidates:
        grouped[(cand.source, cand.kind)].append((prescore(cand), cand))
    chosen: list[Candidate] = []
    for (_, kind), scored in sorted(grouped.items()):
        scored.sort(key=lambda pair: (-pair[0], pair[1].target))
        chosen.extend(cand for _, cand in scored[: per_source.get(kind, 0)])
    return chosen


def source_batches(ordered: Sequence[Candidate], batch_size: int | None) -> list[list[Candidate]]:
    """One batch per source product (`batch_size` None), or its pairs in chunks of `batch_size`. Batches never
    mix source products: a source whose candidates did not change renders the same prompt as last night and
    is answered from the cache, so an incremental run pays only for what changed."""
    by_source: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in ordered:
        by_source[candidate.source].append(candidate)
    return [pairs[i:i + (batch_size or len(pairs))] for _, pairs in sorted(by_source.items())
            for i in range(0, len(pairs), batch_size or len(pairs))]


def verify(
    candidates: Sequence[Candidate], to_judge: Sequence[Candidate], products_by_id: Mapping[str, Product],
    gateway: LLMGateway, *, batch_size: int | None, progress: bool = True,
) -> VerifyResult:
    started = time.perf_counter()
    ordered = sorted(to_judge, key=lambda c: (c.source, c.kind, c.target))
    batches = source_batches(ordered, batch_size)
    prompts = [
        verify_prompt(products_by_id[batch[0].source], [(products_by_id[c.target], c.kind) for c in batch])
        for batch in batches
    ]
    calls = call_llm(gateway, prompts, stage=STAGE, progress=progress, per_item=False)
    answers = {id(prompt): answer for prompt, answer in calls.answered}
    rejections = list(calls.rejections)
    judged: dict[tuple[str, str, str], tuple[float, str | None, str | None]] = {}
    for batch, prompt in zip(batches, prompts, strict=True):
        answer = answers.get(id(prompt))
        if answer is None:
            continue
        answered_by = calls.models.get(id(prompt))  # provenance: who judged, not who was configured
        asked = {c.key for c in batch}
        source = batch[0].source
        for kind, item in answer.judgements():
            key = (answer.source, item.id, kind)
            raw = json.dumps({"source": answer.source, "kind": kind, **item.model_dump(exclude_none=True)},
                             ensure_ascii=False)[:2000]
            if key not in asked:
                # A pair the prompt never asked about: an invented edge, e.g. obeying injected catalog text.
                rejections.append(Rejection(stage=STAGE, item=f"{answer.source[:120]}->{item.id[:120]}",
                                            reason="pair not in prompt", raw=raw))
                continue
            if key in judged:
                rejections.append(Rejection(stage=STAGE, item=f"{source}->{item.id}",
                                            reason="duplicate judgement", raw=raw))
                continue
            reason = " ".join((item.reason or "").split())[:300] or None
            if reason is None and item.score >= REASON_MIN_SCORE:
                # Kept without the reason the prompt asks for: the score counts, the edge is explained by its
                # evidence (template reasons) like any unjudged one, and the omission is recorded.
                rejections.append(Rejection(stage=STAGE, item=f"{source}->{item.id}",
                                            reason="no reason for a high score", raw=raw))
            judged[key] = (item.score, reason, answered_by)
        for cand in batch:
            if cand.key not in judged:
                rejections.append(Rejection(stage=STAGE, item=f"{cand.source}->{cand.target}",
                                            reason="no judgement for pair", raw=cand.kind))
    out = [
        c.model_copy(update=dict(zip(("llm_score", "llm_reason", "llm_model"), judged[c.key], strict=True)))
        if c.key in judged else c
        for c in candidates
    ]
    report = stage_report(
        STAGE, items_in=len(ordered), items_out=len(judged), rejections=rejections, started=started, llm=calls.usage
    )
    return VerifyResult(candidates=out, rejections=rejections, report=report, pending=list(calls.pending))
