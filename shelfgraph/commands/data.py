"""The commands that turn a catalog into a graph version: ingest, distill, publish, nightly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shelfgraph.commands.common import (
    ColumnsOpt,
    DataDirOpt,
    DatasetOpt,
    ExportBatchOpt,
    FormatOpt,
    ImportBatchOpt,
    MaxRejectedOpt,
    OrdersOpt,
    ProgressOpt,
    StoreOpt,
    _load_inputs,
    _plural,
    _print_columns,
    _print_report,
    _run,
    _settings,
    _store_target,
    out,
)


def ingest(
    path: Annotated[Path, typer.Argument(help="Catalog file, or a dataset folder (then give --dataset).")],
    dataset: DatasetOpt = "catalog",
    orders: OrdersOpt = None,
    columns: ColumnsOpt = None,
    fmt: FormatOpt = None,
    max_rejected: MaxRejectedOpt = None,
    show: Annotated[int, typer.Option(help="How many rejected rows to list.")] = 20,
) -> None:
    """Read a catalog (and its order log) and report what was accepted and rejected, row by row, and which
    column fed which field.

    Example: shelfgraph ingest shelfgraph/sample/catalog.csv --orders shelfgraph/sample/orders.csv
    Example: shelfgraph ingest shelfgraph/sample/foreign-catalog.csv --columns category=dept,price=cost
    Example: shelfgraph ingest ../shared/data/bundlerec-electronics --dataset bundlerec
    """
    settings = _settings(None, max_rejected_rows=max_rejected)
    catalog, interactions = _run(
        lambda: _load_inputs(dataset, path, orders, settings.max_rejected_rows, columns=columns, fmt=fmt)
    )
    report = catalog.report
    out.print(
        f"[bold]{report.source}[/]: {_plural(report.rows_read, 'row')} read, "
        f"{_plural(report.accepted, 'product')} accepted, {len(report.rejected)} rejected, "
        f"{_plural(report.duplicates_folded, 'identical duplicate row')} folded"
    )
    _print_columns(catalog)
    if interactions is not None:
        baskets = interactions.baskets
        out.print(
            f"interactions: {_plural(baskets.height, 'line')} in {_plural(baskets['basket_id'].n_unique(), 'basket')} "
            f"over {_plural(baskets['product_id'].n_unique(), 'product')}"
        )
        log = interactions.report
        if log.unknown_product_rows or log.duplicates:
            out.print(
                f"  {_plural(log.unknown_product_rows, 'line names', 'lines name')} products outside the catalog "
                f"(e.g. {', '.join(log.unknown_product_sample[:3]) or '-'}), "
                f"{_plural(log.duplicates, 'duplicate line')} folded"
            )
        for row_error in log.rejected[:show]:
            out.print(f"  {log.source} row {row_error.row} (line {row_error.line}): {row_error.reason}", markup=False)
    if report.rejected:
        table = Table("row", "id", "reason", title="rejected rows")
        for row_error in report.rejected[:show]:
            table.add_row(str(row_error.row), row_error.product_id or "", row_error.reason)
        out.print(table)
        if len(report.rejected) > show:
            out.print(f"... and {len(report.rejected) - show} more")


def distill(
    path: Annotated[Path, typer.Argument(help="Catalog file, or a dataset folder (then give --dataset).")],
    dataset: DatasetOpt = "catalog",
    orders: OrdersOpt = None,
    columns: ColumnsOpt = None,
    fmt: FormatOpt = None,
    data_dir: DataDirOpt = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: a new timestamped id).")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the result as a new version.")] = False,
    to: StoreOpt = None,
    export_batch: ExportBatchOpt = None,
    import_batch: ImportBatchOpt = None,
    batch_api: Annotated[bool, typer.Option(
        "--batch-api", help="Answer every LLM stage through the provider's batch API (submit, poll, import; "
        "half price, hours not minutes). Re-run the same command after a stop: it resumes the batch in flight.",
    )] = False,
    max_rejected: MaxRejectedOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Distil a catalog into relations; stage outputs go under DATA_DIR/runs/RUN_ID.

    Without SHELFGRAPH_LLM_MODEL only the stages that need no model run (the report says which were skipped).

    Example: shelfgraph distill shelfgraph/sample/catalog.csv --orders shelfgraph/sample/orders.csv --publish
    Example: SHELFGRAPH_LLM_MODEL=openai/gpt-4o-mini shelfgraph distill catalog.csv --export-batch batch.jsonl
    Example: SHELFGRAPH_LLM_MODEL=openai/gpt-4o-mini shelfgraph distill catalog.csv --batch-api --publish
    """
    from distill.run import batch, pipeline

    settings = _settings(data_dir, store=to, max_rejected_rows=max_rejected)
    target = _run(lambda: _store_target(settings)) if publish else None
    catalog, interactions = _run(
        lambda: _load_inputs(dataset, path, orders, settings.max_rejected_rows, columns=columns, fmt=fmt))
    products = list(catalog.products)
    if import_batch is not None:
        imported = _run(lambda: batch.import_batch(import_batch, products, interactions, settings))
        out.print(f"imported batch results: {imported}")
    if export_batch is not None:
        count = _run(lambda: batch.export_batch(products, interactions, settings, export_batch))
        out.print(f"wrote {count} pending requests to {export_batch}; run them, then --import-batch the output")
        return
    if batch_api:
        from distill.run.batch_api import run_batch_api

        def echo(message: str) -> None:
            out.print(message, markup=False, highlight=False)

        result = _run(lambda: run_batch_api(products, interactions, settings, echo=echo)).result
    else:
        gateway = _run(lambda: pipeline.make_gateway(settings))
        result = _run(
            lambda: pipeline.run_pipeline(
                products, interactions, settings, gateway=gateway, run_id=run_id, progress=progress
            )
        )
    _print_report(result.report)
    out.print(f"run [bold]{result.run_id}[/]: {len(result.relations)} relations, outputs in {result.run_dir}")
    if publish:
        from graph_store import open_store

        out.print(f"publishing to {target}", markup=False, highlight=False)
        store = _run(lambda: open_store(settings))
        version = _run(lambda: pipeline.publish(result, store))
        out.print(f"published graph version [bold]{version.version_id}[/] to {target}")


