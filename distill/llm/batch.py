"""Provider batch files (the OpenAI /v1/batches JSONL format): write the uncached prompts of a run as a
batch input file, and read a finished batch's output file back into the response cache, each answer
validated like a live one. Mixed into `LLMGateway`; imports no litellm (the gateway resolves provider names
and batch prices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from distill.llm.answers import FormatLevel, parse_answer, read_response, response_format
from distill.llm.budget import StageCounters
from distill.llm.cache import CacheEntry, ResponseCache, cache_key
from distill.llm.prompts import RenderedPrompt
from graph_schema.models import LLMUsage, Rejection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from distill.settings import DistillSettings


def prompt_item(prompt: RenderedPrompt[Any]) -> str:
    """The item a rejection of `prompt` is recorded under: its product ids, else the prompt's name."""
    return ",".join(prompt.item_ids) if prompt.item_ids else f"{prompt.name}@{prompt.version}"


@dataclass(frozen=True)
class ImportReport:
    """What import_batch did with a provider's batch output file."""

    imported: int
    rejections: tuple[Rejection, ...] = ()
    unmatched: tuple[str, ...] = ()
    """custom_ids that match none of the given prompts (a stale file or other prompts)."""
    usage: LLMUsage = field(default_factory=LLMUsage)
    failed: tuple[FailedLine, ...] = ()
    answered: tuple[str, ...] = ()
    """custom_ids whose answer validated and is now cached."""


@dataclass(frozen=True)
class FailedLine:
    """A batch request without a usable answer, as import_batch saw it, for the caller to retry or reject."""

    custom_id: str
    kind: Literal["invalid_output", "http_error", "not_run"]
    status_code: int | None = None
    content: str | None = None
    """invalid_output: the model's answer (the live repair prompt shows it back to the model)."""
    error: str = ""


class BatchFiles:
    """The batch-file half of LLMGateway. The attributes and methods declared here are the gateway's."""

    settings: DistillSettings
    cache: ResponseCache
    _models: tuple[str, ...]
    _format: dict[str, FormatLevel]
    _pending: dict[str, RenderedPrompt[Any]]

    def _from_cache(self, prompt: RenderedPrompt[Any]) -> object | None:
        raise NotImplementedError

    def _stage(self, stage: str) -> StageCounters:
        raise NotImplementedError

    def _provider_model(self, model: str) -> str:
        raise NotImplementedError

    def _batch_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        raise NotImplementedError

    def export_batch(self, prompts: Sequence[RenderedPrompt[Any]], path: Path) -> int:
        """Write the uncached prompts as an OpenAI batch input JSONL (custom_id = cache key). Returns the count."""
        model = self._models[0]
        provider_model = self._provider_model(model)
        written: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for prompt in prompts:
                key = cache_key(model, prompt)
                if key in written or self._from_cache(prompt) is not None:
                    continue
                body: dict[str, Any] = {
                    "model": provider_model,
                    "messages": [{"role": m.role, "content": m.content} for m in prompt.messages],
                    "temperature": self.settings.llm_temperature,
                }
                schema_model: type[BaseModel] = prompt.response_model
                fmt = response_format(self._format.get(model, "json_schema"), schema_model)
                if fmt is not None:
                    body["response_format"] = fmt
                line = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                written.add(key)
        return len(written)

    def import_batch(self, path: Path, prompts: Sequence[RenderedPrompt[Any]], *, stage: str = "batch") -> ImportReport:
        """Read an OpenAI batch output JSONL; cache every answer that validates, reject the rest."""
        model = self._models[0]
        by_key = {cache_key(model, prompt): prompt for prompt in prompts}
        counters = self._stage(stage)
        before = counters.usage()
        entries: list[CacheEntry] = []
        rejections: list[Rejection] = []
        unmatched: list[str] = []
        failed: list[FailedLine] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                custom_id = str(record["custom_id"])
            except (ValueError, KeyError, TypeError):
                rejections.append(Rejection(stage=stage, item=f"{path.name}:{number}", reason="unreadable batch line", raw=line[:2000]))
                continue
            prompt = by_key.get(custom_id)
            if prompt is None:
                unmatched.append(custom_id)
                continue
            response = record.get("response") or {}
            if not response:
                # Never ran (the batch expired or was cancelled first): no request was billed.
                detail = json.dumps(record.get("error"), ensure_ascii=False)[:2000]
                failed.append(FailedLine(custom_id, "not_run", error=detail))
                rejections.append(Rejection(stage=stage, item=prompt_item(prompt), reason="batch request not run", raw=detail))
                continue
            counters.calls += 1
            if record.get("error") or response.get("status_code") != 200:
                counters.failed_calls += 1
                detail = json.dumps(record.get("error") or response.get("body"), ensure_ascii=False)[:2000]
                status = response.get("status_code")
                failed.append(FailedLine(custom_id, "http_error", status if isinstance(status, int) else None, error=detail))
                rejections.append(Rejection(stage=stage, item=prompt_item(prompt), reason=f"batch request failed (HTTP {response.get('status_code')})", raw=detail))
                continue
            try:
                content, input_tokens, output_tokens = read_response(response["body"])
            except (KeyError, IndexError, TypeError, ValueError):
                counters.failed_calls += 1
                failed.append(FailedLine(custom_id, "invalid_output", 200, error="batch response has no message"))
                rejections.append(Rejection(stage=stage, item=prompt_item(prompt), reason="batch response has no message", raw=line[:2000]))
                continue
            cost = self._batch_cost(model, input_tokens, output_tokens)
            counters.input_tokens += input_tokens
            counters.output_tokens += output_tokens
            counters.cost_usd += cost
            value, error = parse_answer(content, prompt.response_model)
            if value is None:
                counters.failed_calls += 1
                failed.append(FailedLine(custom_id, "invalid_output", 200, content=content, error=str(error)))
                rejections.append(Rejection(stage=stage, item=prompt_item(prompt), reason=f"invalid output: {error}"[:2000], raw=content))
                continue
            assert content is not None
            entries.append(CacheEntry(key=custom_id, model=model, prompt_name=prompt.name, prompt_version=prompt.version,
                                      text=content, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost))
        imported = self.cache.import_batch_results(entries)
        for entry in entries:
            self._pending.pop(entry.key, None)
        after = counters.usage()
        delta = LLMUsage(calls=after.calls - before.calls, failed_calls=after.failed_calls - before.failed_calls,
                         input_tokens=after.input_tokens - before.input_tokens,
                         output_tokens=after.output_tokens - before.output_tokens,
                         cost_usd=after.cost_usd - before.cost_usd)
        return ImportReport(imported=imported, rejections=tuple(rejections), unmatched=tuple(unmatched), usage=delta,
                            failed=tuple(failed), answered=tuple(entry.key for entry in entries))
