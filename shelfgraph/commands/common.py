"""What the command modules share: the consoles, the project file the root command read, the settings,
the option types, reading the inputs, and turning library errors into one-line messages (`_run`).
The underscore names are this package's own helpers; nothing outside shelfgraph/ uses them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from distill.errors import ShelfgraphError

if TYPE_CHECKING:
    from distill.ingest.catalog import Catalog, ColumnMapping, Interactions
    from distill.settings import DistillSettings
    from shelfgraph.config import ProjectConfig

# Reports are tables: give them room when stdout is a pipe or a cron log (rich would default to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"
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


def _nothing_published(settings: DistillSettings) -> None:
    where = _run(lambda: _store_target(settings))
    err.print(
        f"[bold red]error:[/] no graph version published in {where} yet. Publish one with "
        "`shelfgraph distill FILE --publish` (or `shelfgraph demo`), or point at another data dir with --data-dir.",
        highlight=False,
    )
    raise typer.Exit(1)


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
