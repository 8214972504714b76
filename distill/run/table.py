"""The stage table of the pipeline (`PIPELINE`): one row per stage (name, inputs, output, needs-a-model, the
call), and the adapters that hand each stage function (distill/stages/) its typed inputs from the run context.
Reuse, skipping, writing and reporting are the runner's (`distill.run.pipeline`), never a stage's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import polars as pl

from distill.candidates import generators as cand
from distill.candidates.generators import EmbeddingTable
from distill.candidates.model import Candidate, CandidateTable, candidates_frame, merge_table
from distill.errors import StageError
from distill.llm.prompts import PROMPT_VERSIONS
from distill.run.context import (
    CANDIDATES,
    PRODUCTS,
    PROPOSALS,
    RANKED,
    RELATIONS,
    Outcome,
    Ranked,
    RunContext,
    Stage,
    StageName,
)
from distill.run.state import CachedEncoder
from distill.settings import DistillSettings
from distill.stages.enrich import enrich
from distill.stages.ground import ground
from distill.stages.propose import ProposalRecord, propose
from distill.stages.rank.stage import LLM_SCHEMA, LLMEvidence, RankResult, rank_complements
from distill.stages.scoring import Source, best_table, prescore, to_relation
from distill.stages.verify import verify
from distill.stages.verify_plan import judge_depth, plan_verification
from graph_schema.models import Product
from graph_schema.relation_table import RejectedRelations, RelationTable
from graph_schema.tables import EDGE_SCHEMA

if TYPE_CHECKING:
    from distill.ingest.catalog import Interactions
    from graph_schema.store import PublishedGraph

# Candidate pool sizes per source product (before pruning to settings.max_*): generous enough that the
# judge and the scorer have something to choose from, small enough that verify costs O(products).
PROPOSE_COMPLEMENTS = 6
PROPOSE_SUBSTITUTES = 3
GROUND_PER_PHRASE = 3
NEIGHBOURS = 20
NEIGHBOUR_MIN_SIMILARITY = 0.35
CATEGORY_FANOUT = 8
CATEGORY_PER_CATEGORY = 4
SUBSTITUTE_MIN_SIMILARITY = 0.3
AFFINITY_MIN_SIMILARITY = 0.5


# ============================================================================================ the stages
# Each adapter hands one stage function (distill/stages/) its typed inputs from the context and the outputs
# of earlier stages, and wraps its result in an Outcome. The runner does reuse, skipping and reporting.


def _enrich(ctx: RunContext) -> Outcome[list[Product]]:
    assert ctx.gateway is not None
    # Products whose enrichment carried over from the last version (same content) are not asked again.
    carried = {p.id for p, old in zip(ctx.kept, ctx.catalog, strict=True) if p is not old}
    result = enrich([p for p in ctx.targets if p.id not in carried], ctx.gateway,
                    batch_size=ctx.settings.enrich_batch_size, progress=ctx.progress)
    fresh = {p.id: p for p in result.products}
    return Outcome([fresh.get(p.id, p) for p in ctx.kept], result.report, result.rejections, result.pending)


def _evidence(ctx: RunContext, enriched: list[Product]) -> None:
    """Once enriched: the enriched products replace the catalog's, and the text evidence is built once."""
    settings = ctx.settings
    ctx.enriched = enriched
    ctx.by_id = {p.id: p for p in enriched}
    ctx.targets = [ctx.by_id[p.id] for p in ctx.targets]
    ctx.behaviour_on = (settings.use_behaviour and ctx.interactions is not None
                        and ctx.interactions.baskets.height > 0)
    need_text = settings.use_text_similarity or ctx.llm
    ctx.retriever = _build_retriever(enriched, _cached(ctx.encoder, settings), ctx.progress) if need_text else None
    ctx.embeddings = (
        _embedding_table(ctx.retriever) if ctx.retriever is not None and settings.use_text_similarity else None
    )
    ctx.available = _sources(settings, llm=ctx.llm, behaviour=ctx.behaviour_on, similarity=ctx.embeddings is not None)
    ctx.leaf = {p.id: p.leaf_category for p in enriched}
    ctx.members = cand.leaf_members(enriched)


