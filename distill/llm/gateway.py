"""The LLM gateway: the only module that imports litellm. It turns RenderedPrompts into validated pydantic
values (or recorded Rejections) cheaply (response cache, JSON mode, bounded concurrency and rate limits),
resumably (every answer is cached the moment it validates) and safely (typed retries, budget, batch files).
The concepts it combines live beside it: retry, budget, ratelimit, provider_errors, batch, cache, answers."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Generic, Literal

from distill.errors import (
    BudgetExceeded,
    ConfigError,
    FormatRejected,
    LLMError,
    ModelUnavailable,
    PromptRefused,
    RateLimited,
    TerminalLLMError,
    TransientLLMError,
)
from distill.llm.answers import FormatLevel, parse_answer, read_response, response_format
from distill.llm.batch import BatchFiles, prompt_item
from distill.llm.budget import Budget, BudgetStop, StageCounters
from distill.llm.cache import CacheEntry, ResponseCache, cache_key
from distill.llm.provider_batch import ProviderBatches
from distill.llm.prompts import RenderedPrompt, T
from distill.llm.provider_errors import (
    TRANSIENT_STATUS,
    about_response_format,
    connection_cause,
    refusal_code,
    status_text,
)
from distill.llm.ratelimit import IntervalLimiter, TokenBucket, retry_after
from distill.llm.tasks import first_error, progress_bar
from distill.llm.retry import FORMAT_LEVELS, REPAIR_INSTRUCTION, CircuitBreaker, Exhausted, backoff_delay
from distill.llm.workers import ErrorReply, ForwardedError, Reply, WorkerPool, worker_count
from distill.settings import DistillSettings
from graph_schema.models import LLMUsage, Rejection

Mode = Literal["live", "export"]
CompletionFn = Callable[..., Awaitable[Any]]


@functools.cache
def _litellm() -> ModuleType:
    """Import and configure litellm once, on first use (the import costs seconds; the CLI should not pay it
    for commands that never call a model)."""
    # litellm fetches its model price map from GitHub at import unless told otherwise: that is a network call
    # at import time (a hang with no network). The packaged copy is enough. This is the one environment
    # write in the project, and it must happen before the import.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    # No telemetry, no logging callbacks, no "give feedback" banners: the gateway does its own accounting.
    litellm.telemetry = False
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    litellm.suppress_debug_info = True
    # With no callback registered no message is logged anywhere; True made litellm deep-copy and redact every
    # request and response for loggers that do not exist (~13% of a call's CPU in the profile).
    litellm.turn_off_message_logging = False
    return litellm


@functools.cache
def _has_price(model: str) -> bool:
    """Whether litellm's price table knows `model` (asked once per model: a miss raises, which is slow)."""
    try:
        _litellm().cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    except Exception:  # noqa: BLE001 - litellm raises assorted types for unmapped models
        return False
    return True


@functools.cache
def _prices(model: str) -> tuple[float, float, float | None, float | None]:
    """(input, output, batch input, batch output) USD per token from litellm's table, read once per model."""
    lm = _litellm()
    if not _has_price(model):
        return 0.0, 0.0, None, None
    info = lm.model_cost.get(model) or lm.model_cost.get(lm.get_llm_provider(model)[0]) or {}
    unit_in, unit_out = lm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    batch_in, batch_out = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
    return (float(unit_in), float(unit_out), None if batch_in is None else float(batch_in),
            None if batch_out is None else float(batch_out))


@functools.cache
def _ready(model: str) -> None:
    """Once per model, before its first completion: read its prices (see _prices), and give a model litellm's
    price table does not know a zero-price entry, so litellm's cost calculation after every response finds
    it at once instead of searching the table's generalizations (~11% of a call's CPU in the profile)."""
    _prices(model)
    if not _has_price(model):
        lm = _litellm()
        provider = lm.get_llm_provider(model)[1]
        lm.register_model({model: {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                   "cache_creation_input_token_cost": 0.0, "cache_read_input_token_cost": 0.0,
                                   "litellm_provider": provider, "mode": "chat"}})


