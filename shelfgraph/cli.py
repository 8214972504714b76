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
from rich.markup import escape
from rich.table import Table

from distill.errors import ShelfgraphError

if TYPE_CHECKING:
    from distill.ingest.catalog import Catalog, ColumnMapping, Interactions
    from distill.settings import DistillSettings
    from shelfgraph.config import ProjectConfig

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


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


@app.callback()
def _project_file(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Project file (TOML with a columns and a settings table; default: ./shelfgraph.toml when present).",
            envvar="SHELFGRAPH_CONFIG",
        ),
    ] = None,
) -> None:
    """Distil what LLMs know about products into a product graph served in milliseconds."""
    from shelfgraph.config import find_config, load_config

    global _loaded_project
    _loaded_project = _run(lambda: load_config(find_config(config)))


_loaded_project: ProjectConfig | None = None
"""Set by the root callback on every invocation (one command per process, or per CliRunner.invoke)."""


def _project() -> ProjectConfig:
    """The project file the root command read (defaults when a command runs without the root callback)."""
    from shelfgraph.config import ProjectConfig

    return _loaded_project if _loaded_project is not None else ProjectConfig()


def _settings(data_dir: Path | None, **overrides: object) -> DistillSettings:
    return _run(lambda: _project().distill_settings(data_dir=data_dir, **overrides))


DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Runs, LLM cache and embedded graph (env SHELFGRAPH_DATA_DIR).")
]
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="What PATH is: catalog (a CSV/TSV/JSONL/Parquet file, the default), or the folder of a public "
        "dataset: bundlerec, amazon2018, instacart, groceries.",
    ),
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Which of your columns feeds which field, e.g. id=sku,title=name,category=dept,price=cost "
        "(fields: id, title, description, brand, category, category_separator, price; overrides the "
        "columns table of shelfgraph.toml).",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="File format when the suffix does not tell: csv, tsv, jsonl or parquet."),
]
OrdersOpt = Annotated[
    Path | None, typer.Option("--orders", help="Order/session log (columns basket_id|order_id, product_id).")
]
ExportBatchOpt = Annotated[
    Path | None, typer.Option(help="Write the model requests the run still needs as OpenAI batch JSONL (no calls).")
]
ImportBatchOpt = Annotated[
    Path | None, typer.Option(help="Import an OpenAI batch output JSONL into the response cache first.")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


MaxRejectedOpt = Annotated[
    float | None,
    typer.Option("--max-rejected", help="Stop when more rows are rejected: a share (<1) or a count "
                 "(env SHELFGRAPH_MAX_REJECTED_ROWS, default 0.05). Identical duplicate lines are folded, not rejected."),
]


def _mapping(columns: str | None) -> ColumnMapping:
    return _run(lambda: _project().mapping(columns))


def _load_inputs(
    dataset: str,
    path: Path,
    orders: Path | None,
    max_rejected: float | None = None,
    *,
    columns: str | None = None,
    fmt: str | None = None,
) -> tuple[Catalog, Interactions | None]:
    from distill.ingest.catalog import read_catalog, read_interactions
    from distill.ingest.datasets import load_dataset
    from distill.errors import ConfigError

    if dataset == "catalog":
        kwargs: dict[str, object] = {"mapping": _mapping(columns)}
        if max_rejected is not None:
            kwargs["max_rejected"] = max_rejected
        if fmt is not None:
            if fmt not in ("csv", "tsv", "jsonl", "parquet"):
                raise ConfigError(f"--format {fmt!r}: use csv, tsv, jsonl or parquet")
            kwargs["format"] = fmt
        catalog = read_catalog(path, **kwargs)  # type: ignore[arg-type]
        interactions = None
        if orders is not None:
            interactions = read_interactions(orders, known_ids={p.id for p in catalog.products})
        return catalog, interactions
    if columns is not None or fmt is not None:
        raise ConfigError(f"--columns and --format apply to a catalog file; --dataset {dataset} has a fixed layout")
    data = load_dataset(dataset, path, max_rejected=max_rejected)  # type: ignore[arg-type]
    return data.catalog, data.interactions


StoreOpt = Annotated[
    str | None,
    typer.Option("--to", help="Store to publish to: embedded or neo4j (default: SHELFGRAPH_STORE, else embedded)."),
]


def _store_target(settings: DistillSettings) -> str:
    """Where a publish writes, to be said before writing. Refuses Neo4j when nobody chose a password: the
    built-in one belongs to scripts/neo4j-local, and a write must not land on whatever answers on 7687."""
    from distill.errors import ConfigError

    if settings.store != "neo4j":
        return f"the embedded store in {settings.embedded_store_dir}"
    if "neo4j_password" not in settings.model_fields_set:
        raise ConfigError(
            f"Neo4j target {settings.neo4j_uri} (user {settings.neo4j_user}) has no password set: set "
            "SHELFGRAPH_NEO4J_PASSWORD (and SHELFGRAPH_NEO4J_URI/USER), or neo4j_password under [settings] in "
            "shelfgraph.toml; for the local test server: SHELFGRAPH_NEO4J_PASSWORD=shelfgraph"
        )
    database = settings.neo4j_database or "its default database"
    return f"Neo4j at {settings.neo4j_uri} as user {settings.neo4j_user}, {database}"


def _print_columns(catalog: Catalog) -> None:
    """Which source column feeds which field, what is kept as raw attributes, and what nothing fed."""
    from distill.ingest.catalog import ColumnMapping

    report = catalog.report
    mapping = report.mapping
    if mapping is None:
        return
    fields = ("id", "title", "description", "brand", "category", "price")
    used = ", ".join(f"{field} <- {getattr(mapping, field)}" for field in fields if getattr(mapping, field))
    out.print(f"columns found: {', '.join(report.columns)}", markup=False, highlight=False)
    out.print(f"  used: {used}", markup=False, highlight=False)
    out.print(f"  kept as raw attributes: {', '.join(mapping.attribute_columns or []) or '-'}",
              markup=False, highlight=False)
    unmapped = [field for field in ("category", "price") if getattr(mapping, field) is None]
    if unmapped:
        tried = "; ".join(f"{field}: {', '.join(ColumnMapping.usual_names(field))}" for field in unmapped)
        example = ",".join(f"{field}=COLUMN" for field in unmapped)
        out.print(
            f"[yellow]warning:[/] no {' or '.join(unmapped)} column (names tried: {tried}), so every product has "
            f"an empty {' and '.join(unmapped)}. If one of your columns holds it, map it: --columns {example}, "
            "or under \\[columns] in shelfgraph.toml.",
            highlight=False,
        )


@app.command()
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


@app.command()
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


@app.command(name="publish")
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


@app.command()
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


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    neo4j: Annotated[str | None, typer.Option("--neo4j", help="Serve from a Neo4j URI instead of the embedded store.")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes (they share one mapped copy of the index).")] = 2,
    server: Annotated[str, typer.Option(help="WSGI server: granian (default) or gunicorn.")] = "granian",
) -> None:
    """Serve the current graph version over HTTP (granian, or gunicorn). No model is ever called at request
    time. SIGTERM or Ctrl-C shuts down gracefully.

    Example: shelfgraph serve --port 8080   then   curl localhost:8080/v1/products/SKU-10001/complements
    """
    from pydantic import ValidationError

    from serve.server import serve_forever
    from serve.settings import ServeSettings

    overrides: dict[str, object] = {"host": host, "port": port, "workers": workers, "server": server}
    data_dir = data_dir or _project().data_dir
    if data_dir is not None:
        overrides["graph_dir"] = data_dir / "graph"
    if neo4j is not None:
        overrides["neo4j_uri"] = neo4j
        overrides["graph_source"] = "neo4j"
    try:
        settings = ServeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        err.print(f"[bold red]error:[/] {problems}")
        raise typer.Exit(2) from exc
    code = _run(lambda: serve_forever(settings))
    if code:
        raise typer.Exit(code)


@app.command(name="eval")
def eval_cmd(
    dataset: Annotated[str, typer.Option(help="bundlerec, amazon2018 or baskets.")] = "bundlerec",
    path: Annotated[Path, typer.Option(help="Dataset folder or file.")] = Path("../shared/data/bundlerec-electronics"),
    seed: Annotated[int, typer.Option(help="Seed of the 80/20 session split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report with plots here.")] = None,
    ablations: Annotated[bool, typer.Option(help="Also run with each evidence source switched off.")] = False,
    sample: Annotated[int | None, typer.Option(help="Distil and score only a seeded sample of N query products.")] = None,
    export_batch: ExportBatchOpt = None,
    import_batch: ImportBatchOpt = None,
    data_dir: DataDirOpt = None,
    max_rejected: MaxRejectedOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Measure graph quality against held-out ground truth, next to baselines on the same split.

    Example: shelfgraph eval --dataset bundlerec --path ../shared/data/bundlerec-electronics --json
    Example (a real LLM for 200 query products, answered through a provider batch API):
      shelfgraph eval --sample 200 --export-batch in.jsonl   ...answer...   --import-batch out.jsonl
    """
    from distill.run import pipeline
    from evaluation.run import BatchPending, EvalResult, evaluate

    settings = _settings(data_dir, max_rejected_rows=max_rejected)
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
    from graph_store import open_store

    settings = _settings(data_dir)
    store = _run(lambda: open_store(settings))
    if version is None and _run(store.current_version) is None:
        _nothing_published(settings)
    graph = _run(lambda: store.load(version))
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


def _nothing_published(settings: DistillSettings) -> None:
    where = _run(lambda: _store_target(settings))
    err.print(
        f"[bold red]error:[/] no graph version published in {where} yet. Publish one with "
        "`shelfgraph distill FILE --publish` (or `shelfgraph demo`), or point at another data dir with --data-dir.",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command()
def versions(
    data_dir: DataDirOpt = None,
    to: Annotated[
        str | None,
        typer.Option("--store", help="Store to list: embedded or neo4j (default: SHELFGRAPH_STORE, else embedded)."),
    ] = None,
) -> None:
    """List the graph versions kept by the store, oldest first; the current one is marked.

    Exits with 1 and says so when nothing has been published yet.

    Example: shelfgraph versions
    """
    from graph_store import open_store

    settings = _settings(data_dir, store=to)
    store = _run(lambda: open_store(settings))
    current = _run(store.current_version)
    kept = _run(store.list_versions)
    if not kept:
        _nothing_published(settings)
    table = Table("", "version", "created", "products", "complements", "substitutes", "LLM calls", "cost $")
    for manifest in kept:
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
    from graph_store import open_store
    from graph_store.embedded import export_graphml

    graph = _run(lambda: open_store(_settings(data_dir)).load(version))
    out.print(f"wrote {export_graphml(graph, target)}")


def _port_in_use(host: str, port: int) -> bool:
    """True when nothing could listen on host:port now (bound the way gunicorn binds, with SO_REUSEADDR)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _refuse_busy_port(host: str, port: int) -> None:
    if _port_in_use(host, port):
        err.print(
            f"[bold red]error:[/] port {port} on {host} is already in use (another `shelfgraph serve` or demo?). "
            f"Pick a free one with --port, e.g. --port {port + 1}, or stop what listens there.",
            highlight=False,
        )
        raise typer.Exit(1)


@app.command()
def demo(
    data_dir: DataDirOpt = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the server at the end.")] = True,
    port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8080,
    progress: ProgressOpt = True,
) -> None:
    """Ingest the bundled sample catalog and orders, distil, publish, and serve it.

    The graph goes to the normal data dir (.shelfgraph, or --data-dir / SHELFGRAPH_DATA_DIR), so `inspect`,
    `versions` and `serve` find it afterwards.

    Example: shelfgraph demo            (then open the printed curl in another terminal)
    Example: shelfgraph demo --no-serve && shelfgraph inspect SKU-10001
    """
    from distill.run import pipeline
    from graph_store import open_store

    host = "127.0.0.1"
    if serve_after:
        _refuse_busy_port(host, port)  # before minutes of work, not after
    settings = _settings(data_dir, store="embedded")
    catalog, interactions = _run(
        lambda: _load_inputs("catalog", SAMPLE_DIR / "catalog.csv", SAMPLE_DIR / "orders.csv", settings.max_rejected_rows)
    )
    out.print(f"ingested {_plural(len(catalog.products), 'product')}, "
              f"{_plural(len(catalog.report.rejected), 'row')} rejected")
    gateway = _run(lambda: pipeline.make_gateway(settings))
    result = _run(
        lambda: pipeline.run_pipeline(list(catalog.products), interactions, settings, gateway=gateway, progress=progress)
    )
    _print_report(result.report)
    store = _run(lambda: open_store(settings, "embedded"))
    version = _run(lambda: pipeline.publish(result, store))
    out.print(
        f"published graph version [bold]{version.version_id}[/] ({version.relation_counts}) "
        f"in {settings.embedded_store_dir}"
    )
    example = _demo_product(result.relations, catalog)
    dir_option = f" --data-dir {data_dir}" if data_dir is not None else ""
    out.print(f"look at it:  shelfgraph inspect {example}{dir_option}   |   shelfgraph versions{dir_option}",
              markup=False, highlight=False)
    if not serve_after:
        out.print("serve it:    " f"shelfgraph serve --port {port}{dir_option}", markup=False, highlight=False)
        out.print(f"             then open http://{host}:{port}/explore?product={example}", markup=False,
                  highlight=False)
        return
    _refuse_busy_port(host, port)  # something may have taken it while the pipeline ran
    out.print("\nTry it:")
    out.print(f"  curl -s http://{host}:{port}/v1/products/{example}/complements?k=5", markup=False)
    out.print(
        f"  curl -s -X POST http://{host}:{port}/v1/recommendations -H 'Content-Type: application/json' "
        f"-d '{{\"cart\": [\"{example}\"], \"k\": 5}}'",
        markup=False,
    )
    out.print(f"  explorer: http://{host}:{port}/explore?product={example}", markup=False)
    from serve.server import serve_forever
    from serve.settings import ServeSettings

    _run(lambda: serve_forever(ServeSettings(graph_dir=settings.embedded_store_dir, port=port, workers=1)))


@app.command()
def doctor(
    data_dir: DataDirOpt = None,
    llm_call: Annotated[
        bool, typer.Option("--llm-call/--no-llm-call", help="Send the configured model one tiny request.")
    ] = True,
) -> None:
    """Check the install and the configuration, one line each: Python and packages, the embedding weights,
    the data dir and its current version, the LLM (one tiny call when a model is set), Neo4j when configured.

    Exits with 1 when something needed is missing or broken; warnings and skipped checks do not fail.

    Example: shelfgraph doctor
    Example: SHELFGRAPH_LLM_MODEL=openai/gpt-4o-mini shelfgraph doctor
    """
    from shelfgraph.doctor import run_checks

    settings = _settings(data_dir)
    project = _project().path
    out.print(f"config: {project if project is not None else 'no shelfgraph.toml (defaults and SHELFGRAPH_*)'}",
              markup=False, highlight=False)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    checks = []
    for check in run_checks(settings, llm_call=llm_call):
        checks.append(check)
        out.print(f"[{style[check.status]}]{check.status:<4}[/] {check.name:<10} {escape(check.detail)}",
                  highlight=False)
        if check.hint and check.status != "ok":
            out.print(f"{'':15} -> {escape(check.hint)}", highlight=False)
    failures = [check.name for check in checks if check.status == "fail"]
    if failures:
        err.print(f"[bold red]doctor:[/] {len(failures)} needed {'piece is' if len(failures) == 1 else 'pieces are'} "
                  f"missing or broken: {', '.join(failures)}")
        raise typer.Exit(1)
    out.print("[green]doctor: all needed pieces are in place[/]")


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
