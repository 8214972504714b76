"""The distillation pipeline: enrich -> propose -> ground -> behaviour -> similarity -> verify -> score ->
prune, every stage's output written under runs/<run_id>/ (re-runnable alone, resumable), then publish.
Without a model the model-free stages run and the report says which stages were skipped and why.
Never imports litellm: the gateway module is imported lazily, only when a model is configured.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from distill.candidates import generators as cand
from distill.candidates.generators import EmbeddingTable
from distill.candidates.model import (
    Candidate,
    candidates_frame,
    candidates_from_frame,
    merge_candidates,
    restrict_to,
)
from distill.stages.common import reason_counts
from distill.stages.enrich import enrich
from distill.errors import StageError
from distill.llm.prompts import PROMPT_VERSIONS, RenderedPrompt
from distill.stages.ground import ground
from distill.stages.propose import ProposalRecord, propose
from distill.stages.rank.stage import LLM_SCHEMA, LLMEvidence, RankResult, rank_complements
from distill.run.state import (
    CachedEncoder,
    RunDir,
    RunInfo,
    RunState,
    interactions_fingerprint,
    new_run_id,
    shaping_settings,
    stale_stages,
)
from distill.stages.scoring import Source, best_per_source, prescore, to_relation
from distill.settings import DistillSettings
from distill.stages.verify import verify
from distill.stages.verify_plan import judge_depth, plan_verification
from graph_schema.models import (
    GraphVersion,
    Product,
    RankerSummary,
    Rejection,
    Relation,
    RunReport,
    StageReport,
    catalog_fingerprint,
)

if TYPE_CHECKING:
    from distill.ingest.catalog import Interactions
    from distill.evidence.embed import TextEncoder
    from distill.llm.gateway import LLMGateway
    from graph_schema.store import GraphStore, PublishedGraph

StageName = Literal[
    "enrich", "propose", "ground", "behaviour", "similarity", "candidates", "verify", "rank", "prune"
]
STAGES: tuple[StageName, ...] = (
    "enrich", "propose", "ground", "behaviour", "similarity", "candidates", "verify", "rank", "prune"
)
LLM_STAGES = frozenset({"enrich", "propose", "ground", "verify"})

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


@dataclass(frozen=True)
class DistillResult:
    run_id: str
    products: list[Product]
    relations: list[Relation]
    rejections: list[Rejection]
    report: RunReport
    run_dir: Path
    catalog_fingerprint: str = ""
    models: list[str] = field(default_factory=list)
    prompt_versions: list[str] = field(default_factory=list)
    pending: list[RenderedPrompt[Any]] = field(default_factory=list)
    """Export mode: requests that must be answered (batch API) before the run can continue."""
    stopped_at: str | None = None
    """The stage that stopped on pending requests; None when the run completed."""

    @property
    def complete(self) -> bool:
        return self.stopped_at is None


def make_gateway(settings: DistillSettings, *, mode: Literal["live", "export"] = "live") -> LLMGateway | None:
    """The LLM gateway for `settings`, or None when no model is configured (or use_llm is off)."""
    if not settings.llm_model or not settings.use_llm:
        return None
    from distill.llm.cache import ResponseCache
    from distill.llm.gateway import LLMGateway

    return LLMGateway(settings, ResponseCache(settings.cache_path), mode=mode)


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

        encoder = default_encoder()
    if isinstance(encoder, CachedEncoder):
        return encoder
    return CachedEncoder(encoder, settings.data_dir / "embeddings")


def _embedding_table(retriever: Any) -> EmbeddingTable | None:
    if retriever.embeddings is None:
        return None
    return EmbeddingTable(ids=tuple(retriever.ids), vectors=retriever.embeddings)


# ============================================================================================ the run


def _check_products(products: Sequence[Product]) -> dict[str, Product]:
    by_id: dict[str, Product] = {}
    for product in products:
        if product.id in by_id:
            raise StageError(f"product id {product.id!r} appears twice in the catalog given to the pipeline")
        by_id[product.id] = product
    return by_id


def _sources(settings: DistillSettings, *, llm: bool, behaviour: bool, similarity: bool) -> frozenset[Source]:
    found: set[Source] = {"same_leaf"}
    if llm:
        found |= {"llm", "retrieval"}
    if behaviour:
        found |= {"copurchase", "neighbour", "category"}
    if similarity:
        found.add("similarity")
    return frozenset(found)


def run_pipeline(
    products: Sequence[Product],
    interactions: Interactions | None,
    settings: DistillSettings,
    *,
    gateway: LLMGateway | None = None,
    run_id: str | None = None,
    reuse: PublishedGraph | None = None,
    only: set[str] | None = None,
    progress: bool = True,
    rerun: Collection[str] = (),
    mode: str | None = None,
    encoder: TextEncoder | None = None,
) -> DistillResult:
    """Distil `products` into relations. `reuse` + `only`: incremental mode, distil only the ids in `only` and
    keep the enrichment and relations of every other product from `reuse`. An existing `run_id` resumes that
    run: finished stage outputs are reused except the stages named in `rerun` (and everything after them).
    `encoder`: the text encoder of the retriever (default: distill.evidence.embed.default_encoder())."""
    by_id = _check_products(products)
    fingerprint = catalog_fingerprint(list(products))
    if only is not None:
        unknown = sorted(set(only) - set(by_id))
        if unknown:
            raise StageError(f"`only` names {len(unknown)} ids not in the catalog, e.g. {unknown[:3]}")
    run_id = run_id or new_run_id()
    run = RunDir.open(settings.runs_dir, run_id)
    use_llm = settings.use_llm and settings.llm_model is not None
    if gateway is None and use_llm:
        gateway = make_gateway(settings)
    llm = gateway is not None and use_llm
    model = settings.llm_model if llm else None
    info = RunInfo(
        run_id=run_id, mode=mode or ("incremental" if only is not None else "full"), catalog_fingerprint=fingerprint,
        product_count=len(products), model=model, prompt_versions=dict(PROMPT_VERSIONS) if llm else {},
        parent_version=reuse.manifest.version_id if reuse is not None else None,
        only=sorted(only) if only is not None else None,
        interactions_fingerprint=interactions_fingerprint(interactions.baskets if interactions is not None else None),
        settings=shaping_settings(settings),
    )
    old_info = run.read_info()
    if old_info is not None and old_info.identity() != info.identity():
        raise StageError(f"run {run_id} exists with different inputs (catalog, model or scope); use a new run id")
    unknown_rerun = set(rerun) - set(STAGES)
    if unknown_rerun:
        raise StageError(f"unknown stages {sorted(unknown_rerun)}; stages are {list(STAGES)}")
    stale = stale_stages(old_info, info) if old_info is not None else {}
    rerun = {*rerun, *stale}  # changed interactions or settings re-run the stages they feed, never reuse them
    run.write_info(info)
    first_rerun = min((STAGES.index(s) for s in rerun), default=len(STAGES))  # type: ignore[arg-type,unused-ignore]
    run.discard(STAGES[first_rerun:])
    state = RunState(run, RunReport(run_id=run_id, mode=info.mode), reuse_outputs=old_info is not None)
    state.report.notes.extend(f"re-ran from {stage}: {why}" for stage, why in stale.items())
    targets = [p for p in products if only is None or p.id in only]
    previous = {p.id: p for p in reuse.products()} if reuse is not None else {}

    def stop(stage: str, pending: list[RenderedPrompt[Any]], current: Sequence[Product]) -> DistillResult:
        state.report.notes.append(f"stopped at {stage}: {len(pending)} requests pending (batch export)")
        state.report.finished_at = datetime.now(timezone.utc)
        run.write_report(state.report)
        return DistillResult(run_id, list(current), [], state.rejections, state.report, run.path, fingerprint,
                             [model] if model else [], list(PROMPT_VERSIONS.values()), pending, stage)

    # --- 1. enrich --------------------------------------------------------------------------------------
    if state.cached("enrich"):
        enriched = run.read_products("enrich")
    else:
        kept = [_carry_enrichment(p, previous.get(p.id)) for p in products]
        if llm:
            assert gateway is not None
            # Products whose enrichment carried over from the last version (same content) are not asked again.
            carried = {p.id for p, old in zip(kept, products, strict=True) if p is not old}
            to_enrich = [p for p in targets if p.id not in carried]
            with state.guard("enrich"):
                result = enrich(to_enrich, gateway, batch_size=settings.enrich_batch_size, progress=progress)
            if result.pending:
                return stop("enrich", list(result.pending), kept)
            fresh = {p.id: p for p in result.products}
            enriched = [fresh.get(p.id, p) for p in kept]
            run.write_products("enrich", enriched)
            state.done(result.report, result.rejections)
        else:
            enriched = kept
            run.write_products("enrich", enriched)
            state.skipped("enrich", _no_llm_reason(settings, gateway))
    by_id = {p.id: p for p in enriched}
    targets = [by_id[p.id] for p in targets]

    behaviour_on = settings.use_behaviour and interactions is not None and interactions.baskets.height > 0
    need_text = settings.use_text_similarity or llm
    retriever = _build_retriever(enriched, _cached(encoder, settings), progress) if need_text else None
    embeddings = (
        _embedding_table(retriever) if retriever is not None and settings.use_text_similarity else None
    )
    available = _sources(settings, llm=llm, behaviour=behaviour_on, similarity=embeddings is not None)
    leaf = {p.id: p.leaf_category for p in enriched}
    members = cand.leaf_members(enriched)

    # --- 2. propose + 3. ground -------------------------------------------------------------------------
    if state.cached("propose"):
        proposals = run.read_records("propose", ProposalRecord)
    elif llm:
        assert gateway is not None
        with state.guard("propose"):
            proposed = propose(targets, gateway, n_complements=PROPOSE_COMPLEMENTS,
                               n_substitutes=PROPOSE_SUBSTITUTES, progress=progress)
        if proposed.pending:
            return stop("propose", list(proposed.pending), enriched)
        proposals = proposed.proposals
        run.write_records("propose", proposals)
        state.done(proposed.report, proposed.rejections)
    else:
        proposals = []
        run.write_records("propose", proposals)
        state.skipped("propose", _no_llm_reason(settings, gateway))
    target_ids = {p.id for p in targets}
    if state.cached("ground"):
        grounded = candidates_from_frame(run.read_frame("ground"))
    elif llm:
        assert retriever is not None
        grounded_result = ground(proposals, retriever, by_id, per_phrase=GROUND_PER_PHRASE, restrict=target_ids)
        grounded = grounded_result.candidates
        run.write_frame("ground", candidates_frame(grounded))
        state.done(grounded_result.report, grounded_result.rejections)
    else:
        grounded = []
        run.write_frame("ground", candidates_frame(grounded))
        state.skipped("ground", _no_llm_reason(settings, gateway))

    # --- 4. behaviour -------------------------------------------------------------------------------------
    if state.cached("behaviour"):
        from_behaviour = candidates_from_frame(run.read_frame("behaviour"))
    elif behaviour_on and llm:
        # These candidates feed the judge's shortlist; without a model the rank stage builds its own pool.
        assert interactions is not None
        started = time.perf_counter()
        with _status(progress, f"behaviour: candidates for {len(targets)} products"):
            from_behaviour = _behaviour_candidates(interactions, enriched, targets, embeddings, members, leaf,
                                                   settings)
        run.write_frame("behaviour", candidates_frame(from_behaviour))
        state.done(StageReport(stage="behaviour", items_in=interactions.baskets.height,
                               items_out=len(from_behaviour), wall_seconds=time.perf_counter() - started))
    else:
        from_behaviour = []
        run.write_frame("behaviour", candidates_frame(from_behaviour))
        state.skipped("behaviour", "no interactions given" if interactions is None or interactions.baskets.height == 0
                      else "use_behaviour is off" if not settings.use_behaviour
                      else "no model to shortlist for (the rank stage builds its own candidates)")

    # --- 5. similarity ------------------------------------------------------------------------------------
    if state.cached("similarity"):
        from_similarity = candidates_from_frame(run.read_frame("similarity"))
    elif embeddings is not None:
        started = time.perf_counter()
        from_similarity = cand.similarity_candidates(
            targets, embeddings, members=members, per_product=judge_depth(settings.max_substitutes),
            min_similarity=SUBSTITUTE_MIN_SIMILARITY)
        from_similarity += [] if not llm else cand.affinity_candidates(
            targets, embeddings, leaf={p.id: p.leaf_category for p in products}, per_product=settings.max_complements,
            min_similarity=AFFINITY_MIN_SIMILARITY)
        run.write_frame("similarity", candidates_frame(from_similarity))
        state.done(StageReport(stage="similarity", items_in=len(targets), items_out=len(from_similarity),
                               wall_seconds=time.perf_counter() - started))
    else:
        from_similarity = []
        run.write_frame("similarity", candidates_frame(from_similarity))
        state.skipped("similarity", "use_text_similarity is off")

    # --- merge the pools ------------------------------------------------------------------------------------
    if state.cached("candidates"):
        pool = candidates_from_frame(run.read_frame("candidates"))
    else:
        started = time.perf_counter()
        raw = [*grounded, *from_behaviour, *from_similarity]
        with _status(progress, f"candidates: merging {len(raw)}"):
            pool = _merge_pool(raw, by_id, embeddings, enriched, retriever)
        run.write_frame("candidates", candidates_frame(pool))
        state.done(StageReport(stage="candidates", items_in=len(raw), items_out=len(pool),
                               wall_seconds=time.perf_counter() - started))
    grounded = from_behaviour = from_similarity = raw = []  # merged into `pool`: free them before rank

    # --- 6. verify ------------------------------------------------------------------------------------------
    if state.cached("verify"):
        judged = candidates_from_frame(run.read_frame("verify"))
    elif llm:
        assert gateway is not None
        # Only pairs that can reach a served list are judged: the rank stage's own ordering without the judge.
        depth = judge_depth(settings.max_complements)
        started = time.perf_counter()
        with _status(progress, f"verify: shortlisting {depth} complements for {len(targets)} products"):
            reachable = _rank(enriched, interactions, embeddings, targets, pool,
                              settings.model_copy(update={"max_complements": depth}), run_id, None, by_id)
        plan = plan_verification(pool, reachable.relations, prescore=lambda c: prescore(c, available),
                                 max_substitutes=settings.max_substitutes, leaf=leaf, targets=target_ids)
        state.report.notes.append(f"verify shortlist: per product the {depth} best complements by the ranker "
                                  f"without the judge ({reachable.summary.reason}) and the "
                                  f"{judge_depth(settings.max_substitutes)} best substitutes by the formula")
        with state.guard("verify"):
            verified = verify([*pool, *plan.added], plan.to_judge, by_id, gateway,
                              batch_size=settings.verify_batch_size, progress=progress)
        if verified.pending:
            return stop("verify", list(verified.pending), enriched)
        judged = verified.candidates
        run.write_frame("verify", candidates_frame(judged))
        # the stage's wall time includes choosing its pairs (a rank pass over every product)
        state.done(verified.report.model_copy(update={"wall_seconds": time.perf_counter() - started}),
                   verified.rejections)
    else:
        judged = pool
        run.write_frame("verify", candidates_frame(judged))
        state.skipped("verify", _no_llm_reason(settings, gateway))

    # --- 7. rank: complements by the ranker learned from this shop's baskets, substitutes by the formula ---
    if state.cached("rank"):
        scored = run.read_relations("rank")
        state.report.ranker = RankerSummary.model_validate_json(run.file("ranker", "json").read_text("utf-8"))
    else:
        started = time.perf_counter()
        with _status(progress, f"rank: {len(targets)} products"):
            ranked = _rank(enriched, interactions, embeddings, targets, judged, settings, run_id, model, by_id)
            substitutes = [c for c in judged if c.kind == "substitute"]
            best, cut = best_per_source(substitutes, available, max_complements=settings.max_complements,
                                        max_substitutes=settings.max_substitutes)
            scored = [*ranked.relations, *(to_relation(c, available, run_id, model, by_id, score) for score, c in best)]
            substitutes, best = [], []  # their relations are in `scored`
        if ranked.model_text is not None:
            run.file("ranker", "txt").write_text(ranked.model_text, encoding="utf-8")
        run.file("ranker", "json").write_text(ranked.summary.model_dump_json(indent=2), encoding="utf-8")
        state.report.ranker = ranked.summary
        run.write_relations("rank", scored)
        state.report.notes.append(f"complement ranker: {ranked.summary.reason}")
        state.done(StageReport(stage="rank", items_in=len(judged), items_out=len(scored), rejected=cut,
                               rejection_reasons={"substitutes beyond twice the degree cap": cut} if cut else {},
                               wall_seconds=time.perf_counter() - started))

    # --- 8. prune ---------------------------------------------------------------------------------------------
    near_listed = [c for c in judged if c.near_duplicate]
    pool = judged = []  # only the near-duplicate flags are read from here on: free the candidates
    if state.cached("prune"):
        final = run.read_relations("prune")
    else:
        started = time.perf_counter()
        # Reused relations are pruned together with this run's, so degree caps and symmetry hold over both.
        merged = _merge_reused(scored, reuse, by_id, only)
        final, pruned_away = _prune(merged, by_id, settings, near_listed)
        run.write_relations("prune", final)
        state.done(StageReport(stage="prune", items_in=len(merged), items_out=len(final),
                               rejected=len(pruned_away), rejection_reasons=reason_counts(pruned_away),
                               wall_seconds=time.perf_counter() - started), pruned_away)
        scored = merged = []  # the rejected ones are kept as JSON in pruned_away

    run.write_products("products", enriched)
    state.report.finished_at = datetime.now(timezone.utc)
    if not llm:
        state.report.notes.append(f"no model: {_no_llm_reason(settings, gateway)}; LLM stages skipped")
    run.write_report(state.report)
    # A resumed run reuses stage outputs answered in an earlier attempt: keep the models that answered those.
    answered = {*(gateway.answered_models if gateway is not None else ()), *(run.read_models() or ())}
    models = models_used(final, answered, model)
    run.write_models(models)
    return DistillResult(run_id, enriched, final, state.rejections, state.report, run.path, fingerprint,
                         models, list(PROMPT_VERSIONS.values()) if llm else [])


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
    llm_rows = [(c.source, c.target, c.llm_score, c.retrieval_score, c.llm_reason, c.query,
                 c.llm_model) for c in judged
                if c.kind == "complement" and (c.llm_score is not None or "llm" in c.origins)]
    llm = LLMEvidence(pl.DataFrame(llm_rows, schema=LLM_SCHEMA, orient="row")) if llm_rows else LLMEvidence.empty()
    baskets = interactions.baskets if interactions is not None and interactions.baskets.height else None
    return rank_complements(
        enriched, baskets, vectors, [p.id for p in targets], llm=llm, max_complements=settings.max_complements,
        max_basket_size=DEFAULT_MAX_BASKET_SIZE, near_duplicates=find_near_duplicates(list(enriched), vectors),
        run_id=run_id, model=model, prompt_version=PROMPT_VERSIONS["verify"] if llm_rows else None,
        use_behaviour=settings.use_behaviour, use_text=settings.use_text_similarity,
        learned=settings.use_learned_ranker,
    )


def _merge_pool(
    raw: Sequence[Candidate], by_id: dict[str, Product], embeddings: EmbeddingTable | None,
    products: Sequence[Product], retriever: Any,
) -> list[Candidate]:
    """One candidate per (source, target, kind), each with its text similarity; near-duplicate listings flagged."""
    from distill.stages.prune import find_near_duplicates

    pool = cand.fill_similarity(merge_candidates(restrict_to(raw, by_id)), embeddings)
    near = find_near_duplicates(list(products), retriever)
    return [c.model_copy(update={"near_duplicate": True}) if frozenset((c.source, c.target)) in near else c
            for c in pool]


def models_used(relations: Sequence[Relation], answered: Collection[str], configured: str | None) -> list[str]:
    """GraphVersion.models: every model that answered (a fallback included), not just the configured one."""
    found = {r.provenance.model for r in relations if r.provenance.model} | set(answered)
    return sorted(found) if found else ([configured] if configured else [])


def _no_llm_reason(settings: DistillSettings, gateway: LLMGateway | None) -> str:
    if settings.llm_model is None:
        return "no model configured (SHELFGRAPH_LLM_MODEL is unset)"
    if not settings.use_llm:
        return "use_llm is off"
    return "no LLM gateway given"


def _carry_enrichment(product: Product, previous: Product | None) -> Product:
    """Reuse last version's enrichment for a product whose catalog content did not change."""
    if previous is None or previous.content_hash != product.content_hash or not (previous.enriched or previous.keyphrases):
        return product
    return product.model_copy(update={"enriched": previous.enriched, "keyphrases": previous.keyphrases})