def _propose(ctx: RunContext) -> Outcome[list[ProposalRecord]]:
    assert ctx.gateway is not None
    proposed = propose(ctx.targets, ctx.gateway, n_complements=PROPOSE_COMPLEMENTS,
                       n_substitutes=PROPOSE_SUBSTITUTES, progress=ctx.progress)
    return Outcome(proposed.proposals, proposed.report, proposed.rejections, proposed.pending)


def _ground(ctx: RunContext, proposals: list[ProposalRecord]) -> Outcome[list[Candidate]]:
    assert ctx.retriever is not None
    result = ground(proposals, ctx.retriever, ctx.by_id, per_phrase=GROUND_PER_PHRASE, restrict=ctx.target_ids)
    return Outcome(result.candidates, result.report, result.rejections)


def _behaviour(ctx: RunContext) -> Outcome[list[Candidate]]:
    # These candidates feed the judge's shortlist; without a model the rank stage builds its own pool.
    assert ctx.interactions is not None
    with _status(ctx.progress, f"behaviour: candidates for {len(ctx.targets)} products"):
        found = _behaviour_candidates(ctx.interactions, ctx.enriched, ctx.targets, ctx.embeddings, ctx.members,
                                      ctx.leaf, ctx.settings)
    return Outcome(found, ctx.report("behaviour", items_in=ctx.interactions.baskets.height, items_out=len(found)))


def _behaviour_skipped(ctx: RunContext) -> str | None:
    if ctx.behaviour_on and ctx.llm:
        return None
    given = ctx.interactions
    return ("no interactions given" if given is None or given.baskets.height == 0
            else "use_behaviour is off" if not ctx.settings.use_behaviour
            else "no model to shortlist for (the rank stage builds its own candidates)")


def _similarity(ctx: RunContext) -> Outcome[CandidateTable]:
    assert ctx.embeddings is not None
    settings = ctx.settings
    found = cand.similarity_table(
        ctx.targets, ctx.embeddings, members=ctx.members, per_product=judge_depth(settings.max_substitutes),
        min_similarity=SUBSTITUTE_MIN_SIMILARITY)
    if ctx.llm:
        found = CandidateTable.concat([found, cand.affinity_candidates(
            ctx.targets, ctx.embeddings, leaf={p.id: p.leaf_category for p in ctx.catalog},
            per_product=settings.max_complements, min_similarity=AFFINITY_MIN_SIMILARITY)])
    return Outcome(found, ctx.report("similarity", items_in=len(ctx.targets), items_out=len(found)))


def _similarity_skipped(ctx: RunContext) -> str | None:
    return None if ctx.embeddings is not None else "use_text_similarity is off"


def _candidates(ctx: RunContext, grounded: Sequence[Candidate], from_behaviour: Sequence[Candidate],
                from_similarity: Sequence[Candidate]) -> Outcome[CandidateTable]:
    raw = (grounded, from_behaviour, from_similarity)
    count = sum(len(part) for part in raw)
    with _status(ctx.progress, f"candidates: merging {count}"):
        pool = _merge_pool(raw, ctx.by_id, ctx.embeddings, ctx.enriched, ctx.retriever)
    return Outcome(pool, ctx.report("candidates", items_in=count, items_out=len(pool)))


