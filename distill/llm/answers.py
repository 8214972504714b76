"""Reading model answers: find the JSON in free text (fences, leading prose) and validate it against the
prompt's response model. Pure functions, no litellm, so the batch importer and tests use them too."""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from distill.llm.prompts import T

FormatLevel = Literal["json_schema", "json_object", "none"]
"""How strictly JSON output is requested: a JSON schema, any JSON object, or nothing (prompt only)."""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON value in a model answer: the whole text, a ```json fence, or after leading prose."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    fenced = _FENCE.search(stripped)
    if fenced:
        try:
            return json.loads(fenced.group(1).strip())
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(stripped) if ch in "{["][:64]
    for start in starts:
        try:
            return decoder.raw_decode(stripped, start)[0]
        except ValueError:
            continue
    raise ValueError("the answer contains no complete JSON object or array")


def parse_answer(text: str | None, model: type[T]) -> tuple[T | None, str | None]:
    """(value, None) when `text` holds JSON that validates against `model`, else (None, why not)."""
    if not text or not text.strip():
        return None, "the answer was empty"
    try:
        data = extract_json(text)
    except ValueError as exc:
        return None, str(exc)
    try:
        return model.model_validate(data), None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:20]
        )
        return None, f"it does not match the schema ({problems})"


@functools.lru_cache(maxsize=256)
def response_format(level: FormatLevel, model: type[BaseModel]) -> dict[str, Any] | None:
    # Cached: building a JSON schema costs milliseconds, per request that is a visible share of the CPU.
    # Callers must not mutate the returned dict (litellm copies request params before transforming them).
    if level == "json_schema":
        name = re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64] or "answer"
        # strict=False: OpenAI's strict mode demands every field be required, which optional fields break.
        return {"type": "json_schema", "json_schema": {"name": name, "schema": model.model_json_schema(), "strict": False}}
    if level == "json_object":
        return {"type": "json_object"}
    return None


def read_response(response: Any) -> tuple[str | None, int, int]:
    """(content, input tokens, output tokens) from a litellm ModelResponse or an OpenAI-shaped dict."""
    if isinstance(response, dict):
        message = response["choices"][0]["message"]
        usage = response.get("usage") or {}
        content = message.get("content")
        return content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    content = response.choices[0].message.content
    usage = getattr(response, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    return content, prompt_tokens, completion_tokens
