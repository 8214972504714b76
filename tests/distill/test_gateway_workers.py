"""LLMGateway with its provider calls in worker processes (llm_processes > 1, distill.llm.workers), through the
real litellm client against the local OpenAI-compatible server: the same answers, accounting and typed errors
as the in-process path, the concurrency limit, a worker killed mid-call, and no worker outliving its parent.
Counting assertions only: waits poll for an event with a generous deadline and never assert a duration."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.errors import BudgetExceeded, TerminalLLMError, WorkerLost
from distill.llm import workers as worker_module
from distill.llm.cache import ResponseCache, cache_key
from distill.llm.gateway import CallResult, LLMGateway, provider_workers
from distill.llm.workers import CALLS_PER_LOOP, WorkerPool, worker_count
from distill.settings import DistillSettings
from tests.distill.test_llm import REPO_ROOT, Label, RecordingSleep, item_of, label_responder, make_prompt
from tests.fakes.openai_server import Failure, FakeOpenAIServer

DEADLINE_S = 120.0  # for waits on other processes (a worker imports litellm: seconds on a loaded machine)
PRICED = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """Two worker processes shared by this module's gateways (each start imports litellm)."""
    workers = provider_workers(2)
    workers.start()
    yield workers
    workers.close()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(label_responder) as running:
        yield running


def settings_for(server: FakeOpenAIServer, data_dir: Path, **overrides: Any) -> DistillSettings:
    values: dict[str, Any] = {"llm_model": "openai/fake-model", "llm_api_base": server.base_url, "llm_api_key": "test",
                              "data_dir": data_dir, "llm_concurrency": 4, "llm_timeout_s": 1.0, "llm_max_attempts": 3}
    return DistillSettings(**(values | overrides))


def gateway_for(server: FakeOpenAIServer, data_dir: Path, workers: WorkerPool | None, **overrides: Any) -> LLMGateway:
    settings = settings_for(server, data_dir, llm_processes=workers.processes if workers else 1, **overrides)
    return LLMGateway(settings, ResponseCache(settings.cache_path), backoff_base_s=0.01, backoff_cap_s=0.05,
                      expected_output_tokens=16, workers=workers)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.01)


def outcome(results: list[CallResult[Label]]) -> list[tuple[Label | None, str | None, int]]:
    return [(r.value, r.rejection.reason if r.rejection else None, r.attempts) for r in results]


# --- the same answers, accounting and errors as in-process ---------------------------------------------------
def test_answers_cache_and_cost_are_those_of_the_in_process_path(
    server: FakeOpenAIServer, pool: WorkerPool, tmp_path: Path
) -> None:
    prompts = [make_prompt(f"p{i}") for i in range(8)]
    server.failure_rule = lambda body: Failure("invalid_json") if item_of(body) == "p3" and len(body["messages"]) == 2 else None
    runs = {}
    for name, workers in (("in-process", None), ("workers", pool)):
        sent_before = sum(pool.sent)
        gateway = gateway_for(server, tmp_path / name, workers, llm_model=PRICED)
        results = gateway.run_many(prompts, stage="s", progress=False)
        cached = [gateway.cache.get(cache_key(PRICED, p)) for p in prompts]
        runs[name] = (outcome(results), gateway.usage("s"), [(e.text, e.input_tokens, e.output_tokens, e.cost_usd)
                                                              for e in cached if e is not None])
        # The worker run sent every request through the pool (both workers), the in-process one none.
        assert sum(pool.sent) - sent_before == (9 if workers else 0)
    requests = [tuple(sorted((k, str(v)) for k, v in body.items())) for body in server.requests]
    assert Counter(requests[:9]) == Counter(requests[9:])  # the same requests sent, the repair included
    (answers, usage, entries), (answers_in, usage_in, entries_in) = runs["workers"], runs["in-process"]
    assert answers == answers_in and entries == entries_in and len(entries) == 8
    # The stage's cost is a float sum in completion order, which concurrency may change: equal up to rounding.
    assert usage.model_copy(update={"cost_usd": 0.0}) == usage_in.model_copy(update={"cost_usd": 0.0})
    assert usage.cost_usd == pytest.approx(usage_in.cost_usd) and usage.cost_usd > 0
    assert (usage.calls, usage.failed_calls) == (9, 1)
    assert all(count > 0 for count in pool.sent)


