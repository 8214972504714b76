"""`shelfgraph`: the one command line. A thin shell over library functions.

Each command parses options, calls one library function and prints its result. Library errors
(ShelfgraphError) become one-line messages and a non-zero exit; nothing here holds pipeline logic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from distill.errors import ShelfgraphError

if TYPE_CHECKING:
    from distill.catalog import Catalog, Interactions
    from distill.settings import DistillSettings

app = typer.Typer(
    name="shelfgraph",
    help="Distil what LLMs know about products into a product graph served in milliseconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Reports are tables: give them room when stdout is a pipe or a cron log (rich would default to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
DatasetName = Literal["catalog", "bundlerec", "amazon2018", "instacart", "groceries"]
T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    """Call a library function; turn its errors into one clear line and exit code 1."""
    try:
        return action()
    except ShelfgraphError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def _settings(data_dir: Path | None, **overrides: object) -> DistillSettings:
    from distill.settings import DistillSettings

    fields = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        fields["data_dir"] = data_dir
    return DistillSettings(**fields)  # type: ignore[arg-type]


DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Runs, LLM cache and embedded graph (env SHELFGRAPH_DATA_DIR).")
]
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="Layout of --path: catalog (a CSV/TSV/JSONL/Parquet file), bundlerec, amazon2018, instacart, groceries.",
    ),
]
OrdersOpt = Annotated[
    Path | None, typer.Option("--orders", help="Order/session log (columns basket_id|order_id, product_id).")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def _load_inputs(
    dataset: str, path: Path, orders: Path | None, max_rejected: float | None = None
) -> tuple[Catalog, Interactions | None]:
    from distill.catalog import read_catalog, read_interactions
    from distill.datasets import load_dataset

    if dataset == "catalog":
        kwargs = {} if max_rejected is None else {"max_rejected": max_rejected}
        catalog = read_catalog(path, **kwargs)  # type: ignore[arg-type]
        interactions = None
        if orders is not None:
            interactions = read_interactions(orders, known_ids={p.id for p in catalog.products})
        return catalog, interactions
    data = load_dataset(dataset, path)  # type: ignore[arg-type]
    return data.catalog, data.interactions


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Catalog file, or dataset folder with --dataset.")],
    dataset: DatasetOpt = "catalog",
    orders: OrdersOpt = None,
    max_rejected: Annotated[
        float | None, typer.Option(help="Stop when more rows are rejected: a share (<1) or a count.")
    ] = None,
    show: Annotated[int, typer.Option(help="How many rejected rows to list.")] = 20,
) -> None:
    """Read a catalog (and its order log) and report what was accepted and rejected, row by row.

    Example: shelfgraph ingest shelfgraph/sample/catalog.csv --orders shelfgraph/sample/orders.csv
    Example: shelfgraph ingest ../shared/data/bundlerec-electronics --dataset bundlerec
    """
    catalog, interactions = _run(lambda: _load_inputs(dataset, path, orders, max_rejected))
    report = catalog.report
    out.print(
        f"[bold]{report.source}[/]: {report.rows_read} rows read, {report.accepted} products accepted, "
        f"{len(report.rejected)} rejected"
    )
    if interactions is not None:
        baskets = interactions.baskets
        out.print(
            f"interactions: {baskets.height} lines in {baskets['basket_id'].n_unique()} baskets "
            f"over {baskets['product_id'].n_unique()} products"
        )
        log = interactions.report
        if log.unknown_product_rows or log.duplicates:
            out.print(
                f"  {log.unknown_product_rows} lines name products outside the catalog "
                f"(e.g. {', '.join(log.unknown_product_sample[:3]) or '-'}), {log.duplicates} duplicate lines folded"
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


@app.command()
def distill(
    path: Annotated[Path, typer.Argument(help="Catalog file, or dataset folder with --dataset.")],
    dataset: DatasetOpt = "catalog",
    orders: OrdersOpt = None,
    data_dir: DataDirOpt = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: a new timestamped id).")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the result as a new version.")] = False,
    to: Annotated[str | None, typer.Option("--to", help="Store to publish to: embedded or neo4j.")] = None,
    export_batch: Annotated[
        Path | None, typer.Option(help="Write pending LLM requests as OpenAI batch JSONL instead of calling.")
    ] = None,
    import_batch: Annotated[
        Path | None, typer.Option(help="Import an OpenAI batch output JSONL into the response cache first.")
    ] = None,
    progress: ProgressOpt = True,
) -> None:
    """Distil a catalog into relations; stage outputs go under DATA_DIR/runs/RUN_ID.

    Without SHELFGRAPH_LLM_MODEL only the stages that need no model run (the report says which were skipped).

    Example: shelfgraph distill shelfgraph/sample/catalog.csv --orders shelfgraph/sample/orders.csv --publish
    Example: SHELFGRAPH_LLM_MODEL=openai/gpt-4o-mini shelfgraph distill catalog.csv --export-batch batch.jsonl
    """
    from distill import pipeline

    settings = _settings(data_dir, store=to)
    catalog, interactions = _run(lambda: _load_inputs(dataset, path, orders))
    products = list(catalog.products)
    if import_batch is not None:
        imported = _run(lambda: pipeline.import_batch(import_batch, products, interactions, settings))
        out.print(f"imported batch results: {imported}")
    if export_batch is not None:
        count = _run(lambda: pipeline.export_batch(products, interactions, settings, export_batch))
        out.print(f"wrote {count} pending requests to {export_batch}; run them, then --import-batch the output")
        return
    gateway = _run(lambda: pipeline.make_gateway(settings))
    result = _run(
        lambda: pipeline.run_pipeline(
            products, interactions, settings, gateway=gateway, run_id=run_id, progress=progress
        )
    )
    _print_report(result.report)
    out.print(f"run [bold]{result.run_id}[/]: {len(result.relations)} relations, outputs in {result.run_dir}")
    if publish:
        from distill.store import open_store

        store = _run(lambda: open_store(settings))
        version = _run(lambda: pipeline.publish(result, store))
        out.print(f"published graph version [bold]{version.version_id}[/] to {settings.store if to is None else to}")


@app.command(name="publish")
def publish_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id of an earlier `shelfgraph distill`.")],
    data_dir: DataDirOpt = None,
    to: Annotated[str, typer.Option("--to", help="embedded (default) or neo4j.")] = "embedded",
) -> None:
    """Publish the result of an earlier distill run as a new graph version (no model calls).

    Example: shelfgraph publish 20261123T120000-ab12 --to neo4j
    """
    from distill import pipeline
    from distill.store import open_store

    settings = _settings(data_dir, store=to)
    result = _run(lambda: pipeline.load_result(settings.runs_dir / run_id))
    store = _run(lambda: open_store(settings))
    version = _run(lambda: pipeline.publish(result, store))
    out.print(f"published graph version [bold]{version.version_id}[/] to {to}")


@app.command()
def nightly(
    path: Annotated[Path, typer.Argument(help="Catalog file, or dataset folder with --dataset.")],
    dataset: DatasetOpt = "catalog",
    orders: OrdersOpt = None,
    data_dir: DataDirOpt = None,
    to: Annotated[str | None, typer.Option("--to", help="embedded (default) or neo4j.")] = None,
    progress: ProgressOpt = False,
) -> None:
    """What cron calls: re-distil only new and changed products, reuse the rest, publish a new version.

    Example (crontab): 15 2 * * * cd /srv/shop && shelfgraph nightly catalog.parquet --orders orders.parquet
    """
    from distill import pipeline
    from distill.nightly import nightly as run_nightly
    from distill.store import open_store

    settings = _settings(data_dir, store=to)
    catalog, interactions = _run(lambda: _load_inputs(dataset, path, orders))
    store = _run(lambda: open_store(settings))
    gateway = _run(lambda: pipeline.make_gateway(settings))
    result = _run(
        lambda: run_nightly(list(catalog.products), interactions, settings, store, gateway=gateway, progress=progress)
    )
    out.print(result.summary(), markup=False)


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    neo4j: Annotated[str | None, typer.Option("--neo4j", help="Serve from a Neo4j URI instead of the embedded store.")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    workers: Annotated[int, typer.Option(help="gunicorn worker processes.")] = 2,
) -> None:
    """Serve the current graph version over HTTP (gunicorn). No model is ever called at request time.

    Example: shelfgraph serve --port 8080   then   curl localhost:8080/v1/products/SKU-10001/complements
    """
    from serve.server import serve_forever
    from serve.settings import ServeSettings

    overrides: dict[str, object] = {"host": host, "port": port, "workers": workers}
    if data_dir is not None:
        overrides["graph_dir"] = data_dir / "graph"
    if neo4j is not None:
        overrides["neo4j_uri"] = neo4j
        overrides["graph_source"] = "neo4j"
    _run(lambda: serve_forever(ServeSettings(**overrides)))  # type: ignore[arg-type]


@app.command(name="eval")
def eval_cmd(
    dataset: Annotated[str, typer.Option(help="bundlerec, amazon2018 or baskets.")] = "bundlerec",
    path: Annotated[Path, typer.Option(help="Dataset folder or file.")] = Path("../shared/data/bundlerec-electronics"),
    seed: Annotated[int, typer.Option(help="Seed of the 80/20 session split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report with plots here.")] = None,
    ablations: Annotated[bool, typer.Option(help="Also run with each evidence source switched off.")] = False,
    sample: Annotated[int | None, typer.Option(help="Distil and score only a seeded sample of N query products.")] = None,
    export_batch: Annotated[
        Path | None, typer.Option(help="Write the model requests the run still needs as OpenAI batch JSONL.")
    ] = None,
    import_batch: Annotated[
        Path | None, typer.Option(help="Import an OpenAI batch output JSONL into the response cache first.")
    ] = None,
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Measure graph quality against held-out ground truth, next to baselines on the same split.

    Example: shelfgraph eval --dataset bundlerec --path ../shared/data/bundlerec-electronics --json
    Example (a real LLM for 200 query products, answered through a provider batch API):
      shelfgraph eval --sample 200 --export-batch in.jsonl   ...answer...   --import-batch out.jsonl
    """
    from distill import pipeline
    from evaluation.run import BatchPending, EvalResult, evaluate

    settings = _settings(data_dir)
    batch = export_batch is not None or import_batch is not None
    gateway = _run(lambda: pipeline.make_gateway(settings, mode="export" if batch else "live"))
    if batch and gateway is None:
        err.print("[bold red]error:[/] --export-batch/--import-batch need a model: set SHELFGRAPH_LLM_MODEL")
        raise typer.Exit(1)

    def run_eval() -> EvalResult | BatchPending:
        try:
            return evaluate(
                dataset,  # type: ignore[arg-type]
                path, seed=seed, settings=settings, gateway=gateway, ablations=ablations,
                progress=progress and not as_json, report_path=report, sample=sample,
                export_batch=export_batch, import_batch=import_batch,
            )
        except BatchPending as pending:
            return pending  # not a failure: the run waits for the provider's answers

    result = _run(run_eval)
    if isinstance(result, BatchPending):
        out.print(str(result), markup=False, highlight=False)
        return
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.print(result.to_table(), markup=False, soft_wrap=True, highlight=False)
    if report is not None and not as_json:
        out.print(f"HTML report: {report}")


