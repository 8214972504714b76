"""`distill --batch-api`: a whole run through a provider's batch API (half the price of live calls). For each
LLM stage: collect the pending requests (what --export-batch writes), upload them and create a batch,
persist its id in the run folder BEFORE waiting, poll with backoff, download the output and error files,
import the answers (each validated), settle the lines that failed, continue with the next stage.

Kill-safe: `batch-api.json` in the run folder names the batch in flight, so a resumed run polls that batch
and never resubmits what the provider already has. Failed lines: invalid answers are repaired live (the
repair prompt shows the model its batch answer), lines that did not run or failed transiently go into the
next batch (after `llm_max_attempts` batches they are asked live), lines the provider refused are rejected.
Every batch and its failed lines are reported. Talks to the provider only through the LLM gateway.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.llm.batch import FailedLine
from distill.llm.cache import cache_key
from distill.run.batch import batch_run_id
from distill.errors import ConfigError, LLMError, StageError
from distill.run.pipeline import DistillResult, make_gateway, run_pipeline
from distill.run.state import RunDir, _atomic_write_bytes
from distill.settings import DistillSettings
from graph_schema.models import LLMUsage, Product, Rejection

if TYPE_CHECKING:
    from distill.evidence.embed import TextEncoder
    from distill.ingest.catalog import Interactions
    from distill.llm.gateway import LLMGateway
    from distill.llm.provider_batch import ProviderBatch

STATE_FILE = "batch-api.json"
# HTTP statuses of a batch line worth sending again (the same set the live path retries).
_TRANSIENT_LINE = frozenset({408, 409, 425, 429})
Settle = Literal["live", "next_batch", "rejected"]


class InFlight(BaseModel):
    """The batch of one stage, from upload until its answers are imported."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    input_file_id: str
    batch_id: str | None = None
    """None only between the upload and the provider's answer to create (a kill there: looked up by file)."""
    custom_ids: list[str]
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class BatchRound(BaseModel):
    """One finished batch, as the run report tells it."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    batch_id: str
    status: str
    submitted: int
    answered: int
    failed: dict[str, int] = Field(default_factory=dict)
    """What became of the failed lines: live / next_batch / rejected -> count."""
    provider_errors: list[str] = Field(default_factory=list)
    usage: LLMUsage = Field(default_factory=LLMUsage)


class BatchState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_flight: InFlight | None = None
    rounds: list[BatchRound] = Field(default_factory=list)
    attempts: dict[str, int] = Field(default_factory=dict)
    """cache key -> batches it was sent in without getting an answer."""
    live: dict[str, tuple[str, str] | None] = Field(default_factory=dict)
    """cache key -> (invalid batch answer, why) for a live repair, or None to ask again live."""
    rejected: dict[str, Rejection] = Field(default_factory=dict)


@dataclass(frozen=True)
class BatchApiResult:
    result: DistillResult
    rounds: list[BatchRound]
    """Every batch of the run, resumed ones included."""


def run_batch_api(
    products: Sequence[Product], interactions: Interactions | None, settings: DistillSettings, *,
    encoder: TextEncoder | None = None, echo: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchApiResult:
    """Run the pipeline to completion with every LLM stage answered through the provider's batch API.
    Re-running after a kill resumes: the batch in flight is polled, never created again."""
    gateway = make_gateway(settings, mode="export")
    if gateway is None:
        raise ConfigError("--batch-api needs a model: set SHELFGRAPH_LLM_MODEL")
    run_id = batch_run_id(products)
    run = RunDir.open(settings.runs_dir, run_id)
    state = _load(run.path)
    while True:
        for key, repair in state.live.items():
            gateway.answer_live(key, repair)
        for key, rejection in state.rejected.items():
            gateway.reject_pending(key, rejection)
        result = run_pipeline(products, interactions, settings, gateway=gateway, run_id=run_id, progress=False,
                              encoder=encoder)
        if state.in_flight is not None:
            _collect(gateway, state, run.path, result, settings, echo, sleep)
            continue
        if result.complete:
            return BatchApiResult(_report(run, result, state), list(state.rounds))
        assert result.stopped_at is not None
        _submit(gateway, state, run.path, run_id, result.stopped_at, result.pending, echo)


def _submit(gateway: LLMGateway, state: BatchState, folder: Path, run_id: str, stage: str,
            pending: Sequence[Any], echo: Callable[[str], None]) -> None:
    number = len(state.rounds) + 1
    path = folder / "batch-api" / f"{number:03d}-{stage}-input.jsonl"
    if gateway.export_batch(pending, path) == 0:
        raise StageError(f"stage {stage} stopped on {len(pending)} pending requests, but none can be exported")
    custom_ids = [str(json.loads(line)["custom_id"]) for line in path.read_text(encoding="utf-8").splitlines()
                  if line.strip()]
    file_id = gateway.upload_batch_file(path)
    state.in_flight = InFlight(stage=stage, input_file_id=file_id, custom_ids=custom_ids)
    _save(folder, state)  # a kill from here on finds the batch by its input file
    batch = gateway.create_batch(file_id, metadata={"shelfgraph_run": run_id, "stage": stage})
    state.in_flight.batch_id = batch.id
    _save(folder, state)  # before the first poll: a resumed run waits for this batch
    echo(f"{stage}: submitted {len(custom_ids)} requests as batch {batch.id}")


def _collect(gateway: LLMGateway, state: BatchState, folder: Path, result: DistillResult,
             settings: DistillSettings, echo: Callable[[str], None], sleep: Callable[[float], None]) -> None:
    flight = state.in_flight
    assert flight is not None
    if flight.batch_id is None:
        found = gateway.find_batch(flight.input_file_id)
        if found is None:  # killed before the provider created it: nothing was submitted, submit again
            state.in_flight = None
            _save(folder, state)
            return
        flight.batch_id = found.id
        _save(folder, state)
    batch = _wait(gateway, flight.batch_id, flight.stage, settings, echo, sleep)
    # Lines are matched to the run's pending requests by cache key; lines the run no longer needs are ignored.
    files = [(batch.output_file_id, "output"), (batch.error_file_id, "errors")]
    usage = LLMUsage()
    failed: list[FailedLine] = []
    answered: set[str] = set()
    seen: set[str] = set()
    for file_id, kind in files:
        if file_id is None:
            continue
        path = gateway.download_batch_file(file_id, folder / "batch-api" / f"{batch.id}-{kind}.jsonl")
        report = gateway.import_batch(path, result.pending, stage=flight.stage)
        usage = usage.add(report.usage)
        failed += report.failed
        answered.update(report.answered)
        seen.update(report.answered, (line.custom_id for line in report.failed))
    # Lines in neither file: the whole batch failed (or the provider lost them): they did not run.
    failed += [FailedLine(key, "not_run", error="; ".join(batch.errors) or f"batch {batch.status}")
               for key in flight.custom_ids if key not in seen and key not in answered]
    by_key = {cache_key(settings.llm_model or "", prompt): prompt for prompt in result.pending}
    settled: Counter[str] = Counter()
    for line in failed:
        if line.custom_id in answered or line.custom_id not in by_key:
            continue
        settled[_settle(state, line, by_key[line.custom_id], flight.stage, settings)] += 1
    state.rounds.append(BatchRound(stage=flight.stage, batch_id=batch.id, status=batch.status,
                                   submitted=len(flight.custom_ids), answered=len(answered), failed=dict(settled),
                                   provider_errors=list(batch.errors), usage=usage))
    state.in_flight = None
    _save(folder, state)
    retried = ", ".join(f"{count} {how.replace('_', ' ')}" for how, count in sorted(settled.items()))
    echo(f"{flight.stage}: batch {batch.id} {batch.status}: {len(answered)} of {len(flight.custom_ids)} answered"
         + (f"; failed lines: {retried}" if retried else ""))


def _settle(state: BatchState, line: FailedLine, prompt: Any, stage: str, settings: DistillSettings) -> Settle:
    """Decide what becomes of one failed line (recorded in the state, so a resumed run decides the same)."""
    key = line.custom_id
    if line.kind == "invalid_output":
        state.live[key] = (line.content or "", line.error) if line.content is not None else None
        return "live"
    status = line.status_code
    if line.kind == "http_error" and status is not None and status < 500 and status not in _TRANSIENT_LINE:
        item = ",".join(prompt.item_ids) if prompt.item_ids else f"{prompt.name}@{prompt.version}"
        state.rejected[key] = Rejection(stage=stage, item=item, reason=f"batch request refused (HTTP {status})",
                                        raw=line.error[:2000])
        return "rejected"
    state.attempts[key] = state.attempts.get(key, 0) + 1
    if state.attempts[key] >= settings.llm_max_attempts:
        state.live[key] = None
        return "live"
    return "next_batch"


def _wait(gateway: LLMGateway, batch_id: str, stage: str, settings: DistillSettings,
          echo: Callable[[str], None], sleep: Callable[[float], None]) -> ProviderBatch:
    delay = settings.llm_batch_poll_s
    last: tuple[str, int, int] | None = None
    while True:
        try:
            batch = gateway.retrieve_batch(batch_id)
        except LLMError as exc:
            raise LLMError(f"{exc}. The batch stays recorded in {STATE_FILE}: re-run to keep waiting for it.",
                           cause=exc.cause) from exc
        progress = (batch.status, batch.completed, batch.failed)
        if progress != last:
            echo(f"{stage}: batch {batch.id} {batch.status} ({batch.completed}/{batch.total} done, "
                 f"{batch.failed} failed)")
            last = progress
        if batch.done:
            return batch
        sleep(delay)
        delay = min(settings.llm_batch_poll_max_s, delay * 1.5)


def _report(run: RunDir, result: DistillResult, state: BatchState) -> DistillResult:
    """The completed run's report with what the batches cost (the run itself read them from the cache)."""
    by_stage: dict[str, LLMUsage] = {}
    for round_ in state.rounds:
        by_stage[round_.stage] = by_stage.get(round_.stage, LLMUsage()).add(round_.usage)
        failed = ", ".join(f"{n} {how.replace('_', ' ')}" for how, n in sorted(round_.failed.items()))
        result.report.notes.append(
            f"batch api: {round_.stage} batch {round_.batch_id} {round_.status}, {round_.answered} of "
            f"{round_.submitted} answered at batch prices (${round_.usage.cost_usd:.4f})"
            + (f"; failed lines: {failed}" if failed else "")
            + (f"; provider: {'; '.join(round_.provider_errors)}" if round_.provider_errors else ""))
    for stage in result.report.stages:
        if stage.stage in by_stage:
            stage.llm = stage.llm.add(by_stage[stage.stage])
    run.write_report(result.report)
    return result


def _load(folder: Path) -> BatchState:
    path = folder / STATE_FILE
    if not path.exists():
        return BatchState()
    return BatchState.model_validate_json(path.read_text(encoding="utf-8"))


def _save(folder: Path, state: BatchState) -> None:
    _atomic_write_bytes(folder / STATE_FILE, state.model_dump_json(indent=2).encode("utf-8"))
