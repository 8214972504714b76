"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API, and its files and batches API
(tests/fakes/batch_api.py), with programmable answers, latency and injected failures. Test double for
distill.llm.gateway (driven through the real litellm client); it never talks to the network and keeps
everything it received for assertions.

Standalone: `python -m tests.fakes.openai_server --port 8765 --latency 0.3`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from tests.fakes.batch_api import FakeBatchAPI

FailureKind = Literal[
    "rate_limit",  # HTTP 429 with Retry-After
    "server_error",  # HTTP 500
    "unavailable",  # HTTP 503
    "timeout",  # sleep `sleep_s` before answering (longer than the client timeout)
    "unauthorized",  # HTTP 401
    "bad_request",  # HTTP 400
    "response_format_rejected",  # HTTP 400, only when the request carries a response_format
    "context_window",  # HTTP 400 worded like OpenAI's context-length error
    "content_policy",  # HTTP 400 worded like OpenAI's content-policy refusal
    "content_filter",  # HTTP 400 shaped like Azure OpenAI's content-filter refusal (code + innererror)
    "response_format_param",  # HTTP 400 naming response_format only in `param`, only when the request has one
    "truncated_json",  # 200, the content cut in the middle
    "invalid_json",  # 200, prose that is not JSON
    "extra_fields",  # 200, the content object with an unexpected key added
]

Responder = Callable[[dict[str, Any]], str]
ContentHook = Callable[[dict[str, Any], str], str]
FailureRule = Callable[[dict[str, Any]], "Failure | None"]


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    retry_after: float | None = 0.05
    """Seconds sent in the Retry-After header of a 429 (None: no header)."""
    sleep_s: float = 5.0
    """How long a `timeout` failure stalls before answering."""