def test_budget_stops_at_the_same_point(server: FakeOpenAIServer, pool: WorkerPool, tmp_path: Path) -> None:
    prompts = [make_prompt(f"p{i}") for i in range(12)]
    spent = {}
    for name, workers in (("in-process", None), ("workers", pool)):
        gateway = gateway_for(server, tmp_path / name, workers, llm_model=PRICED, llm_budget_usd=0.00006,
                              llm_concurrency=1)
        with pytest.raises(BudgetExceeded, match="resumes from the cache"):
            gateway.run_many(prompts, stage="s", progress=False)
        spent[name] = (gateway.usage("s"), gateway.cache.count())
    assert spent["workers"] == spent["in-process"]
    assert 0 < spent["workers"][1] < len(prompts)


@pytest.mark.parametrize(
    "failure", [Failure("rate_limit", retry_after=7), Failure("server_error"), Failure("timeout", sleep_s=3.0)],
    ids=["429", "500", "timeout"])
def test_transient_errors_cross_the_process_boundary_and_are_retried(
    server: FakeOpenAIServer, pool: WorkerPool, tmp_path: Path, failure: Failure
) -> None:
    server.inject(failure)
    sleep = RecordingSleep()
    settings = settings_for(server, tmp_path, llm_concurrency=1, llm_processes=2)
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), backoff_base_s=0.2, sleep=sleep, workers=pool)
    [result] = gateway.run_many([make_prompt("x")], stage="s", progress=False)
    assert result.value == Label(item="x", label="label-x") and result.attempts == 2
    assert gateway.usage("s").failed_calls == 1
    if failure.kind == "rate_limit":
        assert sleep.delays == [7]  # the provider's Retry-After came back from the worker
    else:
        assert len(sleep.delays) == 1 and 0 <= sleep.delays[0] <= 0.2


@pytest.mark.parametrize(("kind", "match"), [("bad_request", "Bad request"), ("unauthorized", "AuthenticationError"),
                                             ("context_window", "context window")])
def test_terminal_errors_stop_the_run_without_retries(
    server: FakeOpenAIServer, pool: WorkerPool, tmp_path: Path, kind: str, match: str
) -> None:
    server.failure_rule = lambda body: Failure(kind)  # type: ignore[arg-type]
    with pytest.raises(TerminalLLMError, match=match) as info:
        gateway_for(server, tmp_path, pool, llm_concurrency=1).run_many([make_prompt("a")], stage="s", progress=False)
    assert server.call_count == 1
    assert info.value.__cause__ is not None  # the provider's error, as the worker saw it
    if kind == "unauthorized":
        assert "authentication failed (HTTP 401)" in str(info.value)


def test_json_mode_fallback_and_refusals_are_decided_in_the_parent(
    server: FakeOpenAIServer, pool: WorkerPool, tmp_path: Path
) -> None:
    def rule(body: dict[str, Any]) -> Failure | None:
        if body.get("response_format"):
            return Failure("response_format_rejected")
        return Failure("content_filter") if item_of(body) == "edgy" else None

    server.failure_rule = rule
    prompts = [make_prompt("a"), make_prompt("edgy"), make_prompt("b")]
    results = gateway_for(server, tmp_path, pool, llm_concurrency=1).run_many(prompts, stage="s", progress=False)
    assert results[0].value is not None and results[2].value is not None
    assert results[1].rejection is not None and "content policy" in results[1].rejection.reason
    formats = [(body.get("response_format") or {}).get("type") for body in server.requests]
    assert formats == ["json_schema", "json_object", None, None, None]


