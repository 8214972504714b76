"""LLMGateway driven through the real litellm client against a real local OpenAI-compatible server
(tests/fakes/openai_server.py) that injects 429s, 5xx, timeouts, bad JSON and auth failures."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from distill.llm.cache import ResponseCache, cache_key
from distill.errors import BudgetExceeded, ConfigError, ModelUnavailable, TerminalLLMError
from distill.llm.answers import extract_json, parse_answer
from distill.llm.gateway import LLMGateway
from distill.llm.prompts import ChatMessage, RenderedPrompt, data_block
from distill.settings import DistillSettings
from tests.fakes.openai_server import Failure, FakeOpenAIServer, first_user_content

REPO_ROOT = Path(__file__).resolve().parents[2]


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str
    label: str


def make_prompt(item: str, version: str = "1") -> RenderedPrompt[Label]:
    return RenderedPrompt(
        name="label",
        version=version,
        messages=(
            ChatMessage("system", "Label the product. Answer with JSON {item, label}."),
            ChatMessage("user", data_block({"id": item})),
        ),
        response_model=Label,
        item_ids=(item,),
    )


def item_of(body: dict[str, Any]) -> str:
    payload = first_user_content(body).split("\n")[1]
    return str(json.loads(payload)["id"])


def label_responder(body: dict[str, Any]) -> str:
    item = item_of(body)
    return json.dumps({"item": item, "label": f"label-{item}"})


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(label_responder) as running:
        yield running


def make_settings(server: FakeOpenAIServer, tmp_path: Path, **overrides: Any) -> DistillSettings:
    values: dict[str, Any] = {
        "llm_model": "openai/fake-model",
        "llm_api_base": server.base_url,
        "llm_api_key": "test",
        "data_dir": tmp_path,
        "llm_concurrency": 4,
        "llm_timeout_s": 1.0,
        "llm_max_attempts": 3,
    }
    values.update(overrides)
    return DistillSettings(**values)


def make_gateway(server: FakeOpenAIServer, tmp_path: Path, **overrides: Any) -> LLMGateway:
    settings = make_settings(server, tmp_path, **overrides)
    return LLMGateway(
        settings, ResponseCache(settings.cache_path), backoff_base_s=0.01, backoff_cap_s=0.05, expected_output_tokens=16
    )


def test_answers_validate_and_come_back_in_order(server: FakeOpenAIServer, tmp_path: Path) -> None:
    gateway = make_gateway(server, tmp_path)
    prompts = [make_prompt(f"p{i}") for i in range(6)]
    results = gateway.run_many(prompts, stage="label", progress=False)
    assert [r.value.item if r.value else None for r in results] == [f"p{i}" for i in range(6)]
    assert all(not r.cached and r.rejection is None for r in results)
    assert server.call_count == 6
    usage = gateway.usage("label")
    assert (usage.calls, usage.failed_calls, usage.cached_calls) == (6, 0, 0)
    # JSON mode was requested (schema mode downgraded only if the provider refused it).
    assert all(body.get("response_format") is not None for body in server.requests)


def test_identical_rerun_makes_zero_calls(server: FakeOpenAIServer, tmp_path: Path) -> None:
    prompts = [make_prompt(f"p{i}") for i in range(5)]
    make_gateway(server, tmp_path).run_many(prompts, stage="label", progress=False)
    assert server.call_count == 5
    again = make_gateway(server, tmp_path)
    results = again.run_many(prompts, stage="label", progress=False)
    assert server.call_count == 5
    assert all(r.cached and r.value is not None for r in results)
    assert again.usage("label").cached_calls == 5 and again.usage("label").calls == 0


def test_duplicate_prompts_in_one_run_are_sent_once(server: FakeOpenAIServer, tmp_path: Path) -> None:
    results = make_gateway(server, tmp_path).run_many([make_prompt("a"), make_prompt("a")], stage="s", progress=False)
    assert server.call_count == 1
    assert [r.value for r in results] == [Label(item="a", label="label-a")] * 2


@pytest.mark.parametrize(
    "failure",
    [Failure("rate_limit", retry_after=0.05), Failure("server_error"), Failure("unavailable"), Failure("timeout", sleep_s=3.0)],
    ids=["429", "500", "503", "timeout"],
)
def test_transient_errors_are_retried(server: FakeOpenAIServer, tmp_path: Path, failure: Failure) -> None:
    server.inject(failure, failure)
    gateway = make_gateway(server, tmp_path, llm_concurrency=1, llm_timeout_s=0.5)
    [result] = gateway.run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value == Label(item="x", label="label-x")
    assert result.attempts == 3
    assert server.call_count == 3
    assert gateway.usage("s").failed_calls == 2


class RecordingSleep:
    """Stands in for asyncio.sleep and the clock: records the waits the gateway asks for and advances a
    virtual clock by them instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 1000.0

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def clock(self) -> float:
        return self.now


