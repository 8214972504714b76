"""The OpenAI files and batches API for FakeOpenAIServer: upload a JSONL (`POST /v1/files`, multipart),
create a batch (`POST /v1/batches`), poll it (`GET /v1/batches/{id}`), cancel it, and read the output and
error files (`GET /v1/files/{id}/content`). Each line is answered by the server's own chat-completion logic
when the batch finishes; the status walks validating -> in_progress -> finalizing -> completed over polls.

Injected outcomes per created batch (`inject_outcome`): `failed` (validation fails, no output), `expired`
(part of the lines answered, the rest in the error file as `batch_expired`), `partial` (completed, some
lines answered with an HTTP error), and HTTP failures of the endpoints themselves (`inject_http`: 429...).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tests.fakes.openai_server import Failure

OutcomeKind = Literal["failed", "expired", "partial"]
LineAnswer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
Reply = tuple[int, dict[str, str], dict[str, Any] | bytes]

_PROGRESS = ("validating", "in_progress", "finalizing")


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    every: int = 2
    """`partial`: every `every`-th line fails; `expired`: only the first 1/`every` of the lines ran."""
    status_code: int = 500
    """`partial`: the HTTP status of the failed lines (500: transient, 400: the request itself is bad)."""


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    outcome: Outcome | None
    polls: int = 0
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list[dict[str, Any]] | None = None

    def payload(self) -> dict[str, Any]:
        stamp = int(time.time())
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": None if self.errors is None else
            {"object": "list", "data": self.errors}, "input_file_id": self.input_file_id,
            "completion_window": self.completion_window, "status": self.status,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id, "created_at": self.created_at,
            "in_progress_at": self.created_at if self.polls else None,
            "completed_at": stamp if self.status == "completed" else None,
            "failed_at": stamp if self.status == "failed" else None,
            "expired_at": stamp if self.status == "expired" else None,
            "cancelled_at": stamp if self.status == "cancelled" else None,
            "request_counts": dict(self.counts), "metadata": self.metadata,
        }


class FakeBatchAPI:
    """State of the files and batches endpoints. `answer(body)` -> (status code, response body) for one line."""

    def __init__(self, answer: LineAnswer, *, polls_to_finish: int = 3) -> None:
        self._answer = answer
        self.polls_to_finish = polls_to_finish
        self.hold = False
        """While True, batches stay in_progress however often they are polled (to kill a client mid-wait)."""
        self._lock = threading.Lock()
        self._files: dict[str, tuple[str, str, bytes]] = {}  # id -> (filename, purpose, bytes)
        self._batches: dict[str, _Batch] = {}
        self._outcomes: deque[Outcome] = deque()
        self._http: deque[Failure] = deque()
        self.created: list[str] = []
        """Batch ids in creation order."""
        self.uploads: list[str] = []
        self.retrieved: list[str] = []
        """Batch ids, one per poll."""
        self.downloads: list[str] = []
        self.line_bodies: list[dict[str, Any]] = []
        """Every request body of every batch line that was answered."""

    # --- programming ----------------------------------------------------------------------------------
    def inject_outcome(self, *outcomes: Outcome | OutcomeKind) -> None:
        """Each following batch create takes one outcome (else it completes with every line answered)."""
        with self._lock:
            self._outcomes.extend(o if isinstance(o, Outcome) else Outcome(o) for o in outcomes)

    def inject_http(self, *failures: Failure) -> None:
        """Each following files/batches request takes one (e.g. Failure("rate_limit"))."""
        with self._lock:
            self._http.extend(failures)

    def metadata(self, batch_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._batches[batch_id].metadata or {})

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        with self._lock:
            data = self._files[self._batches[batch_id].input_file_id][2]
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]

    # --- routing (handler threads) --------------------------------------------------------------------
    def handle(self, method: str, path: str, content_type: str, raw: bytes) -> Reply | None:
        """The reply to a files/batches request, or None when `path` is not one of these endpoints."""
        parts = [p for p in path.split("?")[0].split("/") if p]
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in ("files", "batches"):
            return None
        with self._lock:
            failure = self._http.popleft() if self._http else None
        if failure is not None:
            from tests.fakes.openai_server import error_response

            error = error_response(failure, {})
            if error is not None:
                return error
        try:
            return self._route(method, parts[1:], content_type, raw)
        except KeyError as exc:
            return 404, {}, _error(f"No such object: {exc}", "invalid_request_error")

    def _route(self, method: str, parts: list[str], content_type: str, raw: bytes) -> Reply:
        kind, rest = parts[0], parts[1:]
        if kind == "files" and method == "POST" and not rest:
            return self._upload(content_type, raw)
        if kind == "files" and method == "GET" and len(rest) == 1:
            return 200, {}, self._file_object(rest[0])
        if kind == "files" and method == "GET" and len(rest) == 2 and rest[1] == "content":
            with self._lock:
                data = self._files[rest[0]][2]
                self.downloads.append(rest[0])
            return 200, {"Content-Type": "application/octet-stream"}, data
        if kind == "batches" and method == "POST" and not rest:
            return self._create(json.loads(raw or b"{}"))
        if kind == "batches" and method == "GET" and not rest:
            with self._lock:
                data = [batch.payload() for batch in reversed(self._batches.values())]
            return 200, {}, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": False}
        if kind == "batches" and method == "GET" and len(rest) == 1:
            return 200, {}, self._poll(rest[0])
        if kind == "batches" and method == "POST" and len(rest) == 2 and rest[1] == "cancel":
            return 200, {}, self._cancel(rest[0])
        return 404, {}, _error(f"no route {method} /v1/{'/'.join(parts)}", "invalid_request_error")

    # --- files ----------------------------------------------------------------------------------------
    def _upload(self, content_type: str, raw: bytes) -> Reply:
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts() if message.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields or "purpose" not in fields:
            return 400, {}, _error("multipart fields 'file' and 'purpose' are required", "invalid_request_error")
        filename, data = fields["file"]
        file_id = self._store(filename or "upload.jsonl", fields["purpose"][1].decode(), data)
        with self._lock:
            self.uploads.append(file_id)
        return 200, {}, self._file_object(file_id)

    def _store(self, filename: str, purpose: str, data: bytes) -> str:
        with self._lock:
            return self._put(filename, purpose, data)

    def _put(self, filename: str, purpose: str, data: bytes) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self._files[file_id] = (filename, purpose, data)
        return file_id

    def _file_object(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            filename, purpose, data = self._files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    # --- batches --------------------------------------------------------------------------------------
    def _create(self, body: dict[str, Any]) -> Reply:
        input_file_id = str(body.get("input_file_id", ""))
        with self._lock:
            known = input_file_id in self._files
            outcome = self._outcomes.popleft() if known and self._outcomes else None
        if not known:
            return 400, {}, _error(f"input file {input_file_id!r} not found", "invalid_request_error")
        batch = _Batch(id=f"batch_{uuid.uuid4().hex[:24]}", input_file_id=input_file_id,
                       endpoint=str(body.get("endpoint")), completion_window=str(body.get("completion_window")),
                       metadata=body.get("metadata"), created_at=int(time.time()), outcome=outcome)
        with self._lock:
            batch.counts["total"] = len(self._lines(batch))
            self._batches[batch.id] = batch
            self.created.append(batch.id)
            return 200, {}, batch.payload()

    def _poll(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batches[batch_id]
            self.retrieved.append(batch_id)
            if batch.status in _PROGRESS and not self.hold:
                batch.polls += 1
                if batch.outcome is not None and batch.outcome.kind == "failed":
                    batch.status = "failed"
                    batch.errors = [{"code": "invalid_request", "message": "fake: the batch failed validation",
                                     "param": None, "line": 1}]
                elif batch.polls >= self.polls_to_finish:
                    self._finish(batch, "expired" if batch.outcome and batch.outcome.kind == "expired" else "completed")
                else:
                    batch.status = _PROGRESS[min(batch.polls, len(_PROGRESS) - 1)]
            elif batch.status == "validating" and self.hold:
                batch.status = "in_progress"
            if batch.status == "cancelling":
                self._finish(batch, "cancelled")
            return batch.payload()

    def _cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batches[batch_id]
            if batch.status in _PROGRESS:
                batch.status = "cancelling"
            return batch.payload()

    def _lines(self, batch: _Batch) -> list[dict[str, Any]]:
        data = self._files[batch.input_file_id][2]
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]

    def _finish(self, batch: _Batch, status: str) -> None:
        """Answer the lines (under the lock: polls are serialized) and write the output and error files."""
        outcome = batch.outcome
        out: list[str] = []
        err: list[str] = []
        lines = self._lines(batch)
        ran = len(lines) if status == "completed" else (len(lines) // (outcome.every if outcome else 2))
        for index, line in enumerate(lines):
            custom_id = line.get("custom_id")
            record_id = f"batch_req_{uuid.uuid4().hex[:20]}"
            if index >= ran:
                error = {"code": "batch_expired" if status == "expired" else "batch_cancelled",
                         "message": "This request could not be executed before the completion window expired."}
                err.append(json.dumps({"id": record_id, "custom_id": custom_id, "response": None, "error": error}))
                continue
            if outcome is not None and outcome.kind == "partial" and index % outcome.every == outcome.every - 1:
                code = outcome.status_code
                body: dict[str, Any] = _error(f"fake: line failed with HTTP {code}", "server_error")
            else:
                self.line_bodies.append(line["body"])
                try:
                    code, body = self._answer(line["body"])
                except Exception as exc:  # noqa: BLE001 - a line the responder cannot answer fails alone
                    code, body = 500, _error(f"fake: {type(exc).__name__}: {exc}", "server_error")
            record = {"id": record_id, "custom_id": custom_id, "error": None,
                      "response": {"status_code": code, "request_id": uuid.uuid4().hex, "body": body}}
            (out if code == 200 else err).append(json.dumps(record))
        batch.counts.update(completed=len(out), failed=len(err))
        batch.status = status
        if out:
            batch.output_file_id = self._put(f"{batch.id}_output.jsonl", "batch_output", ("\n".join(out) + "\n").encode())
        if err:
            batch.error_file_id = self._put(f"{batch.id}_error.jsonl", "batch_output", ("\n".join(err) + "\n").encode())


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
