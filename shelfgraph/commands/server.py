"""The commands that serve a graph: serve, and demo (sample catalog -> distil -> publish -> serve)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from shelfgraph.commands.common import (
    SAMPLE_DIR,
    DataDirOpt,
    ProgressOpt,
    _load_inputs,
    _plural,
    _print_report,
    _project,
    _run,
    _settings,
    err,
    out,
)

if TYPE_CHECKING:
    from distill.ingest.catalog import Catalog


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


def _demo_product(relations: list, catalog: Catalog) -> str:  # type: ignore[type-arg]
    """The product with the most complements: a good first curl."""
    counts: dict[str, int] = {}
    for relation in relations:
        if relation.kind == "complement":
            counts[relation.source] = counts.get(relation.source, 0) + 1
    if counts:
        return max(sorted(counts), key=lambda pid: counts[pid])
    return catalog.products[0].id
