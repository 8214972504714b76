"""Propose and ground: the model names complements and substitutes of a product TYPE as shopper-style
search phrases (it never sees the catalog or its ids); the catalog's own retriever turns each phrase into
real catalog products. Only catalog ids come out; the phrase stays as evidence.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from distill.candidates import Candidate
from distill.enrich import call_llm, stage_report
from distill.prompts import ProposeAnswer, RenderedPrompt, propose_prompt
from graph_schema.kinds import RelationKind
from graph_schema.models import Product, Rejection, StageReport

if TYPE_CHECKING:
    from distill.ground import CatalogRetriever
    from distill.llm import LLMGateway

STAGE = "propose"
GROUND_STAGE = "ground"
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


@dataclass(frozen=True)
class GroundResult:
    candidates: list[Candidate]
    rejections: list[Rejection]
    report: StageReport


def ground(
    proposals: Sequence[ProposalRecord], retriever: CatalogRetriever, products_by_id: Mapping[str, Product], *,
    per_phrase: int, pool: int = 15, restrict: set[str] | None = None,
) -> GroundResult:
    """Each phrase -> its `pool` best catalog matches (hybrid retrieval, searched once per phrase); each
    product of the group keeps the `per_phrase` matches that are best for it: retrieval score mixed with the
    product's own text similarity to the match (the same 'case' phrase grounds to each phone's own case)."""
    started = time.perf_counter()
    rejections: list[Rejection] = []
    queries = sorted({p.query for p in proposals})
    hits_by_query = dict(zip(queries, retriever.search(queries, pool), strict=True)) if queries else {}
    out: list[Candidate] = []
    for record in proposals:
        hits = [h for h in hits_by_query.get(record.query, []) if h.product_id in products_by_id]
        if not hits:
            rejections.append(Rejection(stage=GROUND_STAGE, item=record.representative,
                                        reason="phrase matched no product", raw=record.query))
            continue
        top = max(h.score for h in hits) or 1.0
        for source in record.product_ids:
            if restrict is not None and source not in restrict:
                continue
            if source not in products_by_id:
                continue
            options = [h for h in hits if h.product_id != source]
            if not options:
                continue
            sims = retriever.similarity([source] * len(options), [h.product_id for h in options])
            ranked = sorted(
                zip(options, sims, strict=True),
                key=lambda pair: (-(0.6 * pair[0].score / top + 0.4 * float(pair[1])), pair[0].product_id),
            )
            for hit, sim in ranked[:per_phrase]:
                source_leaf = products_by_id[source].leaf_category
                out.append(Candidate(
                    source=source, target=hit.product_id, kind=record.kind, origins=("llm",),
                    same_leaf=source_leaf is not None and source_leaf == products_by_id[hit.product_id].leaf_category,
                    text_similarity=max(min(float(sim), 1.0), -1.0), retrieval_score=max(hit.score / top, 0.0),
                    query=record.query, query_reason=record.reason,
                ))
    report = stage_report(
        GROUND_STAGE, items_in=len(proposals), items_out=len(out), rejections=rejections, started=started
    )
    return GroundResult(candidates=out, rejections=rejections, report=report)