def test_retry_after_is_honoured(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.inject(Failure("rate_limit", retry_after=7), Failure("rate_limit", retry_after=None))
    sleep = RecordingSleep()
    settings = make_settings(server, tmp_path, llm_concurrency=1)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), backoff_base_s=0.2, backoff_cap_s=5, sleep=sleep)
    [result] = gateway.run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value is not None and server.statuses == [429, 429, 200]
    first, second, third = server.requests
    assert first == second == third  # the same request, resent
    # The server's Retry-After is obeyed; without one, full-jitter backoff stays within base * 2**(attempt-1).
    assert sleep.delays[0] == 7
    assert 0 <= sleep.delays[1] <= 0.4


def test_requests_per_minute_are_spaced(server: FakeOpenAIServer, tmp_path: Path) -> None:
    sleep = RecordingSleep()
    settings = make_settings(server, tmp_path, llm_concurrency=1, llm_rpm=60)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), sleep=sleep, clock=sleep.clock)
    gateway.run_many([make_prompt(f"p{i}") for i in range(4)], stage="s", progress=False)
    # 60 rpm = one request a second: the first goes at once, each later one waits for its slot (the virtual
    # clock only moves by the waits, so each wait is the whole second).
    assert sleep.delays == pytest.approx([1.0, 1.0, 1.0])


def test_transient_errors_exhausted_fall_back_to_next_model(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("unavailable") if body["model"] == "primary" else None
    gateway = make_gateway(server, tmp_path, llm_model="openai/primary", llm_fallback_models=["openai/backup"])
    [result] = gateway.run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value is not None and result.model == "openai/backup"
    assert [body["model"] for body in server.requests] == ["primary"] * 3 + ["backup"]
    # The fallback's answer is cached and found again by a re-run (no new calls).
    again = make_gateway(server, tmp_path, llm_model="openai/primary", llm_fallback_models=["openai/backup"])
    [cached] = again.run_many([make_prompt("x")], stage="s", progress=False)
    assert cached.cached and server.call_count == 4


def test_all_models_exhausted_is_a_rejection_not_an_empty_answer(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("server_error") if item_of(body) == "x" else None
    ok, failed = make_gateway(server, tmp_path).run_many([make_prompt("ok"), make_prompt("x")], stage="s", progress=False)
    assert ok.value is not None
    assert failed.value is None and failed.rejection is not None
    assert failed.rejection.item == "x" and "unavailable" in failed.rejection.reason


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_model_stops_the_run_naming_connection_refused(tmp_path: Path) -> None:
    settings = DistillSettings(llm_model="openai/fake-model", llm_api_base=f"http://127.0.0.1:{closed_port()}/v1",
                               llm_api_key="test", data_dir=tmp_path, llm_concurrency=4, llm_max_attempts=3,
                               llm_breaker_failures=5)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), backoff_base_s=0.01, backoff_cap_s=0.05)
    with pytest.raises(ModelUnavailable, match="connection refused") as info:
        gateway.run_many([make_prompt(f"p{i}") for i in range(40)], stage="enrich", progress=False)
    assert info.value.cause.startswith("connection refused")
    # The breaker opened after 5 failures in a row: not 40 prompts x 3 attempts.
    assert gateway.usage("enrich").calls < 5 + settings.llm_concurrency * 2