def _unlogged() -> AbstractContextManager[None]:
    """litellm's "internal sub-call" context: no success logging and no billing record for the call (the
    gateway counts tokens and cost itself). Its absence in another litellm release only costs CPU."""
    internal_sub_call = getattr(getattr(_litellm(), "_internal_context", None), "internal_sub_call", None)
    return internal_sub_call() if callable(internal_sub_call) else nullcontext()


@functools.cache
def _provider(model: str, api_base: str | None) -> tuple[str, str | None]:
    """litellm's provider name and the API base for `model` (the files and batches calls name the provider)."""
    _, provider, _, base = _litellm().get_llm_provider(model, api_base=api_base)
    return str(provider), api_base or base


def provider_workers(processes: int) -> WorkerPool:
    """A pool of `processes` worker processes that make raw provider calls (distill.llm.workers)."""
    # prepare: a new worker imports litellm (seconds) before it reports ready, not on its first call.
    return WorkerPool(processes, _remote_completion, prepare=_litellm)


async def _remote_completion(request: tuple[str, dict[str, Any]]) -> Reply | ErrorReply:
    """In a worker process: one litellm.acompletion for (stage, kwargs), its answer or its translated error as
    plain data. Nothing stateful happens here: retries, budget, limits and the breaker are the parent's."""
    stage, kwargs = request
    model = kwargs["model"]
    _ready(model)
    try:
        with _unlogged():
            response = await _litellm().acompletion(**kwargs)
    except Exception as exc:  # noqa: BLE001 - translated; not a provider error: re-raised (a bug, sent as such)
        failure = _translate(exc, model, stage, kwargs["timeout"])
        return ErrorReply(type(failure).__name__, str(failure), failure.cause, f"{type(exc).__name__}: {exc}",
                          retry_after(exc))
    return Reply(*read_response(response))


@dataclass(frozen=True)
class CallResult(Generic[T]):
    """The outcome of one prompt: a validated value, a Rejection, or pending (export mode)."""

    prompt: RenderedPrompt[T]
    value: T | None
    rejection: Rejection | None
    cached: bool
    pending: bool = False
    model: str | None = None
    """The model whose answer this is (a fallback model when the primary was unavailable)."""
    attempts: int = 0
    """Requests sent for this prompt in this run (0 when answered from the cache)."""