@app.command()
def inspect(
    product_id: Annotated[str, typer.Argument(help="Catalog id of the product.")],
    data_dir: DataDirOpt = None,
    version: Annotated[str | None, typer.Option(help="Graph version (default: current).")] = None,
    k: Annotated[int, typer.Option(help="Relations to show per kind.")] = 10,
) -> None:
    """Show a product with its enriched attributes and its relations in a published version.

    Example: shelfgraph inspect SKU-10001
    """
    from distill.store import open_store

    settings = _settings(data_dir)
    graph = _run(lambda: open_store(settings).load(version))
    import polars as pl

    node = graph.nodes.filter(pl.col("id") == product_id)
    if node.is_empty():
        err.print(f"[bold red]error:[/] product {product_id!r} is not in graph version {graph.manifest.version_id}")
        raise typer.Exit(1)
    row = node.row(0, named=True)
    out.print(f"[bold]{row['id']}[/] {row['title']}")
    out.print(f"category: {' > '.join(row['category'] or [])}   price: {row['price']}")
    out.print(f"enriched: {row['enriched']}   keyphrases: {', '.join(row['keyphrases'] or [])}")
    titles = dict(zip(graph.nodes["id"].to_list(), graph.nodes["title"].to_list(), strict=True))
    for kind in ("complement", "substitute"):
        edges = (
            graph.edges.filter((pl.col("source") == product_id) & (pl.col("kind") == kind))
            .sort("score", descending=True)
            .head(k)
        )
        table = Table("score", "target", "title", "reason", title=f"{kind}s ({edges.height} shown)")
        for edge in edges.iter_rows(named=True):
            table.add_row(f"{edge['score']:.2f}", edge["target"], titles.get(edge["target"], "?"), edge["reasons"][0])
        out.print(table)