def _prune(
    relations: list[Relation], by_id: dict[str, Product], settings: DistillSettings, near: list[Candidate]
) -> tuple[list[Relation], list[Rejection]]:
    from distill.stages.prune import prune

    near_duplicates = {frozenset((c.source, c.target)) for c in near}
    result = prune(relations, by_id, max_complements=settings.max_complements,
                   max_substitutes=settings.max_substitutes, min_score=settings.min_score,
                   min_complement_score=settings.min_complement_score, near_duplicates=near_duplicates)
    return list(result.relations), list(result.rejections)


def _merge_reused(
    fresh: list[Relation], reuse: PublishedGraph | None, by_id: dict[str, Product], only: set[str] | None
) -> list[Relation]:
    """Incremental mode: this run's relations for the products in `only`, last version's for the rest, minus
    relations that touch a product no longer in the catalog."""
    if reuse is None or only is None:
        return fresh
    keys = {r.key for r in fresh}
    kept = [r for r in reuse.relations()
            if r.source not in only and r.source in by_id and r.target in by_id and r.key not in keys]
    return [*kept, *fresh]


# ============================================================================================ publish, reload


def publish(result: DistillResult, store: GraphStore, *, parent: str | None = None) -> GraphVersion:
    """Publish a completed run as a new graph version (the store switches `current` atomically). The parent
    version defaults to the store's current one, whichever store it is."""
    if not result.complete:
        raise StageError(f"run {result.run_id} stopped at {result.stopped_at} with pending requests; nothing to publish")
    counts = {"complement": 0, "substitute": 0}
    for relation in result.relations:
        counts[relation.kind] += 1
    started = time.perf_counter()
    manifest = GraphVersion(
        version_id=f"v{new_run_id()}",  # one run may be published twice (another store, a rollback)
        catalog_fingerprint=result.catalog_fingerprint or catalog_fingerprint(result.products),
        product_count=len(result.products),
        relation_counts=counts,  # type: ignore[arg-type,unused-ignore]
        models=result.models,
        prompt_versions=result.prompt_versions,
        llm=result.report.llm,
        parent_version=parent if parent is not None else store.current_version(),
        ranker=result.report.ranker,
        run_report=result.report,
    )
    stored = store.publish(result.products, result.relations, manifest)
    report = result.report.model_copy(deep=True)
    report.stages.append(StageReport(stage="publish", items_in=len(result.relations), items_out=len(result.relations),
                                     wall_seconds=time.perf_counter() - started))
    RunDir(result.run_dir).write_report(report)
    return stored


def load_result(run_dir: Path) -> DistillResult:
    """A finished run read back from its folder (for `shelfgraph publish RUN_ID`): no model calls."""
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise StageError(f"no run folder {run.path}")
    info = run.read_info()
    if info is None or not run.has("prune") or not run.has("products"):
        raise StageError(f"run {run.run_id} did not finish; re-run `shelfgraph distill --run-id {run.run_id}`")
    relations = run.read_relations("prune")
    return DistillResult(
        run_id=run.run_id, products=run.read_products("products"), relations=relations,
        rejections=run.read_rejections(), report=run.read_report(), run_dir=run.path,
        catalog_fingerprint=info.catalog_fingerprint, models=run.read_models() or models_used(relations, (), info.model),
        prompt_versions=sorted(info.prompt_versions.values()),
    )

