"""Propose stage: the model names complements and substitutes of a product TYPE as shopper-style search
phrases (it never sees the catalog or its ids); `distill.stages.ground` turns each phrase into catalog products.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from distill.stages.common import call_llm, stage_report
from distill.llm.prompts import ProposeAnswer, RenderedPrompt, propose_prompt
from graph_schema.kinds import RelationKind
from graph_schema.models import Product, Rejection, StageReport

if TYPE_CHECKING:
    from distill.llm.gateway import LLMGateway

STAGE = "propose"
MAX_QUERY_WORDS = 12


class ProposalRecord(BaseModel):
    """One validated phrase for one product group (written to propose.jsonl)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str
    representative: str
    product_ids: tuple[str, ...]
    kind: RelationKind
    query: str
    reason: str


def group_key(product: Product) -> str:
    """Products of one type share a proposal prompt: leaf category plus the enriched type."""
    leaf = (product.leaf_category or "").strip().lower()
    kind = product.enriched.get("type", "").strip().lower()
    return f"{leaf}|{kind}" if leaf or kind else f"product|{product.id}"


def product_groups(products: Sequence[Product]) -> dict[str, list[Product]]:
    groups: dict[str, list[Product]] = defaultdict(list)
    for product in sorted(products, key=lambda p: p.id):
        groups[group_key(product)].append(product)
    return dict(groups)


@dataclass(frozen=True)
class ProposeResult:
    proposals: list[ProposalRecord]
    rejections: list[Rejection]
    report: StageReport
    pending: list[RenderedPrompt[ProposeAnswer]]


def _valid_query(text: str) -> str | None:
    query = " ".join(text.split())
    if len(query) < 2 or len(query.split()) > MAX_QUERY_WORDS:
        return None
    return query


def propose(
    products: Sequence[Product], gateway: LLMGateway, *, n_complements: int, n_substitutes: int,
    progress: bool = True,
) -> ProposeResult:
    started = time.perf_counter()
    groups = product_groups(products)
    # The representative is the group's first id: stable across runs, so an unchanged group is a cache hit.
    plan = [(key, members, propose_prompt(members[0], group_size=len(members), n_complements=n_complements,
                                          n_substitutes=n_substitutes))
            for key, members in sorted(groups.items())]
    calls = call_llm(gateway, [prompt for _, _, prompt in plan], stage=STAGE, progress=progress)
    answers = {id(prompt): answer for prompt, answer in calls.answered}
    rejections = list(calls.rejections)
    proposals: list[ProposalRecord] = []
    for key, members, prompt in plan:
        answer = answers.get(id(prompt))
        if answer is None:
            continue
        for kind, items, limit in (("complement", answer.complements, n_complements),
                                   ("substitute", answer.substitutes, n_substitutes)):
            seen: set[str] = set()
            for item in items:
                query = _valid_query(item.query)
                if query is None:
                    rejections.append(Rejection(stage=STAGE, item=members[0].id, reason="invalid phrase",
                                                raw=item.query[:300]))
                    continue
                if query.lower() in seen:
                    continue
                if len(seen) >= limit:
                    rejections.append(Rejection(stage=STAGE, item=members[0].id, reason="too many phrases",
                                                raw=query))
                    continue
                seen.add(query.lower())
                proposals.append(ProposalRecord(
                    group=key, representative=members[0].id, product_ids=tuple(p.id for p in members),
                    kind=kind, query=query, reason=" ".join(item.reason.split())[:300],
                ))
    report = stage_report(
        STAGE, items_in=len(products), items_out=len(proposals), rejections=rejections, started=started, llm=calls.usage
    )
    return ProposeResult(proposals=proposals, rejections=rejections, report=report, pending=list(calls.pending))