class LLMGateway(BatchFiles, ProviderBatches):
    """Answers prompts with validated values. Construct once per run and share across stages.

    Accounting per stage (`usage(stage)`): `calls` = requests sent (every attempt), `failed_calls` = those that
    errored or returned output that did not validate, `cached_calls` = prompts answered from the cache.
    The budget is per gateway (per run): cached answers cost nothing, so a re-run resumes where one stopped."""

    def __init__(
        self,
        settings: DistillSettings,
        cache: ResponseCache,
        *,
        mode: Mode = "live",
        completion_fn: CompletionFn | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        retry_after_cap_s: float = 120.0,
        expected_output_tokens: int = 512,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        workers: WorkerPool | None = None,
    ) -> None:
        if not settings.llm_model:
            raise ConfigError("no LLM configured: set llm_model (SHELFGRAPH_LLM_MODEL), e.g. openai/gpt-4o-mini")
        self.settings = settings
        self.cache = cache
        self.mode: Mode = mode
        self._models: tuple[str, ...] = (settings.llm_model, *settings.llm_fallback_models)
        self._completion_fn = completion_fn
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._retry_after_cap = retry_after_cap_s
        self._rng = random.Random()
        self._sleep = sleep
        self._stages: dict[str, StageCounters] = {}
        self._format: dict[str, FormatLevel] = {}
        self._pending: dict[str, RenderedPrompt[Any]] = {}
        self.answered_models: set[str] = set()
        """Every model whose answer (fresh or cached) this gateway returned: provenance of the run."""
        self._budget = Budget(settings.llm_budget_usd, settings.llm_budget_tokens,
                              expected_output_tokens=expected_output_tokens)
        self._breaker = CircuitBreaker(settings.llm_breaker_failures)
        self._rpm = IntervalLimiter(settings.llm_rpm, sleep, clock) if settings.llm_rpm else None
        self._tpm = TokenBucket(settings.llm_tpm, sleep, clock) if settings.llm_tpm else None
        self._live: dict[str, tuple[str, str] | None] = {}  # export mode: cache key -> (bad answer, why) or None
        self._rejected: dict[str, Rejection] = {}
        # Provider calls in worker processes (llm_processes): `workers` if given (the caller closes it), else
        # a pool of this gateway's own, started on the first call and stopped by close().
        processes = worker_count(settings.llm_processes, settings.llm_concurrency)
        self._own_workers = workers is None and completion_fn is None and processes > 1
        self._workers = provider_workers(processes) if self._own_workers else workers

    # --- worker processes -----------------------------------------------------------------------------
    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running worker processes (empty: calls are made in this process)."""
        return self._workers.pids if self._workers is not None else []

    def start_workers(self) -> None:
        """Start the worker processes now (else the first call does) and wait until each has loaded litellm."""
        if self._workers is not None:
            self._workers.start()

    def close(self) -> None:
        """Stop this gateway's own worker processes (a pool passed in is the caller's to close)."""
        if self._own_workers and self._workers is not None:
            self._workers.close()

    def __enter__(self) -> LLMGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- accounting -----------------------------------------------------------------------------------
    def _stage(self, stage: str) -> StageCounters:
        return self._stages.setdefault(stage, StageCounters())

    def usage(self, stage: str) -> LLMUsage:
        return self._stage(stage).usage() if stage in self._stages else LLMUsage()

    def usage_by_stage(self) -> dict[str, LLMUsage]:
        return {stage: counters.usage() for stage, counters in self._stages.items()}

    def total_usage(self) -> LLMUsage:
        total = LLMUsage()
        for usage in self.usage_by_stage().values():
            total = total.add(usage)
        return total

    @property
    def pending(self) -> list[RenderedPrompt[Any]]:
        """Prompts that export-mode runs found uncached (to pass to export_batch)."""
        return list(self._pending.values())

    def answer_live(self, key: str, repair: tuple[str, str] | None = None) -> None:
        """Export mode: answer this request (cache key of the primary model) live instead of leaving it pending:
        a batch line that failed. `repair` = (the batch's invalid answer, why): the live request starts with
        the repair prompt, as if the batch answer had been this request's first attempt."""
        self._live[key] = repair

    def reject_pending(self, key: str, rejection: Rejection) -> None:
        """Export mode: this request has no answer and will get none (a batch line the provider refused)."""
        self._rejected[key] = rejection

    def estimate_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """USD from litellm's price table; 0.0 for a model it has no price for (tokens are still counted)."""
        unit_in, unit_out, _, _ = _prices(model)
        return unit_in * input_tokens + unit_out * output_tokens

    # --- running prompts ------------------------------------------------------------------------------
    def run_many(
        self, prompts: Sequence[RenderedPrompt[T]], *, stage: str, progress: bool = True
    ) -> list[CallResult[T]]:
        """Answer every prompt (same order). Raises TerminalLLMError (ModelUnavailable when the circuit breaker
        opened for every model or no prompt got an answer) or BudgetExceeded; answers obtained before either
        are cached, so re-running resumes without repeating them."""
        return asyncio.run(self.arun_many(prompts, stage=stage, progress=progress))

    async def arun_many(
        self, prompts: Sequence[RenderedPrompt[T]], *, stage: str, progress: bool = True
    ) -> list[CallResult[T]]:
        counters = self._stage(stage)
        results: list[CallResult[T] | None] = [None] * len(prompts)
        todo: dict[str, list[int]] = {}  # primary cache key -> positions (identical prompts are sent once)
        for index, prompt in enumerate(prompts):
            hit = self._from_cache(prompt)
            if hit is not None:
                counters.cached_calls += 1
                results[index] = hit
            elif self.mode == "export" and (key := cache_key(self._models[0], prompt)) not in self._live:
                if key in self._rejected:
                    results[index] = CallResult(prompt, None, self._rejected[key], cached=False)
                    continue
                self._pending[key] = prompt
                results[index] = CallResult(prompt, None, None, cached=False, pending=True)
            else:
                todo.setdefault(cache_key(self._models[0], prompt), []).append(index)

        queue = iter(list(todo.values()))
        semaphore_size = min(self.settings.llm_concurrency, max(1, len(todo)))

        with progress_bar(progress and bool(todo), stage, len(todo)) as advance:
            unanswered = 0  # prompts every model failed (transient errors until attempts ran out)

            async def worker() -> None:
                nonlocal unanswered
                for positions in queue:
                    if self._budget.hit:
                        return
                    try:
                        result = await self._answer(prompts[positions[0]], stage)
                    except BudgetStop:
                        return
                    if result.value is None and result.model is None and result.rejection is not None:
                        unanswered += 1
                    for position in positions:
                        results[position] = replace(result, prompt=prompts[position])
                    advance()

            if todo:
                try:
                    async with asyncio.TaskGroup() as group:
                        for _ in range(semaphore_size):
                            group.create_task(worker())
                except BaseExceptionGroup as failed:
                    # A terminal error in one worker cancelled the others: surface it (its __cause__, the
                    # provider's exception, is kept), not the group.
                    raise first_error(failed)  # noqa: B904
                if unanswered == len(todo) and not self._budget.hit:
                    # Not one prompt of the stage got an answer: publishing without its evidence would be
                    # worse than a run without a model, so the run stops here.
                    raise self._unavailable(stage, f"all {len(todo)} prompts of the stage failed")

        if self._budget.hit:
            answered = sum(1 for r in results if r is not None and r.value is not None)
            raise BudgetExceeded(
                f"LLM budget reached in stage {stage!r}: spent ${self._budget.spent_usd:.4f} and {self._budget.spent_tokens} tokens "
                f"(budget: ${self.settings.llm_budget_usd} / {self.settings.llm_budget_tokens} tokens); "
                f"{answered} of {len(prompts)} prompts answered. Every answer is cached in {self.cache.path}: "
                "re-running resumes from the cache without paying for them again."
            )
        self.answered_models.update(r.model for r in results if r is not None and r.value is not None and r.model)
        return [r for r in results if r is not None]

    def _from_cache(self, prompt: RenderedPrompt[T]) -> CallResult[T] | None:
        for model in self._models:
            entry = self.cache.get(cache_key(model, prompt))
            if entry is None:
                continue
            value, _ = parse_answer(entry.text, prompt.response_model)
            # A cached answer that no longer validates (response model changed without a version bump) is
            # treated as a miss rather than trusted.
            if value is not None:
                return CallResult(prompt, value, None, cached=True, model=model)
        return None

    async def _answer(self, prompt: RenderedPrompt[T], stage: str) -> CallResult[T]:
        failures: list[str] = []
        for model in self._models:
            if model in self._breaker.down:
                failures.append(f"{model}: {self._breaker.down[model]}")
                continue
            try:
                return await self._ask(model, prompt, stage)
            except Exhausted as exc:
                failures.append(str(exc))
        if all(model in self._breaker.down for model in self._models):
            raise self._unavailable(stage, "failed requests in a row opened the circuit breaker")
        return CallResult(
            prompt,
            None,
            Rejection(stage=stage, item=prompt_item(prompt), reason="llm unavailable: " + " | ".join(failures)),
            cached=False,
        )

    def _unavailable(self, stage: str, why: str) -> ModelUnavailable:
        causes = {model: self._breaker.down.get(model) or self._breaker.last_cause.get(model, "no answer") for model in self._models}
        named = "; ".join(f"{model!r}: {cause}" for model, cause in causes.items())
        where = f" at {self.settings.llm_api_base}" if self.settings.llm_api_base else ""
        return ModelUnavailable(
            f"{stage}: no model answered{where} ({why}): {named}. The run stopped and nothing was published; "
            "check llm_api_base / SHELFGRAPH_LLM_API_BASE, the API key and that the model server is up. "
            "Answers obtained so far are cached.",
            cause=next(iter(causes.values())),
        )

    async def _ask(self, model: str, prompt: RenderedPrompt[T], stage: str) -> CallResult[T]:
        counters = self._stage(stage)
        base = [{"role": m.role, "content": m.content} for m in prompt.messages]
        messages = base
        attempts = 0
        seed = self._live.get(cache_key(model, prompt)) if self._live else None
        if seed is not None:
            messages = [*base, {"role": "assistant", "content": seed[0]},
                        {"role": "user", "content": REPAIR_INSTRUCTION.format(error=seed[1])}]
        while True:
            attempts += 1
            level = self._format.get(model, "json_schema")
            estimate = self._admit(model, messages)
            try:
                if self._rpm is not None:
                    await self._rpm.acquire()
                if self._tpm is not None:
                    await self._tpm.acquire(estimate[0])
                content, input_tokens, output_tokens = await self._complete(
                    model, messages, response_format(level, prompt.response_model), stage)
            except (BudgetStop, asyncio.CancelledError):
                self._release(estimate)
                raise
            except Exception as exc:  # noqa: BLE001 - translated by type just below; unknown types re-raised
                self._release(estimate)
                counters.calls += 1
                counters.failed_calls += 1
                failure = self._translate(exc, model, stage)
                if isinstance(failure, FormatRejected) and level != "none":
                    # The provider refused JSON mode: try the next weaker form; this request does not count.
                    # max(): a concurrent request that failed on an older level must not undo a later step.
                    weaker = FORMAT_LEVELS.index(level) + 1
                    current = FORMAT_LEVELS.index(self._format.get(model, "json_schema"))
                    self._format[model] = FORMAT_LEVELS[max(weaker, current)]
                    attempts -= 1
                    continue
                if isinstance(failure, PromptRefused):
                    rejection = Rejection(stage=stage, item=prompt_item(prompt), reason=failure.cause)
                    return CallResult(prompt, None, rejection, cached=False, model=model, attempts=attempts)
                if not isinstance(failure, TransientLLMError):
                    raise failure from exc  # terminal: auth, bad request, context window; the run stops
                self._breaker.failed(model, failure)
                if model in self._breaker.down:
                    raise Exhausted(f"{model}: {self._breaker.down[model]}") from exc
                if attempts >= self.settings.llm_max_attempts:
                    raise Exhausted(f"{model}: {attempts} attempts, last {failure.cause}") from exc
                await self._sleep(self._delay(attempts, exc))
                if model in self._breaker.down:  # another worker's failures opened the breaker while this one slept
                    raise Exhausted(f"{model}: {self._breaker.down[model]}") from exc
                continue
            self._breaker.answered(model)
            cost = self.estimate_cost(model, input_tokens, output_tokens)
            self._settle(estimate, input_tokens + output_tokens, cost)
            counters.calls += 1
            counters.input_tokens += input_tokens
            counters.output_tokens += output_tokens
            counters.cost_usd += cost
            self._budget.saw_output(output_tokens)
            value, error = parse_answer(content, prompt.response_model)
            if value is not None:
                assert content is not None
                self.cache.put(CacheEntry(
                    key=cache_key(model, prompt), model=model, prompt_name=prompt.name, prompt_version=prompt.version,
                    text=content, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost,
                ))
                return CallResult(prompt, value, None, cached=False, model=model, attempts=attempts)
            counters.failed_calls += 1
            if attempts >= self.settings.llm_max_attempts:
                reason = f"invalid output after {attempts} attempts: {error}"
                rejection = Rejection(stage=stage, item=prompt_item(prompt), reason=reason[:2000], raw=content)
                return CallResult(prompt, None, rejection, cached=False, model=model, attempts=attempts)
            # Feed the validation error back; only the latest failed exchange is kept to bound prompt size.
            messages = [*base, {"role": "assistant", "content": content or ""},
                        {"role": "user", "content": REPAIR_INSTRUCTION.format(error=error)}]

    async def _complete(
        self, model: str, messages: list[dict[str, str]], fmt: dict[str, Any] | None, stage: str
    ) -> tuple[str | None, int, int]:
        """One request: (answer text, input tokens, output tokens), in this process or in a worker process."""
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": self.settings.llm_temperature,
            "timeout": self.settings.llm_timeout_s,
            # The gateway owns retries (typed, budgeted, counted); the OpenAI SDK's own would hide requests.
            "max_retries": 0,
            # Providers that do not know response_format get it dropped instead of a 400.
            "drop_params": True,
        }
        if fmt is not None:
            kwargs["response_format"] = fmt
        if self.settings.llm_api_base:
            kwargs["api_base"] = self.settings.llm_api_base
        if self.settings.llm_api_key is not None:
            kwargs["api_key"] = self.settings.llm_api_key.get_secret_value()
        if self._completion_fn is not None:
            return read_response(await self._completion_fn(**kwargs))
        if self._workers is not None:
            # litellm's own timeout ends a call in the worker; far past it, the worker itself is stuck
            reply = await self._workers.call((stage, kwargs), stuck_after_s=2 * self.settings.llm_timeout_s + 30)
            if isinstance(reply, ErrorReply):
                raise ForwardedError(reply)
            return reply.text, reply.input_tokens, reply.output_tokens
        _ready(model)
        with _unlogged():
            return read_response(await _litellm().acompletion(**kwargs))

    def _translate(self, exc: Exception, model: str, stage: str) -> TransientLLMError | TerminalLLMError:
        if isinstance(exc, ForwardedError):  # translated in the worker process that made the call
            assert isinstance(exc.failure, (TransientLLMError, TerminalLLMError))
            return exc.failure
        if isinstance(exc, (TransientLLMError, TerminalLLMError)):  # WorkerLost, from the worker pool
            return exc
        return _translate(exc, model, stage, self.settings.llm_timeout_s)

    def _delay(self, attempt: int, exc: BaseException) -> float:
        return backoff_delay(attempt, exc, self._rng, base=self._backoff_base, cap=self._backoff_cap,
                             retry_after_cap=self._retry_after_cap)

    # --- budget ---------------------------------------------------------------------------------------
    def _admit(self, model: str, messages: list[dict[str, str]]) -> tuple[int, float]:
        """Reserve this request's estimated tokens and cost, or stop the run if they would break the budget."""
        return self._budget.admit(messages, functools.partial(self.estimate_cost, model))

    def _release(self, estimate: tuple[int, float]) -> None:
        self._budget.release(estimate)

    def _settle(self, estimate: tuple[int, float], tokens: int, cost: float) -> None:
        self._budget.settle(estimate, tokens, cost)
        if self._tpm is not None:
            self._tpm.settle(estimate[0], tokens)

    # --- batch files (export_batch / import_batch: distill.llm.batch) --------------------------------
    def _provider_model(self, model: str) -> str:
        return str(_litellm().get_llm_provider(model)[0])

    def _batch_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        # Without a batch price in the table the live price is counted: an over-estimate, never an under-one.
        _, _, batch_in, batch_out = _prices(model)
        if batch_in is not None and batch_out is not None:
            return batch_in * input_tokens + batch_out * output_tokens
        return self.estimate_cost(model, input_tokens, output_tokens)

    # --- provider batch API (the calls: distill.llm.provider_batch) ----------------------------------
    def _provider_request(self, what: str, function: str, **kwargs: Any) -> Any:
        """One litellm files/batches call (`function`, e.g. "create_batch") for the primary model's provider,
        with the gateway's typed retries (429, 5xx, timeouts, connection errors). litellm's synchronous
        calls: no event loop outlives a call with pooled connections bound to it."""
        lm = _litellm()
        model = self._models[0]
        provider, api_base = _provider(model, self.settings.llm_api_base)
        extra: dict[str, Any] = {"custom_llm_provider": provider, "max_retries": 0}
        if api_base:
            extra["api_base"] = api_base
        if self.settings.llm_api_key is not None:
            extra["api_key"] = self.settings.llm_api_key.get_secret_value()
        attempt = 0
        while True:
            attempt += 1
            try:
                return getattr(lm, function)(**kwargs, **extra)
            except Exception as exc:  # noqa: BLE001 - translated into the package's error tree
                failure = self._translate(exc, model, "batch")
                if isinstance(failure, TransientLLMError) and attempt < self.settings.llm_max_attempts:
                    time.sleep(self._delay(attempt, exc))
                    continue
                raise type(failure)(f"{what} at {provider} failed: {failure}", cause=failure.cause) from exc