# --- scheduling --------------------------------------------------------------------------------------------
class HeldResponder:
    """Server-side: each request stays open until the test releases its item; records what started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.in_flight: set[str] = set()
        self.peak = 0
        self.gates: dict[str, threading.Event] = {}

    def __call__(self, body: dict[str, Any]) -> str:
        item = item_of(body)
        with self.lock:
            gate = self.gates.setdefault(item, threading.Event())
            self.started.append(item)
            self.in_flight.add(item)
            self.peak = max(self.peak, len(self.in_flight))
        gate.wait(DEADLINE_S)
        with self.lock:
            self.in_flight.discard(item)
        return label_responder(body)

    def release(self, item: str) -> None:
        with self.lock:
            self.gates.setdefault(item, threading.Event()).set()


def test_never_more_than_the_concurrency_limit_in_flight(pool: WorkerPool, tmp_path: Path) -> None:
    limit, items = 3, [f"p{i}" for i in range(8)]
    held = HeldResponder()
    with FakeOpenAIServer(held) as server:
        gateway = gateway_for(server, tmp_path, pool, llm_concurrency=limit, llm_timeout_s=DEADLINE_S)
        results: list[CallResult[Label]] = []
        run = threading.Thread(target=lambda: results.extend(
            gateway.run_many([make_prompt(i) for i in items], stage="s", progress=False)))
        run.start()
        for done in range(len(items)):
            expected = min(len(items), limit + done)
            wait_for(lambda: len(held.started) >= expected, f"{expected} requests at the server")
            with held.lock:
                assert len(held.in_flight) <= limit
                oldest = held.started[done]
            held.release(oldest)
        run.join(DEADLINE_S)
    assert held.peak == limit
    assert [r.value.item if r.value else None for r in results] == items
    assert gateway.usage("s").calls == len(items)


# --- a worker that dies, a parent that dies -----------------------------------------------------------------
def test_a_killed_workers_calls_are_retried_and_it_is_replaced(tmp_path: Path) -> None:
    held = HeldResponder()
    own = provider_workers(2)
    try:
        with FakeOpenAIServer(held) as server:
            # breaker_failures=1: a lost worker must not count as the model failing, or this run would stop.
            gateway = gateway_for(server, tmp_path, own, llm_concurrency=4, llm_timeout_s=DEADLINE_S,
                                  llm_breaker_failures=1)
            results: list[CallResult[Label]] = []
            run = threading.Thread(target=lambda: results.extend(
                gateway.run_many([make_prompt(f"p{i}") for i in range(6)], stage="s", progress=False)))
            run.start()
            wait_for(lambda: len(held.started) == 4, "4 requests at the server")
            victim, in_flight = own.pids[0], own.sent[0]
            assert in_flight == 2 and own.sent == [2, 2]
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: victim not in own.pids, "the parent noticing the dead worker")
            for i in range(6):
                held.release(f"p{i}")
            run.join(DEADLINE_S)
        assert [r.value.item if r.value else None for r in results] == [f"p{i}" for i in range(6)]
        usage = gateway.usage("s")
        assert (usage.calls, usage.failed_calls) == (6 + in_flight, in_flight)
        assert len(held.started) == 6 + in_flight  # the lost calls were sent again
        assert own.restarts == 1 and len(own.pids) == 2 and victim not in own.pids
    finally:
        own.close()
    assert own.pids == []


_PARENT = """
import sys, time
from pathlib import Path
from distill.llm.cache import ResponseCache
from distill.llm.gateway import LLMGateway
from distill.settings import DistillSettings
settings = DistillSettings(llm_model="openai/fake-model", llm_api_base=sys.argv[1], llm_api_key="test",
                           data_dir=Path(sys.argv[2]), llm_processes=2)
