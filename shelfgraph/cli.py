"""`shelfgraph`: the one command line. A thin shell over library functions.

Each command parses options, calls one library function and prints its result. Library errors
(ShelfgraphError) become one-line messages and a non-zero exit; nothing here holds pipeline logic.
The commands live in shelfgraph/commands/ by concern; this module is the app and the order of its commands.
"""

from __future__ import annotations

import typer

from shelfgraph.commands import checks, data, evaluate, graph, server
from shelfgraph.commands.common import SAMPLE_DIR, _project_file

app = typer.Typer(
    name="shelfgraph",
    help="Distil what LLMs know about products into a product graph served in milliseconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.callback()(_project_file)
# In the order `shelfgraph --help` lists them.
app.command()(data.ingest)
app.command()(data.distill)
app.command(name="publish")(data.publish_cmd)
app.command()(data.nightly)
app.command()(server.serve)
app.command(name="eval")(evaluate.eval_cmd)
app.command()(graph.inspect)
app.command()(graph.versions)
app.command(name="export-graphml")(graph.export_graphml_cmd)
app.command()(server.demo)
app.command()(checks.doctor)


def main() -> None:
    app()


__all__ = ["SAMPLE_DIR", "app", "main"]

if __name__ == "__main__":
    main()