def last_user_content(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def first_user_content(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def echo_responder(body: dict[str, Any]) -> str:
    """Default answer: a JSON object echoing the (first) user message."""
    return json.dumps({"echo": first_user_content(body)[:500]})


def enrich_responder(body: dict[str, Any]) -> str:
    """Enrichment-like answer: one entry per product object (a dict with an "id") in the <catalog_data> block."""
    text = first_user_content(body)
    start, end = text.find("<catalog_data>"), text.find("</catalog_data>")
    data = json.loads(text[start + len("<catalog_data>") : end]) if start >= 0 and end > start else []
    items = data if isinstance(data, list) else data.get("products", []) if isinstance(data, dict) else []
    products = [
        {"id": str(item["id"]), "summary": f"summary of {item['id']}", "keyphrases": ["fake phrase", str(item["id"])]}
        for item in items
        if isinstance(item, dict) and "id" in item
    ]
    return json.dumps({"products": products})


RESPONDERS: dict[str, Responder] = {"echo": echo_responder, "enrich": enrich_responder}


def _approx_tokens(text: str) -> int:
    # Deterministic stand-in for a tokenizer: tests compare sums, not absolute values.
    return max(1, len(text) // 4)


class FakeOpenAIServer:
    """Threaded HTTP server: POST /v1/chat/completions, GET /v1/models, and /v1/files + /v1/batches (`batches`).

    Failures are taken first from `failure_rule(body)` (per request, e.g. "always fail prompt X"), then from
    the FIFO queue filled by `inject()`. Every received body is kept in `requests` (thread-safe)."""

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        latency: float = 0.0,
        failure_rule: FailureRule | None = None,
        content_hook: ContentHook | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.failure_rule = failure_rule
        self.content_hook = content_hook
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._failures: deque[Failure] = deque()
        self._requests: list[dict[str, Any]] = []
        self._statuses: list[int] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.batches = FakeBatchAPI(self.answer_line)
        """The files and batches endpoints: their state, injected outcomes and what they received."""

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        server = _Server((self._host, self._port), _make_handler(self))
        server.daemon_threads = True
        # A stalled "timeout" handler must not hold up stop().
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- programming ----------------------------------------------------------------------------------
    def inject(self, *failures: Failure | FailureKind) -> None:
        """Queue failures; each following request consumes one."""
        with self._lock:
            for failure in failures:
                self._failures.append(failure if isinstance(failure, Failure) else Failure(failure))

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._requests.clear()
            self._statuses.clear()

    # --- observations ---------------------------------------------------------------------------------
    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def statuses(self) -> list[int]:
        with self._lock:
            return list(self._statuses)

    def calls_by_prompt(self) -> Counter[str]:
        """Requests per first user message (the prompt's data), retries included."""
        return Counter(first_user_content(body) for body in self.requests)

    # --- request handling (called from handler threads) -----------------------------------------------
    def _record(self, body: dict[str, Any]) -> Failure | None:
        rule = self.failure_rule(body) if self.failure_rule is not None else None
        with self._lock:
            self._requests.append(body)
            if rule is not None:
                return rule
            return self._failures.popleft() if self._failures else None

    def _record_status(self, status: int) -> None:
        with self._lock:
            self._statuses.append(status)

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        failure = self._record(body)
        if self.latency > 0:
            time.sleep(self.latency)
        return self._reply(body, failure)

    def answer_line(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One batch line, answered like a chat completion: `failure_rule` applies, the inject() queue (meant
        for live requests) and the latency do not, and the body is not counted in `requests`."""
        failure = self.failure_rule(body) if self.failure_rule is not None else None
        if failure is not None and failure.kind == "timeout":
            return 408, _error_body("Request timed out (fake)", "timeout")
        status, _, payload = self._reply(body, failure)
        return status, payload

    def _reply(self, body: dict[str, Any], failure: Failure | None) -> tuple[int, dict[str, str], dict[str, Any]]:
        if failure is not None:
            error = error_response(failure, body)
            if error is not None:
                return error
        content = self.responder(body)
        if self.content_hook is not None:
            content = self.content_hook(body, content)
        if failure is not None:
            content = _corrupt(failure.kind, content)
        prompt_text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        prompt_tokens, completion_tokens = _approx_tokens(prompt_text), _approx_tokens(content)
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "length" if failure is not None and failure.kind == "truncated_json" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, {}, payload


class _Server(ThreadingHTTPServer):
    # The stdlib default backlog (5) refuses connections under a burst of concurrent clients; a real
    # provider does not, and refused connections would show up as spurious APIConnectionErrors.
    request_queue_size = 256


def _error_body(message: str, kind: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code, **extra}}


def error_response(failure: Failure, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]] | None:
    kind = failure.kind
    if kind == "rate_limit":
        headers = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
        return 429, headers, _error_body("Rate limit reached (fake)", "requests", "rate_limit_exceeded")
    if kind == "server_error":
        return 500, {}, _error_body("The server had an error (fake)", "server_error")
    if kind == "unavailable":
        return 503, {}, _error_body("The engine is overloaded (fake)", "server_error")
    if kind == "unauthorized":
        return 401, {}, _error_body("Incorrect API key provided (fake)", "invalid_request_error", "invalid_api_key")
    if kind == "bad_request":
        return 400, {}, _error_body("Bad request (fake)", "invalid_request_error")
    if kind == "response_format_rejected" and body.get("response_format") is not None:
        return 400, {}, _error_body("response_format is not supported (fake)", "invalid_request_error")
    if kind == "context_window":
        message = "This model's maximum context length is 128000 tokens. However, your messages resulted in 200000 tokens."
        return 400, {}, _error_body(message, "invalid_request_error", "context_length_exceeded")
    if kind == "content_policy":
        message = "Your request was rejected by the safety system (fake)."
        return 400, {}, _error_body(message, "invalid_request_error", "content_policy_violation")
    if kind == "content_filter":
        message = "The response was filtered due to the prompt triggering the content management policy (fake)."
        inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {"violence": {"filtered": True}}}
        return 400, {}, _error_body(message, "invalid_request_error", "content_filter", innererror=inner)
    if kind == "response_format_param" and body.get("response_format") is not None:
        return 400, {}, _error_body("Invalid parameter for this model (fake).", "invalid_request_error",
                                    "invalid_value", param="response_format")
    if kind == "timeout":
        time.sleep(failure.sleep_s)
    return None


def _corrupt(kind: FailureKind, content: str) -> str:
    if kind == "truncated_json":
        return content[: max(1, len(content) // 2)]
    if kind == "invalid_json":
        return "I am sorry, I cannot answer that in JSON."
    if kind == "extra_fields":
        try:
            parsed = json.loads(content)
        except ValueError:
            return content
        if isinstance(parsed, dict):
            parsed["unexpected_field"] = "invented by the model"
            return json.dumps(parsed)
    return content


def _make_handler(owner: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections alive, like a real provider; every reply sets Content-Length.
        protocol_version = "HTTP/1.1"
        # One buffered write per reply (flushed after each request) and no Nagle: written as two small
        # segments (headers, then body), a reply waited for the client's delayed ACK, ~40-60 ms per call that
        # a real provider does not add and that the throughput benchmark charged to the gateway.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _send(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
            headers = dict(headers or {})
            try:
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (its timeout fired first): nothing left to answer.
                pass
            owner._record_status(status)

        def _batch_api(self, method: str, raw: bytes) -> bool:
            reply = owner.batches.handle(method, self.path, self.headers.get("Content-Type", ""), raw)
            if reply is not None:
                self._send(reply[0], reply[2], reply[1])
            return reply is not None

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self._batch_api("GET", b""):
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]})
            else:
                self._send(404, _error_body(f"no route {self.path}", "invalid_request_error"))

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self._batch_api("POST", raw):
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error_body(f"no route {self.path}", "invalid_request_error"))
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, _error_body("request body is not JSON", "invalid_request_error"))
                return
            status, headers, payload = owner.completion(body)
            self._send(status, payload, headers)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI chat-completions server (port 0 = any free port).")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per call")
    parser.add_argument("--responder", choices=sorted(RESPONDERS), default="echo", help="what the model answers")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(RESPONDERS[args.responder], latency=args.latency, port=args.port).start()
    print(f"fake OpenAI server on {server.base_url} (latency {args.latency}s); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
