"""Reading model answers: find the JSON in free text (fences, leading prose) and validate it against the
prompt's response model. Pure functions, no litellm, so the batch importer and tests use them too."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from distill.prompts import T

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
