"""The nightly job: compare today's catalog with the current graph version, re-distil only new and changed
products (and products with an edge into a removed or changed one), reuse everything else, publish an incremental version.
An unchanged catalog makes no model calls and publishes nothing. Holds no stage logic of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from distill.errors import QualityGateFailed, StageError, VersionNotFound
from distill.run.pipeline import DistillResult, publish, run_pipeline
from distill.settings import DistillSettings
from graph_schema.models import GraphVersion, Product, catalog_fingerprint

if TYPE_CHECKING:
    from distill.ingest.catalog import Interactions
    from distill.evidence.embed import TextEncoder
    from distill.llm.gateway import LLMGateway
    from graph_schema.store import GraphStore, PublishedGraph


@dataclass(frozen=True)
class CatalogDiff:
    new: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    refreshed: tuple[str, ...] = ()
    """Unchanged products with a relation into a removed or changed product: re-distilled, so the gap is filled
    and every edge into a changed product is judged again against its new content."""

    @property
    def to_distil(self) -> set[str]:
        return {*self.new, *self.changed, *self.refreshed}

    @property
    def empty(self) -> bool:
        return not (self.new or self.changed or self.removed)


@dataclass(frozen=True)
class NightlyResult:
    previous_version: str | None
    version: GraphVersion | None
    """The newly published version; None when nothing was published (see `note`)."""
    diff: CatalogDiff
    distill: DistillResult | None
    mode: str
    notes: list[str] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return self.version is not None

    def summary(self) -> str:
        head = (
            f"published {self.mode} version {self.version.version_id} (parent {self.previous_version})"
            if self.version is not None
            else f"nothing published; current version stays {self.previous_version}"
        )
        diff = (f"{len(self.diff.new)} new, {len(self.diff.changed)} changed, {len(self.diff.removed)} removed, "
                f"{len(self.diff.refreshed)} refreshed neighbours")
        calls = ""
        if self.distill is not None:
            usage = self.distill.report.llm
            calls = f"; LLM calls {usage.calls} (cached {usage.cached_calls}), ${usage.cost_usd:.4f}"
        return "; ".join([head, diff + calls, *self.notes])


def diff_catalog(products: Sequence[Product], previous: PublishedGraph) -> CatalogDiff:
    before = dict(zip(previous.nodes["id"].to_list(), previous.nodes["content_hash"].to_list(), strict=True))
    now = {p.id: p.content_hash for p in products}
    new = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(pid for pid in set(now) & set(before) if now[pid] != before[pid])
    # An edge into a changed product was judged against content that no longer exists (the id may now name
    # a different item), and an edge into a removed one leaves a gap: both send their source back to distil.
    touched = {*removed, *changed}
    changed_set = set(changed)
    edges = previous.edges.select("source", "target")
    refreshed = sorted(
        {s for s, t in edges.iter_rows() if t in touched and s in now and s not in changed_set}
    )
    return CatalogDiff(tuple(new), tuple(changed), tuple(removed), tuple(refreshed))


def nightly(
    products: Sequence[Product],
    interactions: Interactions | None,
    settings: DistillSettings,
    store: GraphStore,
    *,
    gateway: LLMGateway | None = None,
    progress: bool = True,
    encoder: TextEncoder | None = None,
) -> NightlyResult:
    """Bring the published graph up to date with `products`: a full run when nothing is published yet,
    otherwise an incremental one. Relations of unchanged products are reused as they are (a periodic full
    `shelfgraph distill --publish` refreshes them and picks up new co-purchase evidence for them)."""
    current = store.current_version()
    if current is None:
        result = run_pipeline(products, interactions, settings, gateway=gateway, progress=progress, encoder=encoder)
        version = publish(result, store)
        return NightlyResult(None, version, CatalogDiff(new=tuple(p.id for p in products)), result, "full",
                             ["no version was published yet: ran a full distillation"])
    try:
        previous = store.load(current)
    except VersionNotFound as exc:
        raise StageError(f"current version {current} cannot be read: {exc}") from exc
    diff = diff_catalog(products, previous)
    if diff.empty and previous.manifest.catalog_fingerprint == catalog_fingerprint(list(products)):
        return NightlyResult(current, None, diff, None, "incremental",
                             [f"catalog unchanged since version {current}: no model calls, nothing to publish"])
    only = diff.to_distil
    result = run_pipeline(
        products, interactions, settings, gateway=gateway, progress=progress, reuse=previous, only=only,
        mode="incremental", encoder=encoder,
    )
    result.report.notes.append(
        f"incremental from {current}: {len(diff.new)} new, {len(diff.changed)} changed, {len(diff.removed)} removed, "
        f"{len(diff.refreshed)} refreshed; {len(products) - len(only)} products reused"
    )
    _gate(result, previous, interactions, settings)
    version = publish(result, store, parent=current)
    return NightlyResult(current, version, diff, result, "incremental")


def _gate(result: DistillResult, previous: PublishedGraph, interactions: Interactions | None,
          settings: DistillSettings) -> None:
    """Refuse to publish a version clearly worse than the current one (settings.quality_gate_max_drop)."""
    from distill.stages.rank.gate import quality_gate

    if settings.quality_gate_max_drop is None:
        return
    verdict = quality_gate(result.relations, previous.relations(),
                           interactions.baskets if interactions is not None else None,
                           max_drop=settings.quality_gate_max_drop)
    result.report.notes.append(verdict.reason)
    if not verdict.passed:
        raise QualityGateFailed(f"{verdict.reason}; nothing published (run {result.run_id} is kept)")
