"""`shelfgraph doctor`: the install and configuration checks, one line each (library: shelfgraph.doctor)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from shelfgraph.commands.common import DataDirOpt, _project, _settings, err, out


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
