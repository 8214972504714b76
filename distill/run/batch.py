"""Provider batch APIs (OpenAI /v1/batches and compatible): export the pending requests of the first LLM stage
that has any, import the provider's answers into the response cache, repeat per stage. The run folder of a
catalog is fixed (batch-<fingerprint>), so each export/import cycle resumes where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from distill.errors import ConfigError
from distill.run.pipeline import DistillResult, make_gateway, run_pipeline
from distill.settings import DistillSettings
from graph_schema.models import Product, catalog_fingerprint

if TYPE_CHECKING:
    from distill.ingest.catalog import Interactions
    from distill.evidence.embed import TextEncoder
    from distill.llm.batch import ImportReport
    from distill.llm.gateway import LLMGateway


def batch_run_id(products: Sequence[Product]) -> str:
    """One run folder per catalog for the export/import cycle, so each cycle resumes where the last stopped."""
    return f"batch-{catalog_fingerprint(list(products))[:16]}"


def _run_to_pending(
    purpose: str, products: Sequence[Product], interactions: Interactions | None, settings: DistillSettings,
    encoder: TextEncoder | None,
) -> tuple[LLMGateway, DistillResult]:
    """The batch run of `products` (its fixed run id), carried on until the first stage with unanswered requests."""
    gateway = make_gateway(settings, mode="export")
    if gateway is None:
        raise ConfigError(f"batch {purpose} needs a model: set SHELFGRAPH_LLM_MODEL")
    result = run_pipeline(products, interactions, settings, gateway=gateway, run_id=batch_run_id(products),
                          progress=False, encoder=encoder)
    return gateway, result


def export_batch(
    products: Sequence[Product], interactions: Interactions | None, settings: DistillSettings, path: Path, *,
    encoder: TextEncoder | None = None,
) -> int:
    """Run the pipeline until the first LLM stage with uncached requests and write those as an OpenAI batch
    JSONL. Returns the number written; 0 means every request is answered and the run completed."""
    gateway, result = _run_to_pending("export", products, interactions, settings, encoder)
    if result.complete:
        Path(path).write_text("", encoding="utf-8")
        return 0
    return gateway.export_batch(result.pending, Path(path))


def import_batch(
    path: Path, products: Sequence[Product], interactions: Interactions | None, settings: DistillSettings, *,
    encoder: TextEncoder | None = None,
) -> ImportReport:
    """Put the answers of a finished provider batch into the response cache (validated one by one); the
    next `export_batch` or run continues from there without paying for them again."""
    gateway, result = _run_to_pending("import", products, interactions, settings, encoder)
    if result.complete:
        from distill.llm.batch import ImportReport as Report

        return Report(imported=0, unmatched=())
    return gateway.import_batch(Path(path), result.pending, stage=result.stopped_at or "batch")
