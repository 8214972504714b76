"""Enrich stage: normalized key attributes and shopper keyphrases per product, several products per prompt.
Every answer is checked against the ids of its own prompt; anything else is dropped and recorded. Never
touches catalog fields (id, title, ...): the model adds, it does not rewrite.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distill.llm.prompts import (
    MAX_ATTRIBUTE_VALUE,
    MAX_KEYPHRASE,
    EnrichAnswer,
    RenderedPrompt,
    enrich_prompt,
)
from distill.stages.common import call_llm, stage_report
from graph_schema.models import Product, Rejection, StageReport

if TYPE_CHECKING:
    from distill.llm.gateway import LLMGateway

STAGE = "enrich"
MAX_KEYPHRASES = 10
MAX_ATTRIBUTES = 12
_KEY = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class EnrichResult:
    products: list[Product]
    """Every input product, in input order; enriched where a valid answer came back."""
    rejections: list[Rejection]
    report: StageReport
    pending: list[RenderedPrompt[EnrichAnswer]]


def batches(products: Sequence[Product], size: int) -> list[list[Product]]:
    """Stable batches: products of one category together (shared context), ordered by id, so an unchanged
    catalog renders byte-identical prompts and every call is a cache hit."""
    ordered = sorted(products, key=lambda p: (p.category, p.id))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def clean_answer(
    item: Any, *, allowed: set[str], stage: str = STAGE
) -> tuple[dict[str, str], tuple[str, ...], list[Rejection]]:
    """Normalize one product's answer; over-long or empty values are dropped and recorded."""
    rejections: list[Rejection] = []
    attributes: dict[str, str] = {}
    for raw_key, raw_value in item.attributes.items():
        key = _KEY.sub("_", raw_key.strip().lower()).strip("_")[:40]
        value = " ".join(str(raw_value).split())
        if not key or not value:
            continue
        if len(value) > MAX_ATTRIBUTE_VALUE:
            rejections.append(Rejection(stage=stage, item=item.id, reason="attribute value too long",
                                        raw=f"{key}={value[:300]}"))
            continue
        if len(attributes) >= MAX_ATTRIBUTES:
            rejections.append(Rejection(stage=stage, item=item.id, reason="too many attributes", raw=key))
            break
        attributes[key] = value
    phrases: list[str] = []
    for raw_phrase in item.keyphrases:
        phrase = " ".join(raw_phrase.lower().split())
        if not phrase or phrase in phrases:
            continue
        if len(phrase) > MAX_KEYPHRASE or len(phrase.split()) > 8:
            rejections.append(Rejection(stage=stage, item=item.id, reason="keyphrase too long", raw=phrase[:300]))
            continue
        phrases.append(phrase)
    return attributes, tuple(phrases[:MAX_KEYPHRASES]), rejections


def enrich(
    products: Sequence[Product], gateway: LLMGateway, *, batch_size: int, progress: bool = True
) -> EnrichResult:
    started = time.perf_counter()
    prompts = [enrich_prompt(batch) for batch in batches(products, batch_size)]
    calls = call_llm(gateway, prompts, stage=STAGE, progress=progress)
    rejections = list(calls.rejections)
    updates: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {}
    for prompt, answer in calls.answered:
        allowed = set(prompt.item_ids)
        for item in answer.products:
            if item.id not in allowed:
                # An id the prompt did not ask about: invented, or injected by a product description.
                rejections.append(Rejection(stage=STAGE, item=item.id[:256], reason="id not in prompt",
                                            raw=item.model_dump_json()[:2000]))
                continue
            if item.id in updates:
                rejections.append(Rejection(stage=STAGE, item=item.id, reason="duplicate answer",
                                            raw=item.model_dump_json()[:2000]))
                continue
            attributes, phrases, dropped = clean_answer(item, allowed=allowed)
            rejections.extend(dropped)
            updates[item.id] = (attributes, phrases)
        for pid in prompt.item_ids:
            if pid not in updates:
                rejections.append(Rejection(stage=STAGE, item=pid, reason="no answer for product"))
    out = [
        p.model_copy(update={"enriched": updates[p.id][0], "keyphrases": updates[p.id][1]}) if p.id in updates else p
        for p in products
    ]
    report = stage_report(
        STAGE, items_in=len(products), items_out=len(updates), rejections=rejections, started=started, llm=calls.usage
    )
    return EnrichResult(products=out, rejections=rejections, report=report, pending=list(calls.pending))