def _verify(ctx: RunContext, pool: Sequence[Candidate]) -> Outcome[list[Candidate]]:
    assert ctx.gateway is not None
    settings = ctx.settings
    # Only pairs that can reach a served list are judged: the rank stage's own ordering without the judge.
    depth = judge_depth(settings.max_complements)
    with _status(ctx.progress, f"verify: shortlisting {depth} complements for {len(ctx.targets)} products"):
        reachable = _rank(ctx.enriched, ctx.interactions, ctx.embeddings, ctx.targets, pool,
                          settings.model_copy(update={"max_complements": depth}), ctx.run_id, None, ctx.by_id)
    plan = plan_verification(pool, reachable.relations, prescore=lambda c: prescore(c, ctx.available),
                             max_substitutes=settings.max_substitutes, leaf=ctx.leaf, targets=ctx.target_ids)
    ctx.state.report.notes.append(f"verify shortlist: per product the {depth} best complements by the ranker "
                                  f"without the judge ({reachable.summary.reason}) and the "
                                  f"{judge_depth(settings.max_substitutes)} best substitutes by the formula")
    verified = verify([*pool, *plan.added], plan.to_judge, ctx.by_id, ctx.gateway,
                      batch_size=settings.verify_batch_size, progress=ctx.progress)
    # the stage's wall time includes choosing its pairs (a rank pass over every product)
    report = verified.report.model_copy(update={"wall_seconds": time.perf_counter() - ctx.started})
    return Outcome(verified.candidates, report, verified.rejections, verified.pending)


def _ranked(ctx: RunContext, judged: Sequence[Candidate]) -> Outcome[Ranked]:
    """Complements by the ranker learned from this shop's baskets, substitutes by the formula."""
    settings = ctx.settings
    with _status(ctx.progress, f"rank: {len(ctx.targets)} products"):
        ranked = _rank(ctx.enriched, ctx.interactions, ctx.embeddings, ctx.targets, judged, settings, ctx.run_id,
                       ctx.model, ctx.by_id)
        substitutes = CandidateTable(candidates_frame(judged).filter(pl.col("kind") == "substitute"))
        best, scores, cut = best_table(substitutes, ctx.available, max_complements=settings.max_complements,
                                       max_substitutes=settings.max_substitutes)
        del substitutes
        scored = RelationTable.concat([ranked.relations, RelationTable.from_relations(
            to_relation(c, ctx.available, ctx.run_id, ctx.model, ctx.by_id, score)
            for score, c in zip(scores, best, strict=True))])
    report = ctx.report("rank", items_in=len(judged), items_out=len(scored), rejected=cut,
                        rejection_reasons={"substitutes beyond twice the degree cap": cut} if cut else {})
    return Outcome(Ranked(scored, ranked.summary, ranked.model_text), report,
                   notes=(f"complement ranker: {ranked.summary.reason}",))


def _pruned(ctx: RunContext, judged: Sequence[Candidate], ranked: Ranked) -> Outcome[RelationTable]:
    # Reused relations are pruned together with this run's, so degree caps and symmetry hold over both.
    merged = _merge_reused(ranked.relations, ctx.reuse, ctx.by_id, ctx.only)
    near = CandidateTable(candidates_frame(judged).filter(pl.col("near_duplicate")))
    final, pruned_away = _prune(merged, ctx.by_id, ctx.settings, near)
    report = ctx.report("prune", items_in=len(merged), items_out=len(final), rejected=len(pruned_away),
                        rejection_reasons=pruned_away.reason_counts())
    return Outcome(final, report, pruned_away)


def _sources(settings: DistillSettings, *, llm: bool, behaviour: bool, similarity: bool) -> frozenset[Source]:
    found: set[Source] = {"same_leaf"}
    if llm:
        found |= {"llm", "retrieval"}
    if behaviour:
        found |= {"copurchase", "neighbour", "category"}
    if similarity:
        found.add("similarity")
    return frozenset(found)


# ============================================================================================ retrieval adapter


def _build_retriever(products: Sequence[Product], encoder: Any, progress: bool) -> Any:
    from distill.evidence.retrieval import CatalogRetriever

    if encoder is None:
        from distill.evidence.embed import default_encoder

        encoder = default_encoder()
    return CatalogRetriever.build(list(products), encoder, progress=progress)


