"""The distillation pipeline: enrich -> propose -> ground -> behaviour -> similarity -> candidates -> verify ->
rank -> prune, a table of stages (`distill.run.table.PIPELINE`) that one runner loops over: every stage's output written under
runs/<run_id>/ (re-runnable alone, resumable), reuse, skipping and reporting done once, then publish.
Without a model the model-free stages run and the report says which stages were skipped and why.
Never imports litellm: the gateway module is imported lazily, only when a model is configured.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.errors import StageError
from distill.llm.prompts import PROMPT_VERSIONS, RenderedPrompt
from distill.run.context import RunContext, Stage
from distill.run.state import (
    RunDir,
    RunInfo,
    RunState,
    interactions_fingerprint,
    new_run_id,
    shaping_settings,
    stale_stages,
)
from distill.run.table import LLM_STAGES, PIPELINE, STAGES
from distill.settings import DistillSettings
from graph_schema.models import (
    GraphVersion,
    Product,
    Rejection,
    Relation,
    RunReport,
    StageReport,
    catalog_fingerprint,
)
from graph_schema.relation_table import RelationTable, relation_table

if TYPE_CHECKING:
    from distill.ingest.catalog import Interactions
    from distill.evidence.embed import TextEncoder
    from distill.llm.gateway import LLMGateway
    from graph_schema.store import GraphStore, PublishedGraph

@dataclass(frozen=True)
class DistillResult:
    run_id: str
    products: list[Product]
    relations: Sequence[Relation]
    """A RelationTable when the pipeline made it (its relations are built as they are read)."""
    rejections: Sequence[Rejection]
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


# ============================================================================================ the run


def _check_products(products: Sequence[Product]) -> dict[str, Product]:
    by_id: dict[str, Product] = {}
    for product in products:
        if product.id in by_id:
            raise StageError(f"product id {product.id!r} appears twice in the catalog given to the pipeline")
        by_id[product.id] = product
    return by_id


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
    ctx = _open_run(products, interactions, settings, gateway=gateway, run_id=run_id, reuse=reuse, only=only,
                    progress=progress, rerun=rerun, mode=mode, encoder=encoder)
    for stage in PIPELINE:
        pending = _run_stage(stage, ctx)
        if pending:
            return _stopped(ctx, stage.name, pending)
    return _finished(ctx)


def _run_stage(stage: Stage, ctx: RunContext) -> list[RenderedPrompt[Any]]:
    """Reuse, skip or run one stage, store its output and record it. Returns the requests still pending
    (export mode): then nothing of the stage is written and the run stops."""
    state = ctx.state
    inputs = [ctx.outputs[name] for name in stage.inputs]
    if state.cached(stage.name):
        value = stage.output.read(state, stage.name)
    elif (reason := _skip_reason(stage, ctx)) is not None:
        value = stage.when_skipped(ctx, *inputs) if stage.when_skipped is not None else []
        stage.output.write(state, stage.name, value)
        state.skipped(stage.name, reason)
    else:
        ctx.started = time.perf_counter()
        with state.guard(stage.name):
            outcome = stage.run(ctx, *inputs)
        if outcome.pending:
            return list(outcome.pending)
        value = outcome.value
        stage.output.write(state, stage.name, value)
        state.report.notes.extend(outcome.notes)
        state.done(outcome.report, outcome.rejections)
    ctx.outputs[stage.name] = value
    if stage.after is not None:
        stage.after(ctx, value)
    for name in stage.inputs:  # free what no later stage reads (a large catalog's candidate pools)
        if name not in _READ_LATER[stage.name]:
            ctx.outputs.pop(name, None)
    return []


_READ_LATER: dict[str, frozenset[str]] = {
    stage.name: frozenset(name for later in PIPELINE[index + 1:] for name in later.inputs)
    for index, stage in enumerate(PIPELINE)
}
"""Stage -> the outputs that stages after it still read."""


def _skip_reason(stage: Stage, ctx: RunContext) -> str | None:
    reason = stage.skip(ctx) if stage.skip is not None else None
    if reason is None and stage.needs_model and not ctx.llm:
        reason = _no_llm_reason(ctx.settings, ctx.gateway)
    return reason


def _open_run(
    products: Sequence[Product], interactions: Interactions | None, settings: DistillSettings, *,
    gateway: LLMGateway | None, run_id: str | None, reuse: PublishedGraph | None, only: set[str] | None,
    progress: bool, rerun: Collection[str], mode: str | None, encoder: TextEncoder | None,
) -> RunContext:
    """Check the inputs, open (or resume) the run folder and forget the outputs that must be recomputed."""
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
    previous = {p.id: p for p in reuse.products()} if reuse is not None else {}
    return RunContext(
        settings=settings, run=run, state=state, info=info, interactions=interactions, gateway=gateway, reuse=reuse,
        only=only, progress=progress, encoder=encoder, catalog=list(products),
        kept=[_carry_enrichment(p, previous.get(p.id)) for p in products], by_id=by_id,
        targets=[p for p in products if only is None or p.id in only],
    )


def _stopped(ctx: RunContext, stage: str, pending: list[RenderedPrompt[Any]]) -> DistillResult:
    state = ctx.state
    state.report.notes.append(f"stopped at {stage}: {len(pending)} requests pending (batch export)")
    state.report.finished_at = datetime.now(timezone.utc)
    ctx.run.write_report(state.report)
    current = ctx.outputs.get("enrich", ctx.kept)
    return DistillResult(ctx.run_id, list(current), RelationTable.empty(), state.rejections, state.report, ctx.run.path,
                         ctx.info.catalog_fingerprint, [ctx.model] if ctx.model else [], list(PROMPT_VERSIONS.values()),
                         pending, stage)


def _finished(ctx: RunContext) -> DistillResult:
    state, run, final = ctx.state, ctx.run, ctx.outputs["prune"]
    run.write_products("products", ctx.enriched)
    state.report.finished_at = datetime.now(timezone.utc)
    if not ctx.llm:
        state.report.notes.append(f"no model: {_no_llm_reason(ctx.settings, ctx.gateway)}; LLM stages skipped")
    run.write_report(state.report)
    # A resumed run reuses stage outputs answered in an earlier attempt: keep the models that answered those.
    answered = {*(ctx.gateway.answered_models if ctx.gateway is not None else ()), *(run.read_models() or ())}
    models = models_used(final, answered, ctx.model)
    run.write_models(models)
    return DistillResult(ctx.run_id, ctx.enriched, final, state.rejections, state.report, run.path,
                         ctx.info.catalog_fingerprint, models, list(PROMPT_VERSIONS.values()) if ctx.llm else [])


def models_used(relations: Sequence[Relation], answered: Collection[str], configured: str | None) -> list[str]:
    """GraphVersion.models: every model that answered (a fallback included), not just the configured one."""
    found = {m for m in relation_table(relations).frame["model"].unique().to_list() if m} | set(answered)
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


# ============================================================================================ publish, reload


def publish(result: DistillResult, store: GraphStore, *, parent: str | None = None) -> GraphVersion:
    """Publish a completed run as a new graph version (the store switches `current` atomically). The parent
    version defaults to the store's current one, whichever store it is."""
    if not result.complete:
        raise StageError(f"run {result.run_id} stopped at {result.stopped_at} with pending requests; nothing to publish")
    counts = relation_table(result.relations).counts()
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
    relations = run.read_relation_table("prune")
    return DistillResult(
        run_id=run.run_id, products=run.read_products("products"), relations=relations,
        rejections=run.read_rejections(), report=run.read_report(), run_dir=run.path,
        catalog_fingerprint=info.catalog_fingerprint, models=run.read_models() or models_used(relations, (), info.model),
        prompt_versions=sorted(info.prompt_versions.values()),
    )


__all__ = ["LLM_STAGES", "PIPELINE", "STAGES", "DistillResult", "load_result", "make_gateway", "models_used", "publish",
           "run_pipeline"]
