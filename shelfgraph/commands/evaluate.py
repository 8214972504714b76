"""`shelfgraph eval`: graph quality against held-out ground truth, next to baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from shelfgraph.commands.common import (
    DataDirOpt,
    ExportBatchOpt,
    ImportBatchOpt,
    MaxRejectedOpt,
    ProgressOpt,
    _run,
    _settings,
    err,
    out,
)


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
    from evaluation.results import EvalResult
    from evaluation.run import BatchPending, evaluate

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
