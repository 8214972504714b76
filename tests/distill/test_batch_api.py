"""`distill --batch-api` end to end through the real litellm files/batches client against the local fake
server (tests/fakes/batch_api.py): submit, poll, download, import, next stage, complete; a SIGKILL between
submit and download, then a resume that polls the same batch; failed, expired and partial batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.llm.cache import ResponseCache
from distill.run.batch import batch_run_id
from distill.run.batch_api import STATE_FILE, BatchApiResult, run_batch_api
from distill.errors import RateLimited
from distill.llm.gateway import LLMGateway
from distill.llm.retry import REPAIR_INSTRUCTION
from distill.settings import DistillSettings
from tests.fakes.batch_api import Outcome
from distill.llm.prompts import parse_data_block
from tests.fakes.openai_server import Failure, FakeOpenAIServer, first_user_content
from tests.fakes.responders import HashingEncoder, catalog_responder, sample_subset

REPO_ROOT = Path(__file__).resolve().parents[2]
BATCHED_STAGES = ("enrich", "propose", "verify")  # ground reuses propose's answers; it has no prompts of its own


@pytest.fixture(scope="module")
def catalog():
    return sample_subset(("Phones",), limit=16)


@pytest.fixture()
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=catalog_responder) as fake:
        yield fake


def settings_for(tmp_path: Path, server: FakeOpenAIServer, **extra: object) -> DistillSettings:
    fields: dict[str, object] = {"max_complements": 5, "max_substitutes": 3, "verify_batch_size": 20,
                                 "llm_batch_poll_s": 0.01, "llm_batch_poll_max_s": 0.02, **extra}
    return DistillSettings(data_dir=tmp_path, llm_model="openai/fake-model", llm_api_base=server.base_url,
                           llm_api_key="test", llm_max_attempts=2, **fields)  # type: ignore[arg-type]


def run(products, interactions, settings: DistillSettings, messages: list[str] | None = None) -> BatchApiResult:
    return run_batch_api(products, interactions, settings, encoder=HashingEncoder(),
                         echo=(messages.append if messages is not None else lambda _: None), sleep=lambda _: None)


def stages_of(server: FakeOpenAIServer) -> list[str]:
    """The stage of every batch the server saw created, in order (from the metadata the run sends)."""
    return [server.batches.metadata(batch_id)["stage"] for batch_id in server.batches.created]


# ------------------------------------------------------------------------------------------- gateway calls


def test_gateway_uploads_creates_polls_and_downloads_through_litellm(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:  # echo answers
        check_gateway_cycle(tmp_path, server)


def check_gateway_cycle(tmp_path: Path, server: FakeOpenAIServer) -> None:
    settings = settings_for(tmp_path, server)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), mode="export")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": {"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}})
                            + "\n" for i in range(3)))
    server.batches.inject_http(Failure("rate_limit", retry_after=0.01))  # the upload is retried after a 429
    file_id = gateway.upload_batch_file(path)
    batch = gateway.create_batch(file_id, metadata={"stage": "test"})
    assert batch.status == "validating" and batch.input_file_id == file_id and not batch.done
    assert gateway.find_batch(file_id) is not None and gateway.find_batch("file-unknown") is None
    statuses = []
    while not batch.done:
        batch = gateway.retrieve_batch(batch.id)
        statuses.append(batch.status)
    assert statuses == ["in_progress", "finalizing", "completed"]
    assert (batch.total, batch.completed, batch.failed) == (3, 3, 0)
    assert batch.output_file_id is not None
    out = gateway.download_batch_file(batch.output_file_id, tmp_path / "out.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in records) == ["k0", "k1", "k2"]
    assert all(r["response"]["status_code"] == 200 for r in records)
    assert server.batches.uploads == [file_id] and len(server.batches.created) == 1
    assert server.call_count == 0, "a batch is not a live call"


def test_persistent_429_on_the_batch_endpoints_is_a_clear_error(tmp_path: Path, server: FakeOpenAIServer) -> None:
    settings = settings_for(tmp_path, server)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), mode="export")
    server.batches.inject_http(*[Failure("rate_limit", retry_after=0.01)] * 2)
    with pytest.raises(RateLimited, match="polling batch batch_x"):
        gateway.retrieve_batch("batch_x")


def test_batch_cost_uses_litellms_batch_prices(tmp_path: Path) -> None:
    settings = DistillSettings(data_dir=tmp_path, llm_model="openai/gpt-4o-mini", llm_api_key="test")
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path))
    batch = gateway._batch_cost("openai/gpt-4o-mini", 1_000_000, 1_000_000)
    live = gateway.estimate_cost("openai/gpt-4o-mini", 1_000_000, 1_000_000)
    assert batch == pytest.approx(0.075 + 0.30) and live == pytest.approx(0.15 + 0.60)


# ---------------------------------------------------------------------------------------------- the cycle


def test_batch_api_cycle_runs_every_llm_stage_as_a_batch_and_completes(tmp_path: Path, server, catalog) -> None:
    products, interactions = catalog
    messages: list[str] = []
    outcome = run(products, interactions, settings_for(tmp_path, server), messages)
    result = outcome.result
    assert result.complete and result.relations
    assert server.call_count == 0, "every answer came through the batch API"
    assert stages_of(server) == list(BATCHED_STAGES)
    assert [r.stage for r in outcome.rounds] == list(BATCHED_STAGES)
    assert all(r.status == "completed" and r.answered == r.submitted > 0 and not r.failed for r in outcome.rounds)
    # Every line the server answered is one the run asked for once.
    assert len(server.batches.line_bodies) == sum(r.submitted for r in outcome.rounds)
    stages = {s.stage: s for s in result.report.stages}
    for stage in BATCHED_STAGES:
        assert stages[stage].llm.calls == next(r.submitted for r in outcome.rounds if r.stage == stage)
    assert sum(1 for note in result.report.notes if note.startswith("batch api:")) == len(BATCHED_STAGES)
    assert any("in_progress" in m for m in messages) and any("submitted" in m for m in messages)
    state = json.loads((result.run_dir / STATE_FILE).read_text())
    assert state["in_flight"] is None and len(state["rounds"]) == 3
    # A second run finds everything answered: no new batch.
    again = run(products, interactions, settings_for(tmp_path, server))
    assert again.result.complete and len(server.batches.created) == 3


def test_partial_batch_resubmits_only_the_failed_lines(tmp_path: Path, server, catalog) -> None:
    products, interactions = catalog
    server.batches.inject_outcome(Outcome("partial", every=2, status_code=500))  # enrich: 2 lines, 1 fails
    outcome = run(products, interactions, settings_for(tmp_path, server))
    assert outcome.result.complete
    first, second = server.batches.created[:2]
    assert stages_of(server)[:2] == ["enrich", "enrich"]
    failed_ids = {line["custom_id"] for i, line in enumerate(server.batches.input_lines(first)) if i % 2 == 1}
    assert failed_ids and {line["custom_id"] for line in server.batches.input_lines(second)} == failed_ids
    assert outcome.rounds[0].failed == {"next_batch": len(failed_ids)}
    assert server.call_count == 0
    assert any("failed lines" in note for note in outcome.result.report.notes)


def test_expired_batch_resubmits_what_did_not_run(tmp_path: Path, server, catalog) -> None:
    products, interactions = catalog
    server.batches.inject_outcome(Outcome("expired", every=2))
    outcome = run(products, interactions, settings_for(tmp_path, server))
    assert outcome.result.complete and outcome.rounds[0].status == "expired"
    first_lines = server.batches.input_lines(server.batches.created[0])
    ran = {line["custom_id"] for line in first_lines[: len(first_lines) // 2]}
    resubmitted = {line["custom_id"] for line in server.batches.input_lines(server.batches.created[1])}
    assert resubmitted and not (resubmitted & ran), "what the provider answered is never sent again"
    assert resubmitted | ran == {line["custom_id"] for line in first_lines}


def test_failed_batches_fall_back_to_live_calls_after_max_attempts(tmp_path: Path, server, catalog) -> None:
    products, interactions = catalog
    server.batches.inject_outcome("failed", "failed")  # llm_max_attempts=2: the second failure goes live
    outcome = run(products, interactions, settings_for(tmp_path, server))
    assert outcome.result.complete
    assert [r.status for r in outcome.rounds[:2]] == ["failed", "failed"]
    assert outcome.rounds[0].provider_errors and "failed validation" in outcome.rounds[0].provider_errors[0]
    submitted = outcome.rounds[1].submitted
    assert outcome.rounds[1].failed == {"live": submitted}
    assert server.call_count == submitted, "the enrich requests were answered live, once each"
    assert stages_of(server) == ["enrich", "enrich", "propose", "verify"]


def test_invalid_batch_answers_are_repaired_live_and_refused_lines_rejected(tmp_path: Path, server, catalog) -> None:
    products, interactions = catalog

    def first_answer_invalid(body):  # the batch's answers to propose are prose; a repair request validates
        payload = parse_data_block(first_user_content(body))
        if "product" in payload and not any(m["role"] == "assistant" for m in body["messages"]):
            return Failure("invalid_json")
        return None

    server.failure_rule = first_answer_invalid
    server.batches.inject_outcome(Outcome("partial", every=2, status_code=400))  # enrich: some lines refused
    outcome = run(products, interactions, settings_for(tmp_path, server))
    result = outcome.result
    assert result.complete
    refused = outcome.rounds[0].failed["rejected"]
    assert refused > 0
    rejected = [r for r in result.rejections if "batch request refused (HTTP 400)" in r.reason]
    assert rejected and all(r.stage == "enrich" for r in rejected)
    propose = next(r for r in outcome.rounds if r.stage == "propose")
    assert propose.failed == {"live": propose.submitted}
    assert server.call_count == propose.submitted
    for body in server.requests:  # every live request was the repair prompt with the batch's own answer
        assert body["messages"][-2] == {"role": "assistant", "content": "I am sorry, I cannot answer that in JSON."}
        assert body["messages"][-1]["content"].startswith(REPAIR_INSTRUCTION.split("{error}")[0])


# ------------------------------------------------------------------------------------------ kill and resume

_CHILD = """
import json, sys
from pathlib import Path
from distill.run.batch_api import run_batch_api
from distill.settings import DistillSettings
from tests.fakes.responders import HashingEncoder, sample_subset
products, interactions = sample_subset(("Phones",), limit=16)
settings = DistillSettings(**json.loads(Path(sys.argv[1]).read_text()))
run_batch_api(products, interactions, settings, encoder=HashingEncoder(), echo=lambda m: print(m, flush=True))
"""


def test_kill_between_submit_and_download_then_resume_polls_the_same_batch(tmp_path: Path, server, catalog) -> None:
    products, interactions = catalog
    settings = settings_for(tmp_path, server)
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(settings.model_dump_json(exclude={"llm_api_key", "neo4j_password"}))
    server.batches.hold = True  # the batch stays in progress: the child is killed while it waits
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SHELFGRAPH_LLM_API_KEY": "test"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(settings_file)], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (server.batches.created and len(server.batches.retrieved) >= 2):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never submitted and polled a batch"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    submitted = server.batches.created[0]
    state = json.loads((settings.runs_dir / batch_run_id(products) / STATE_FILE).read_text())
    assert state["in_flight"]["batch_id"] == submitted and state["in_flight"]["stage"] == "enrich"
    assert server.batches.downloads == [], "killed before anything was downloaded"
    polls_before = len(server.batches.retrieved)

    server.batches.hold = False
    outcome = run(products, interactions, settings)
    assert outcome.result.complete
    assert server.batches.retrieved[polls_before] == submitted, "the resumed run polled the batch in flight"
    assert stages_of(server) == list(BATCHED_STAGES), "the enrich batch was created exactly once"
    assert outcome.rounds[0].batch_id == submitted and outcome.rounds[0].answered == outcome.rounds[0].submitted
    assert server.call_count == 0


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_distill_batch_api_runs_to_completion(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from shelfgraph.cli import app

    for name, value in {"LLM_MODEL": "openai/fake-model", "LLM_API_BASE": server.base_url, "LLM_API_KEY": "test",
                        "LLM_BATCH_POLL_S": "0.01", "LLM_BATCH_POLL_MAX_S": "0.02"}.items():
        monkeypatch.setenv(f"SHELFGRAPH_{name}", value)
    catalog = REPO_ROOT / "shelfgraph" / "sample" / "foreign-catalog.csv"
    done = CliRunner().invoke(app, ["distill", str(catalog), "--data-dir", str(tmp_path), "--batch-api", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "enrich: submitted" in done.output and "completed" in done.output
    assert server.batches.created and server.call_count == 0


def test_cli_batch_api_without_a_model_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from shelfgraph.cli import app

    monkeypatch.delenv("SHELFGRAPH_LLM_MODEL", raising=False)
    catalog = REPO_ROOT / "shelfgraph" / "sample" / "foreign-catalog.csv"
    done = CliRunner().invoke(app, ["distill", str(catalog), "--data-dir", str(tmp_path), "--batch-api"])
    assert done.exit_code == 1 and "--batch-api needs a model" in " ".join(done.output.split())


def test_kill_after_create_before_its_id_is_saved_finds_the_batch_by_its_file(
    tmp_path: Path, server, catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    products, interactions = catalog
    settings = settings_for(tmp_path, server)
    original = LLMGateway.create_batch

    def create_then_die(self, input_file_id, **kwargs):
        original(self, input_file_id, **kwargs)  # the provider has the batch ...
        raise SystemExit("killed")  # ... and the process dies before writing its id

    monkeypatch.setattr(LLMGateway, "create_batch", create_then_die)
    with pytest.raises(SystemExit):
        run(products, interactions, settings)
    state = json.loads((settings.runs_dir / batch_run_id(products) / STATE_FILE).read_text())
    assert state["in_flight"]["batch_id"] is None and state["in_flight"]["input_file_id"] == server.batches.uploads[0]
    monkeypatch.setattr(LLMGateway, "create_batch", original)
    outcome = run(products, interactions, settings)
    assert outcome.result.complete
    assert outcome.rounds[0].batch_id == server.batches.created[0]
    assert stages_of(server) == list(BATCHED_STAGES), "the enrich batch was not created twice"
