"""Every prompt the distiller sends, as versioned objects. The only place prompt text lives.

Catalog text is untrusted: it only ever enters a prompt inside the JSON data block of the user message,
never in the instructions, and every answer is validated against a response model and the catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)

DATA_OPEN = "<catalog_data>"
DATA_CLOSE = "</catalog_data>"


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class RenderedPrompt(Generic[T]):
    """A prompt ready to send: messages plus the pydantic model its answer must validate against.
    `cache_key_material` is what the response cache hashes together with the model name."""

    name: str
    version: str
    messages: tuple[ChatMessage, ...]
    response_model: type[T]
    item_ids: tuple[str, ...] = field(default_factory=tuple)
    """Catalog ids this request is about (for rejection records and progress)."""

    @property
    def cache_key_material(self) -> str:
        return json.dumps(
            {"prompt": self.name, "version": self.version, "messages": [[m.role, m.content] for m in self.messages]},
            ensure_ascii=False,
            sort_keys=True,
        )


def data_block(payload: Any) -> str:
    """Serialize untrusted catalog data as JSON inside explicit delimiters."""
    text = json.dumps(payload, ensure_ascii=False, indent=None, sort_keys=True)
    # A description cannot close the block early: JSON escapes '<' so the delimiter cannot appear inside.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e")
    return f"{DATA_OPEN}\n{text}\n{DATA_CLOSE}"
