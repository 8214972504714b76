"""Ground stage: the catalog's own retriever turns each proposed search phrase into real catalog products.
Only catalog ids come out; the phrase stays as evidence. Calls no model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distill.candidates.model import Candidate
from distill.stages.common import stage_report
from distill.stages.propose import ProposalRecord
from graph_schema.models import Product, Rejection, StageReport

if TYPE_CHECKING:
    from distill.evidence.retrieval import CatalogRetriever

STAGE = "ground"


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
            rejections.append(Rejection(stage=STAGE, item=record.representative,
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
        STAGE, items_in=len(proposals), items_out=len(out), rejections=rejections, started=started
    )
    return GroundResult(candidates=out, rejections=rejections, report=report)
