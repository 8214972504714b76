"""The commands that read published graph versions: inspect, versions, export-graphml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shelfgraph.commands.common import DataDirOpt, _nothing_published, _run, _settings, err, out


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