@app.command()
def versions(data_dir: DataDirOpt = None, to: Annotated[str | None, typer.Option("--store")] = None) -> None:
    """List the graph versions kept by the store, oldest first; the current one is marked.

    Example: shelfgraph versions
    """
    from distill.store import open_store

    store = _run(lambda: open_store(_settings(data_dir, store=to)))
    current = _run(store.current_version)
    table = Table("", "version", "created", "products", "complements", "substitutes", "LLM calls", "cost $")
    for manifest in _run(store.list_versions):
        table.add_row(
            "*" if manifest.version_id == current else "",
            manifest.version_id,
            manifest.created_at.isoformat(timespec="seconds"),
            str(manifest.product_count),
            str(manifest.relation_counts.get("complement", 0)),
            str(manifest.relation_counts.get("substitute", 0)),
            str(manifest.llm.calls),
            f"{manifest.llm.cost_usd:.4f}",
        )
    out.print(table)


@app.command(name="export-graphml")
def export_graphml_cmd(
    target: Annotated[Path, typer.Argument(help="GraphML file to write.")],
    data_dir: DataDirOpt = None,
    version: Annotated[str | None, typer.Option(help="Graph version (default: current).")] = None,
) -> None:
    """Export a graph version to GraphML (for Gephi, yEd, networkx).

    Example: shelfgraph export-graphml graph.graphml
    """
    from distill.store import open_store
    from distill.store.embedded import export_graphml

    graph = _run(lambda: open_store(_settings(data_dir)).load(version))
    out.print(f"wrote {export_graphml(graph, target)}")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the demo keeps its graph.")] = Path(
        ".shelfgraph-demo"
    ),
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the server at the end.")] = True,
    port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8080,
    progress: ProgressOpt = True,
) -> None:
    """Ingest the bundled sample catalog and orders, distil, publish, and serve it.

    Example: shelfgraph demo            (then open the printed curl in another terminal)
    """
    from distill import pipeline
    from distill.store import open_store

    settings = _settings(data_dir)
    catalog, interactions = _run(
        lambda: _load_inputs("catalog", SAMPLE_DIR / "catalog.csv", SAMPLE_DIR / "orders.csv")
    )
    out.print(f"ingested {len(catalog.products)} products, {len(catalog.report.rejected)} rows rejected")
    gateway = _run(lambda: pipeline.make_gateway(settings))
    result = _run(
        lambda: pipeline.run_pipeline(list(catalog.products), interactions, settings, gateway=gateway, progress=progress)
    )
    _print_report(result.report)
    store = _run(lambda: open_store(settings, "embedded"))
    version = _run(lambda: pipeline.publish(result, store))
    out.print(f"published graph version [bold]{version.version_id}[/] ({version.relation_counts}) in {data_dir}")
    example = _demo_product(result.relations, catalog)
    out.print("\nTry it:")
    out.print(f"  curl -s http://127.0.0.1:{port}/v1/products/{example}/complements?k=5")
    out.print(
        f"  curl -s -X POST http://127.0.0.1:{port}/v1/recommendations -H 'Content-Type: application/json' "
        f"-d '{{\"cart\": [\"{example}\"], \"k\": 5}}'"
    )
    if serve_after:
        from serve.server import serve_forever
        from serve.settings import ServeSettings

        _run(lambda: serve_forever(ServeSettings(graph_dir=settings.embedded_store_dir, port=port, workers=1)))


def _demo_product(relations: list, catalog: Catalog) -> str:  # type: ignore[type-arg]
    """The product with the most complements: a good first curl."""
    counts: dict[str, int] = {}
    for relation in relations:
        if relation.kind == "complement":
            counts[relation.source] = counts.get(relation.source, 0) + 1
    if counts:
        return max(sorted(counts), key=lambda pid: counts[pid])
    return catalog.products[0].id


def _print_report(report: object) -> None:
    from graph_schema.models import RunReport

    assert isinstance(report, RunReport)
    table = Table("stage", "in", "out", "rejected", "LLM calls", "cached", "tokens", "cost $", "seconds", "note")
    for stage in report.stages:
        note = f"skipped: {stage.skip_reason}" if stage.skipped else ", ".join(
            f"{reason}={count}" for reason, count in sorted(stage.rejection_reasons.items())
        )
        table.add_row(
            stage.stage,
            str(stage.items_in),
            str(stage.items_out),
            str(stage.rejected),
            str(stage.llm.calls),
            str(stage.llm.cached_calls),
            str(stage.llm.input_tokens + stage.llm.output_tokens),
            f"{stage.llm.cost_usd:.4f}",
            f"{stage.wall_seconds:.1f}",
            note,
        )
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