def test_every_call_of_a_stage_failing_stops_the_run(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("server_error")
    with pytest.raises(ModelUnavailable, match="all 2 prompts of the stage failed.*HTTP 500"):
        make_gateway(server, tmp_path, llm_concurrency=1).run_many(
            [make_prompt("a"), make_prompt("b")], stage="s", progress=False)


def test_breaker_sends_no_more_requests_to_a_down_model(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("unavailable") if body["model"] == "primary" else None
    gateway = make_gateway(server, tmp_path, llm_model="openai/primary", llm_fallback_models=["openai/backup"],
                           llm_concurrency=1, llm_breaker_failures=2)
    results = gateway.run_many([make_prompt(f"p{i}") for i in range(5)], stage="s", progress=False)
    assert all(r.value is not None and r.model == "openai/backup" for r in results)
    assert [body["model"] for body in server.requests].count("primary") == 2


def test_rate_limits_do_not_open_the_breaker(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.inject(*[Failure("rate_limit", retry_after=0.01)] * 4)
    gateway = make_gateway(server, tmp_path, llm_concurrency=1, llm_max_attempts=6, llm_breaker_failures=2)
    [result] = gateway.run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value is not None and server.call_count == 5


def test_invalid_json_then_valid_is_repaired_with_feedback(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.inject("invalid_json")
    gateway = make_gateway(server, tmp_path, llm_concurrency=1)
    [result] = gateway.run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value == Label(item="x", label="label-x") and result.attempts == 2
    usage = gateway.usage("s")
    assert (usage.calls, usage.failed_calls) == (2, 1)
    repair = server.requests[1]["messages"]
    assert repair[-2]["role"] == "assistant" and "cannot answer" in repair[-2]["content"]
    assert repair[-1]["role"] == "user" and "could not be used" in repair[-1]["content"]


@pytest.mark.parametrize("kind", ["truncated_json", "extra_fields"])
def test_truncated_or_extra_field_output_is_retried(server: FakeOpenAIServer, tmp_path: Path, kind: str) -> None:
    server.inject(kind)  # type: ignore[arg-type]
    [result] = make_gateway(server, tmp_path).run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value == Label(item="x", label="label-x")
    assert server.call_count == 2


def test_always_invalid_is_rejected_with_raw_text_and_others_succeed(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.content_hook = lambda body, content: "no idea, sorry" if item_of(body) == "bad" else content
    prompts = [make_prompt("ok1"), make_prompt("bad"), make_prompt("ok2")]
    gateway = make_gateway(server, tmp_path)
    results = gateway.run_many(prompts, stage="s", progress=False)
    assert [r.value is not None for r in results] == [True, False, True]
    rejection = results[1].rejection
    assert rejection is not None and rejection.item == "bad" and rejection.raw == "no idea, sorry"
    assert rejection.stage == "s" and "invalid output after 3 attempts" in rejection.reason
    assert server.calls_by_prompt()[first_user_content(server.requests[0])] >= 1
    # Rejected answers are not cached: a later run (say, with a better prompt version) asks again.
    assert gateway.cache.count() == 2


def test_hallucinated_content_from_hook_reaches_validation(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.content_hook = lambda body, content: json.dumps({"item": "does-not-exist", "label": "x"})
    [result] = make_gateway(server, tmp_path).run_many([make_prompt("x")], stage="s", progress=False)
    # The gateway only checks the schema; catalog grounding of ids is the pipeline's job.
    assert result.value == Label(item="does-not-exist", label="x")


def test_tolerant_json_extraction() -> None:
    assert extract_json('Sure! Here it is:\n```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert extract_json('Result: {"a": 1} hope that helps {"b": 2}') == {"a": 1}
    assert extract_json("[1, 2]") == [1, 2]
    with pytest.raises(ValueError):
        extract_json('{"a": ')
    value, error = parse_answer('{"item": "x"}', Label)
    assert value is None and error is not None and "label" in error


def test_terminal_error_raises_fast_without_retries(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("unauthorized")
    gateway = make_gateway(server, tmp_path, llm_concurrency=1)
    with pytest.raises(TerminalLLMError, match="AuthenticationError") as info:
        gateway.run_many([make_prompt(f"p{i}") for i in range(5)], stage="s", progress=False)
    assert server.call_count == 1
    assert info.value.__cause__ is not None


def test_context_window_is_terminal_without_retries(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("context_window")
    with pytest.raises(TerminalLLMError, match="ContextWindowExceededError"):
        make_gateway(server, tmp_path).run_many([make_prompt("x")], stage="s", progress=False)
    assert server.call_count == 1


@pytest.mark.parametrize("kind", ["content_policy", "content_filter"], ids=["openai", "azure"])
def test_content_policy_refusal_rejects_only_that_prompt(server: FakeOpenAIServer, tmp_path: Path, kind: str) -> None:
    server.failure_rule = lambda body: Failure(kind) if item_of(body) == "edgy" else None  # type: ignore[arg-type]
    prompts = [make_prompt("a"), make_prompt("edgy"), make_prompt("b")]
    results = make_gateway(server, tmp_path, llm_concurrency=1).run_many(prompts, stage="s", progress=False)
    assert results[0].value is not None and results[2].value is not None
    assert results[1].rejection is not None and "content policy" in results[1].rejection.reason
    # Recognised by the provider's error code: one request for the refused prompt, JSON mode never weakened.
    assert server.call_count == 3
    assert all((body.get("response_format") or {}).get("type") == "json_schema" for body in server.requests)


def test_plain_bad_request_is_terminal_and_keeps_json_mode(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("bad_request")
    gateway = make_gateway(server, tmp_path, llm_concurrency=1)
    with pytest.raises(TerminalLLMError, match="Bad request"):
        gateway.run_many([make_prompt("a")], stage="s", progress=False)
    assert server.call_count == 1


def test_tokens_per_minute_limit_makes_requests_wait(server: FakeOpenAIServer, tmp_path: Path) -> None:
    sleep = RecordingSleep()
    settings = make_settings(server, tmp_path, llm_concurrency=1, llm_tpm=100)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), sleep=sleep, clock=sleep.clock, expected_output_tokens=16)
    results = gateway.run_many([make_prompt(f"p{i}") for i in range(6)], stage="s", progress=False)
    assert all(r.value is not None for r in results)
    # Six requests of ~35 tokens (~55 reserved each) do not fit in a 100-token minute: some must wait, and
    # over the run the waits add up to at least the time the bucket needs to refill what was used beyond it.
    used = gateway.usage("s").input_tokens + gateway.usage("s").output_tokens
    assert used > 100 and sleep.delays
    assert sum(sleep.delays) >= (used - 100) / (100 / 60) * 0.9


@pytest.mark.parametrize("kind", ["response_format_rejected", "response_format_param"], ids=["message", "param"])
def test_provider_rejecting_response_format_falls_back(server: FakeOpenAIServer, tmp_path: Path, kind: str) -> None:
    server.failure_rule = lambda body: Failure(kind) if body.get("response_format") else None  # type: ignore[arg-type]
    gateway = make_gateway(server, tmp_path, llm_concurrency=1)
    results = gateway.run_many([make_prompt("a"), make_prompt("b")], stage="s", progress=False)
    assert all(r.value is not None for r in results)
    formats = [(body.get("response_format") or {}).get("type") for body in server.requests]
    # schema refused, json_object refused, plain works; the second prompt starts at the level that worked.
    assert formats == ["json_schema", "json_object", None, None]


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LLMGateway(DistillSettings(data_dir=tmp_path), ResponseCache(tmp_path / "c.sqlite"))


def test_usage_and_cost_add_up_for_a_priced_model(server: FakeOpenAIServer, tmp_path: Path) -> None:
    gateway = make_gateway(server, tmp_path, llm_model="openai/gpt-4o-mini")
    server.inject("invalid_json")
    gateway.run_many([make_prompt(f"p{i}") for i in range(4)], stage="enrich", progress=False)
    gateway.run_many([make_prompt(f"q{i}") for i in range(3)], stage="verify", progress=False)
    enrich, verify = gateway.usage("enrich"), gateway.usage("verify")
    assert enrich.calls == 5 and verify.calls == 3
    # The server's own token counts are what the gateway records.
    assert enrich.input_tokens + verify.input_tokens == sum(_server_tokens(server, "prompt_tokens"))
    price_in = gateway.estimate_cost("openai/gpt-4o-mini", 1_000_000, 0)
    price_out = gateway.estimate_cost("openai/gpt-4o-mini", 0, 1_000_000)
    assert 0 < price_in < price_out
    expected = (enrich.input_tokens * price_in + enrich.output_tokens * price_out) / 1_000_000
    assert enrich.cost_usd == pytest.approx(expected) and enrich.cost_usd > 0
    total = gateway.total_usage()
    assert total.calls == 8 and total.cost_usd == pytest.approx(enrich.cost_usd + verify.cost_usd)
    assert set(gateway.usage_by_stage()) == {"enrich", "verify"}


def _server_tokens(server: FakeOpenAIServer, field: str) -> list[int]:
    # Recompute what the fake server reports (len // 4 of the concatenated prompt) for every request.
    return [max(1, len("".join(m["content"] for m in body["messages"])) // 4) for body in server.requests]


def test_unknown_model_costs_zero_but_counts_tokens(server: FakeOpenAIServer, tmp_path: Path) -> None:
    gateway = make_gateway(server, tmp_path, llm_model="openai/no-such-priced-model")
    gateway.run_many([make_prompt("x")], stage="s", progress=False)
    usage = gateway.usage("s")
    assert usage.cost_usd == 0.0 and usage.input_tokens > 0 and usage.output_tokens > 0


def test_budget_stops_the_run_and_keeps_answers_cached(server: FakeOpenAIServer, tmp_path: Path) -> None:
    prompts = [make_prompt(f"p{i}") for i in range(20)]
    # gpt-4o-mini: a call here costs ~1.3e-5 USD (about 40 input + 12 output tokens): room for a handful.
    gateway = make_gateway(server, tmp_path, llm_model="openai/gpt-4o-mini", llm_budget_usd=0.00008, llm_concurrency=2)
    with pytest.raises(BudgetExceeded, match="resumes from the cache"):
        gateway.run_many(prompts, stage="s", progress=False)
    answered = server.call_count
    assert 0 < answered < 20
    assert gateway.cache.count() == answered
    # Resume without a budget: only the unanswered prompts are asked.
    resumed = make_gateway(server, tmp_path, llm_model="openai/gpt-4o-mini")
    results = resumed.run_many(prompts, stage="s", progress=False)
    assert all(r.value is not None for r in results)
    assert server.call_count == 20
    assert resumed.usage("s").cached_calls == answered


def test_token_budget_also_stops(server: FakeOpenAIServer, tmp_path: Path) -> None:
    gateway = make_gateway(server, tmp_path, llm_budget_tokens=300, llm_concurrency=1)
    with pytest.raises(BudgetExceeded):
        gateway.run_many([make_prompt(f"p{i}") for i in range(10)], stage="s", progress=False)
    assert 0 < server.call_count < 10


_CHILD = """
import sys
from pathlib import Path
from distill.llm.cache import ResponseCache
from distill.llm.gateway import LLMGateway
from distill.settings import DistillSettings
from tests.distill.test_llm import make_prompt
settings = DistillSettings(llm_model="openai/fake-model", llm_api_base=sys.argv[1], llm_api_key="test",
                           data_dir=Path(sys.argv[2]), llm_concurrency=1)
LLMGateway(settings, ResponseCache(settings.cache_path)).run_many(
    [make_prompt(f"p{i}") for i in range(int(sys.argv[3]))], stage="s", progress=False)
"""


@pytest.mark.slow  # a child process imports litellm (seconds, more on a loaded machine)
def test_killed_run_resumes_without_repeating_answered_calls(tmp_path: Path) -> None:
    total = 30
    with FakeOpenAIServer(label_responder, latency=0.05) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, server.base_url, str(tmp_path), str(total)], env=env, cwd=REPO_ROOT)
        try:
            deadline = time.monotonic() + 60
            while server.call_count < 8 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.01)
        finally:
            child.kill()
            child.wait()
        assert 8 <= server.call_count < total, "the child finished or never started: nothing to resume"
        first_run = {item_of(body) for body in server.requests}
        cache = ResponseCache(tmp_path / "llm-cache.sqlite")
        already = {f"p{i}" for i in range(total) if cache.contains(cache_key("openai/fake-model", make_prompt(f"p{i}")))}
        assert already and already <= first_run
        server.reset()
        gateway = make_gateway(server, tmp_path)
        results = gateway.run_many([make_prompt(f"p{i}") for i in range(total)], stage="s", progress=False)
        asked_again = {item_of(body) for body in server.requests}
        assert asked_again.isdisjoint(already)
        assert asked_again | already == {f"p{i}" for i in range(total)}
        assert all(r.value is not None for r in results)


def test_run_raising_midway_resumes(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.failure_rule = lambda body: Failure("unauthorized") if item_of(body) == "p5" else None
    prompts = [make_prompt(f"p{i}") for i in range(10)]
    with pytest.raises(TerminalLLMError):
        make_gateway(server, tmp_path, llm_concurrency=1).run_many(prompts, stage="s", progress=False)
    assert server.call_count == 6
    server.failure_rule = None
    server.reset()
    make_gateway(server, tmp_path, llm_concurrency=1).run_many(prompts, stage="s", progress=False)
    assert sorted(item_of(body) for body in server.requests) == sorted(f"p{i}" for i in range(5, 10))


def test_export_then_import_batch_then_zero_calls(server: FakeOpenAIServer, tmp_path: Path) -> None:
    prompts = [make_prompt(f"p{i}") for i in range(6)]
    live = make_gateway(server, tmp_path)
    live.run_many(prompts[:2], stage="s", progress=False)  # two already cached: not exported
    exporter = LLMGateway(live.settings, live.cache, mode="export")
    results = exporter.run_many(prompts, stage="s", progress=False)
    assert [r.pending for r in results] == [False, False, True, True, True, True]
    assert len(exporter.pending) == 4
    batch_in = tmp_path / "batch-in.jsonl"
    assert exporter.export_batch(exporter.pending, batch_in) == 4
    lines = [json.loads(line) for line in batch_in.read_text().splitlines()]
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert lines[0]["body"]["model"] == "fake-model" and lines[0]["body"]["messages"][0]["role"] == "system"

    # Play the provider: answer every request with the fake's responder; one answer is garbage.
    batch_out = tmp_path / "batch-out.jsonl"
    with batch_out.open("w") as out:
        for line in lines:
            content = label_responder(line["body"]) if item_of(line["body"]) != "p5" else "garbage"
            body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}}
            out.write(json.dumps({"id": "r", "custom_id": line["custom_id"], "response": {"status_code": 200, "body": body}, "error": None}) + "\n")
        out.write(json.dumps({"id": "r", "custom_id": "stale", "response": {"status_code": 200, "body": {}}, "error": None}) + "\n")
    report = exporter.import_batch(batch_out, prompts, stage="s")
    assert report.imported == 3 and report.unmatched == ("stale",)
    assert [r.item for r in report.rejections] == ["p5"] and report.rejections[0].raw == "garbage"
    assert report.usage.input_tokens == 120 and report.usage.calls == 4

    calls_before = server.call_count
    again = make_gateway(server, tmp_path)
    results = again.run_many(prompts[:5], stage="s", progress=False)
    assert server.call_count == calls_before
    assert [r.value.item if r.value else None for r in results] == [f"p{i}" for i in range(5)]


@pytest.mark.slow  # a child process imports litellm from scratch
def test_import_does_not_make_network_calls_or_hang() -> None:
    # Importing the adapter and touching litellm's price table must work with networking disabled: an
    # unroutable proxy for every scheme makes any outbound attempt fail loudly instead of passing quietly.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise RuntimeError('outbound connection attempted')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "import distill.llm.gateway as llm\n"
        "llm._litellm()\n"
        "from distill.settings import DistillSettings\n"
        "from distill.llm.cache import ResponseCache\n"
        "import tempfile, pathlib\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "g = llm.LLMGateway(DistillSettings(llm_model='openai/gpt-4o-mini', data_dir=d), ResponseCache(d / 'c.sqlite'))\n"
        "assert g.estimate_cost('openai/gpt-4o-mini', 1000, 1000) > 0\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