def _translate(exc: Exception, model: str, stage: str, timeout_s: float) -> TransientLLMError | TerminalLLMError:
    """The provider's exception as a member of distill.errors' tree (decided on types and the provider's
    structured error code/param, not message wording). Not a provider error: re-raised unchanged."""
    lm = _litellm()
    status = getattr(exc, "status_code", None)
    refusal = refusal_code(exc)
    if isinstance(exc, lm.ContentPolicyViolationError) or refusal is not None:
        # one product's text tripped a filter: record it, keep the run going
        reason = f"refused by {model}: content policy ({refusal or type(exc).__name__})"
        return PromptRefused(f"{stage}: {reason}", cause=reason)
    prefix = f"{stage}: model {model!r}"
    if isinstance(exc, lm.ContextWindowExceededError):
        return TerminalLLMError(f"{prefix}: prompt too long for the context window ({type(exc).__name__}): "
                                f"{exc}. Not retried.", cause="context window exceeded")
    if isinstance(exc, lm.BadRequestError) and about_response_format(exc):  # UnsupportedParamsError too
        return FormatRejected(f"{prefix} does not accept the JSON mode requested: {exc}", cause="response_format")
    if isinstance(exc, lm.RateLimitError) or status == 429:
        return RateLimited(f"{prefix}: rate limited (HTTP 429)", cause="rate limited (HTTP 429)")
    if isinstance(exc, (lm.Timeout, TimeoutError)):
        cause = f"timed out after {timeout_s:g}s"
        return TransientLLMError(f"{prefix}: {cause}", cause=cause)
    cause = connection_cause(exc) or status_text(exc)
    if connection_cause(exc) is not None or isinstance(
        exc, (lm.APIConnectionError, lm.InternalServerError, lm.ServiceUnavailableError, lm.BadGatewayError)
    ):
        return TransientLLMError(f"{prefix}: {cause}", cause=cause)
    if isinstance(exc, (lm.AuthenticationError, lm.PermissionDeniedError, lm.NotFoundError, lm.BadRequestError,
                        lm.UnprocessableEntityError)) or (
        isinstance(status, int) and status < 500 and status not in TRANSIENT_STATUS
    ) or (isinstance(exc, lm.APIError) and not isinstance(status, int)):
        return TerminalLLMError(
            f"{prefix} refused the request: {cause}: {exc}. "
            "Not retried: check the model name, API key, api_base and prompt size.", cause=cause,
        )
    if isinstance(status, int):
        return TransientLLMError(f"{prefix}: {cause}", cause=cause)
    raise exc  # not a provider error: a bug, let it surface unchanged