gateway = LLMGateway(settings, ResponseCache(settings.cache_path))
gateway.start_workers()
print(" ".join(str(pid) for pid in gateway.worker_pids), flush=True)
time.sleep(600)
"""


def _exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in {"Z", "X"}  # a zombie has exited (its new parent reaps it)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_no_worker_outlives_its_parent(server: FakeOpenAIServer, tmp_path: Path, how: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # A session of its own: Ctrl-C is sent to the whole process group, as a terminal does (workers included).
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, server.base_url, str(tmp_path)], env=env, cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(_exited(pid) for pid in pids)
        if how == signal.SIGINT:
            os.killpg(parent.pid, signal.SIGINT)
        else:
            parent.kill()
        parent.wait(DEADLINE_S)
        wait_for(lambda: all(_exited(pid) for pid in pids), f"workers {pids} to exit after their parent")
    finally:
        parent.kill()
        parent.wait()


async def _block_or_echo(request: str) -> str:
    """A call function for a bare pool: "block" blocks the worker's whole loop (a stuck worker), else echoes."""
    if request == "block":
        time.sleep(3600)
    return request


def test_a_stuck_worker_is_killed_its_calls_fail_as_lost_and_it_is_replaced() -> None:
    stuck = WorkerPool(1, _block_or_echo)
    try:
        async def calls() -> tuple[Any, Any]:
            # "block" stops the worker's loop, so the echo queued behind it cannot be answered either.
            both = asyncio.gather(stuck.call("block", stuck_after_s=1.0), stuck.call("echo"), return_exceptions=True)
            return await asyncio.wait_for(both, DEADLINE_S)  # without the kill: TimeoutError, not a hang

        stuck.start()
        blocked, queued = asyncio.run(calls())
        assert isinstance(blocked, WorkerLost) and "stuck" in str(blocked)
        assert isinstance(queued, WorkerLost)  # the other in-flight call failed with it, it did not hang
        assert asyncio.run(stuck.call("echo")) == "echo" and stuck.restarts == 1
    finally:
        stuck.close()


def test_a_worker_whose_parent_is_gone_stops_even_if_its_pipe_stays_open() -> None:
    # Another process holding a copy of the parent's end would keep the pipe open after the parent died: the
    # worker also watches its parent's pid. Here the "parent" pid is not this process's parent, so _serve must
    # return by itself although the pipe's other end stays open (without the watch it waits for ever).
    parent_end, child_end = multiprocessing.Pipe(duplex=True)
    try:
        asyncio.run(asyncio.wait_for(worker_module._serve(child_end, _never_called, parent_pid=-1), DEADLINE_S))
        assert parent_end.recv()[0] == "ready"
    finally:
        parent_end.close()


async def _never_called(request: Any) -> Any:
    raise AssertionError("no call was sent")


# --- the setting ---------------------------------------------------------------------------------------------
def test_auto_is_one_loop_per_calls_per_loop_concurrent_calls_at_most_one_per_core() -> None:
    assert worker_count("auto", 8, cores=2) == 1  # in-process
    assert worker_count("auto", CALLS_PER_LOOP, cores=4) == 1
    assert worker_count("auto", CALLS_PER_LOOP + 1, cores=4) == 2
    assert worker_count("auto", 32, cores=2) == 2
    assert worker_count("auto", 200, cores=4) == 4
    assert worker_count("auto", 200, cores=1) == 1
    assert worker_count(1, 200, cores=8) == 1 and worker_count(3, 1, cores=1) == 3  # explicit: as given


def test_the_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DistillSettings().llm_processes == "auto"
    monkeypatch.setenv("SHELFGRAPH_LLM_PROCESSES", "3")
    assert DistillSettings().llm_processes == 3
    monkeypatch.setenv("SHELFGRAPH_LLM_PROCESSES", "0")
    with pytest.raises(ValueError):
        DistillSettings()


def test_one_process_is_the_in_process_path(server: FakeOpenAIServer, tmp_path: Path) -> None:
    gateway = gateway_for(server, tmp_path, None, llm_concurrency=64)
    results = gateway.run_many([make_prompt(f"p{i}") for i in range(3)], stage="s", progress=False)
    assert all(r.value is not None for r in results)
    assert gateway.worker_pids == [] and gateway._workers is None
