"""Reading a provider's exception: its cause chain, its structured error fields (`code`, `param`), whether it
is a content-filter refusal, a JSON-mode rejection or a connection failure. Pure functions over exceptions,
no litellm import: `distill.llm.gateway._translate` uses them to map litellm's errors onto distill.errors.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
# Provider error codes of a content-filter refusal: OpenAI chat and images, Azure OpenAI (and its inner code).
# Matched on the structured `code`, never on message wording (which changes between client releases).
REFUSAL_CODES = frozenset({"content_policy_violation", "content_filter", "responsibleaipolicyviolation",
                           "moderation_blocked"})
# Request fields whose rejection means "this provider does not do JSON mode" (weaken it, do not stop).
FORMAT_PARAMS = ("response_format", "json_schema", "json_object")


def cause_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what caused it (litellm wraps the SDK's error, which wraps httpx's, ...)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < 16:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def error_fields(exc: BaseException, name: str) -> set[str]:
    """Every value of the provider's structured error field `name` ("code", "param", ...), lower-cased,
    found on the exception chain: the SDK's attribute, its JSON body, Azure's `innererror`."""
    found: set[str] = set()
    for link in cause_chain(exc):
        places: list[Any] = [{name: getattr(link, name, None)}]
        for holder in (getattr(link, "body", None), getattr(link, "provider_specific_fields", None)):
            if isinstance(holder, dict):
                places += [holder, holder.get("error"), holder.get("innererror")]
                if isinstance(holder.get("error"), dict):
                    places.append(holder["error"].get("innererror"))
        for place in places:
            value = place.get(name) if isinstance(place, dict) else None
            if isinstance(value, str) and value:
                found.add(value.lower())
    return found


def refusal_code(exc: BaseException) -> str | None:
    codes = error_fields(exc, "code") & REFUSAL_CODES
    return min(codes) if codes else None


def about_response_format(exc: BaseException) -> bool:
    """A 400 that names the JSON-mode request field: by the provider's `param` when it sets one, else by the
    field name in the message (vLLM, Ollama and litellm's UnsupportedParamsError only name it there)."""
    params = error_fields(exc, "param")
    if params:
        return any(p.startswith(FORMAT_PARAMS) for p in params)
    text = str(exc).lower()
    return any(name in text for name in FORMAT_PARAMS)


def connection_cause(exc: BaseException) -> str | None:
    """Why no request reached the model, from the OS-level error under the client's wrappers (the most
    specific one on the chain: aiohttp's connector error is itself an OSError around the refusal)."""
    chain = list(cause_chain(exc))
    named: tuple[tuple[type[BaseException], str], ...] = (
        (ConnectionRefusedError, "connection refused"),
        (socket.gaierror, "DNS lookup failed (unknown host)"),
        (ssl.SSLError, "TLS handshake failed"),
        (ConnectionResetError, "connection reset by the server"),
    )
    for kind, text in named:
        if any(isinstance(link, kind) for link in chain):
            return text
    for link in chain:
        if isinstance(link, OSError) and not isinstance(link, TimeoutError) and link.errno is not None:
            return f"cannot connect ({link.strerror or type(link).__name__})"
    return None


def status_text(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    named = {401: "authentication failed", 403: "permission denied", 404: "model or endpoint not found"}
    if isinstance(status, int):
        return f"{named.get(status, type(exc).__name__)} (HTTP {status})"
    return type(exc).__name__