def _cached(encoder: Any, settings: DistillSettings) -> Any:
    if encoder is None:
        from distill.evidence.embed import default_encoder

        encoder = default_encoder(settings.embed_workers)
    if isinstance(encoder, CachedEncoder):
        return encoder
    return CachedEncoder(encoder, settings.data_dir / "embeddings")


def _embedding_table(retriever: Any) -> EmbeddingTable | None:
    if retriever.embeddings is None:
        return None
    return EmbeddingTable(ids=tuple(retriever.ids), vectors=retriever.embeddings)


@contextmanager
def _status(progress: bool, text: str) -> Iterator[None]:
    """A spinner on stderr for the model-free stages (minutes on a large catalog); silent without progress."""
    if not progress:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(text):
        yield


def _behaviour_candidates(
    interactions: Interactions, products: Sequence[Product], targets: Sequence[Product],
    embeddings: EmbeddingTable | None, members: dict[str, list[str]], leaf: dict[str, str | None],
    settings: DistillSettings,
) -> list[Candidate]:
    view = cand.build_behaviour(interactions.baskets, products)
    found = cand.copurchase_candidates(
        targets, view, min_support=settings.min_copurchase_support, per_product=2 * settings.max_complements,
        leaf=leaf)
    if embeddings is not None:
        found += cand.neighbour_candidates(
            targets, view, embeddings, neighbours=NEIGHBOURS, min_similarity=NEIGHBOUR_MIN_SIMILARITY,
            per_product=settings.max_complements, leaf=leaf)
    found += cand.category_candidates(
        targets, view, embeddings, members=members, min_support=settings.min_copurchase_support,
        categories=CATEGORY_FANOUT, per_category=CATEGORY_PER_CATEGORY, leaf=leaf)
    return found


def _rank(
    enriched: Sequence[Product], interactions: Interactions | None, embeddings: EmbeddingTable | None,
    targets: Sequence[Product], judged: Sequence[Candidate], settings: DistillSettings, run_id: str,
    model: str | None, by_id: dict[str, Product],
) -> RankResult:
    from distill.evidence.behaviour import DEFAULT_MAX_BASKET_SIZE
    from distill.stages.prune import find_near_duplicates

    vectors = None
    if embeddings is not None:
        rows = embeddings.rows()
        vectors = embeddings.vectors[[rows[p.id] for p in enriched]] if all(p.id in rows for p in enriched) else None
    llm_rows = candidates_frame(judged).filter(
        (pl.col("kind") == "complement") & (pl.col("llm_score").is_not_null() | pl.col("origins").list.contains("llm"))
    ).select("source", "target", llm_score=pl.col("llm_score").cast(pl.Float32),
             llm_retrieval=pl.col("retrieval_score").cast(pl.Float32), llm_reason="llm_reason", query="query",
             llm_model="llm_model")
    llm = LLMEvidence(llm_rows.select(list(LLM_SCHEMA))) if llm_rows.height else LLMEvidence.empty()
    baskets = interactions.baskets if interactions is not None and interactions.baskets.height else None
    return rank_complements(
        enriched, baskets, vectors, [p.id for p in targets], llm=llm, max_complements=settings.max_complements,
        max_basket_size=DEFAULT_MAX_BASKET_SIZE, near_duplicates=find_near_duplicates(list(enriched), vectors),
        run_id=run_id, model=model, prompt_version=PROMPT_VERSIONS["verify"] if llm_rows.height else None,
        use_behaviour=settings.use_behaviour, use_text=settings.use_text_similarity,
        learned=settings.use_learned_ranker,
    )