def publish_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id of an earlier `shelfgraph distill`.")],
    data_dir: DataDirOpt = None,
    to: StoreOpt = None,
) -> None:
    """Publish the result of an earlier distill run as a new graph version (no model calls).

    Example: shelfgraph publish 20261123T120000-ab12 --to neo4j
    """
    from distill.run import pipeline
    from graph_store import open_store

    settings = _settings(data_dir, store=to)
    target = _run(lambda: _store_target(settings))
    result = _run(lambda: pipeline.load_result(settings.runs_dir / run_id))
    out.print(f"publishing to {target}", markup=False, highlight=False)
    store = _run(lambda: open_store(settings))
    version = _run(lambda: pipeline.publish(result, store))
    out.print(f"published graph version [bold]{version.version_id}[/] to {target}")


def nightly(
    path: Annotated[Path, typer.Argument(help="Catalog file, or a dataset folder (then give --dataset).")],
    dataset: DatasetOpt = "catalog",
    orders: OrdersOpt = None,
    columns: ColumnsOpt = None,
    fmt: FormatOpt = None,
    data_dir: DataDirOpt = None,
    to: StoreOpt = None,
    progress: ProgressOpt = False,
) -> None:
    """What cron calls: re-distil only new and changed products, reuse the rest, publish a new version.

    Example (crontab): 15 2 * * * cd /srv/shop && shelfgraph nightly catalog.parquet --orders orders.parquet
    """
    from distill.run import pipeline
    from distill.run.nightly import nightly as run_nightly
    from graph_store import open_store

    settings = _settings(data_dir, store=to)
    target = _run(lambda: _store_target(settings))
    catalog, interactions = _run(
        lambda: _load_inputs(dataset, path, orders, settings.max_rejected_rows, columns=columns, fmt=fmt))
    out.print(f"publishing to {target}", markup=False, highlight=False)
    store = _run(lambda: open_store(settings))
    gateway = _run(lambda: pipeline.make_gateway(settings))
    result = _run(
        lambda: run_nightly(list(catalog.products), interactions, settings, store, gateway=gateway, progress=progress)
    )
    out.print(result.summary(), markup=False)