def _merge_pool(
    raw: Sequence[Sequence[Candidate]], by_id: dict[str, Product], embeddings: EmbeddingTable | None,
    products: Sequence[Product], retriever: Any,
) -> CandidateTable:
    """One candidate per (source, target, kind), each with its text similarity; near-duplicate listings
    flagged. Over the columns: a large leaf's pool is never one object per candidate here."""
    from distill.stages.prune import find_near_duplicates

    pool = cand.fill_similarity_table(merge_table(raw, by_id), embeddings).frame
    near = [tuple(sorted(pair)) for pair in find_near_duplicates(list(products), retriever) if len(pair) == 2]
    pairs = pl.DataFrame([*near, *[(b, a) for a, b in near]], schema={"source": pl.String, "target": pl.String},
                         orient="row").with_columns(_near=pl.lit(True))
    flagged = pool.join(pairs, on=["source", "target"], how="left", maintain_order="left").with_columns(
        near_duplicate=pl.col("near_duplicate") | pl.col("_near").fill_null(False))
    return CandidateTable(flagged.drop("_near"))


def _prune(
    relations: RelationTable, by_id: dict[str, Product], settings: DistillSettings, near: Sequence[Candidate]
) -> tuple[RelationTable, RejectedRelations]:
    from distill.stages.prune import prune

    near_duplicates = {frozenset((c.source, c.target)) for c in near}
    result = prune(relations, by_id, max_complements=settings.max_complements,
                   max_substitutes=settings.max_substitutes, min_score=settings.min_score,
                   min_complement_score=settings.min_complement_score, near_duplicates=near_duplicates)
    return result.relations, result.rejections


def _merge_reused(
    fresh: RelationTable, reuse: PublishedGraph | None, by_id: dict[str, Product], only: set[str] | None
) -> RelationTable:
    """Incremental mode: this run's relations for the products in `only`, last version's for the rest, minus
    relations that touch a product no longer in the catalog."""
    if reuse is None or only is None:
        return fresh
    known = pl.Series(list(by_id), dtype=pl.String).implode()
    kept = (reuse.edges.select([pl.col(name).cast(dtype) for name, dtype in EDGE_SCHEMA.items()])
            .filter(~pl.col("source").is_in(pl.Series(sorted(only), dtype=pl.String).implode())
                    & pl.col("source").is_in(known) & pl.col("target").is_in(known))
            .join(fresh.frame.select("source", "target", "kind"), on=["source", "target", "kind"], how="anti",
                  maintain_order="left"))
    return RelationTable.concat([RelationTable(kept), fresh])


# ============================================================================================ the table


# The pipeline. Adding a stage: its module under distill/stages/, an adapter above, one row here.
PIPELINE: tuple[Stage, ...] = (
    #     name          inputs                                   output      model  run
    Stage("enrich",     (),                                      PRODUCTS,   True,  _enrich,
          when_skipped=lambda ctx: ctx.kept, after=_evidence),
    Stage("propose",    (),                                      PROPOSALS,  True,  _propose),
    Stage("ground",     ("propose",),                            CANDIDATES, True,  _ground),
    Stage("behaviour",  (),                                      CANDIDATES, False, _behaviour, skip=_behaviour_skipped),
    Stage("similarity", (),                                      CANDIDATES, False, _similarity,
          skip=_similarity_skipped),
    Stage("candidates", ("ground", "behaviour", "similarity"),   CANDIDATES, False, _candidates),
    Stage("verify",     ("candidates",),                         CANDIDATES, True,  _verify,
          when_skipped=lambda ctx, pool: pool),
    Stage("rank",       ("verify",),                             RANKED,     False, _ranked),
    Stage("prune",      ("verify", "rank"),                      RELATIONS,  False, _pruned),
)


def check_table(table: Sequence[Stage]) -> None:
    """Every input of a stage is the output of an earlier one, and no name repeats."""
    seen: set[str] = set()
    for stage in table:
        if stage.name in seen:
            raise StageError(f"stage {stage.name!r} appears twice in the stage table")
        missing = [name for name in stage.inputs if name not in seen]
        if missing:
            raise StageError(f"stage {stage.name!r} reads {missing}, which no earlier stage writes")
        seen.add(stage.name)


check_table(PIPELINE)
STAGES: tuple[StageName, ...] = tuple(stage.name for stage in PIPELINE)
LLM_STAGES = frozenset(stage.name for stage in PIPELINE if stage.needs_model)
