"""Provider calls in worker processes (`llm_processes`): a pool of spawned processes, each running one asyncio
loop that serves many concurrent calls. One loop per process does every call's client CPU in series, so at
high concurrency the CPU of the client library, not the model, bounds the rate; N loops on N cores lift it.

The parent keeps every piece of state (budget, rate limits, circuit breaker, retries, JSON-mode fallback,
cache, accounting); a worker only runs the call function it was given (distill.llm.gateway's raw provider
call) and sends back its picklable result. This module never imports litellm nor the gateway: the call
function comes in by reference (pickled by name, imported in the worker).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import os
import signal
import threading
import traceback
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from distill import errors
from distill.errors import LLMError, WorkerLost

CallFn = Callable[[Any], Awaitable[Any]]
"""A module-level async function (picklable by name): one request in, one picklable result out."""

CALLS_PER_LOOP = 16
"""Concurrent calls one event loop is given before `llm_processes="auto"` adds a process. A throughput
constant of this client (litellm's CPU per call against a 0.3 s endpoint), not a quality one. Quiet-machine
ratios to the latency-bound ideal with one loop: 0.88 at 8 concurrent calls, 0.71 at 32; the line through
them crosses 0.8 at about 19 (8 + 24 x 0.08 / 0.17), so 16 per loop keeps each loop on the >= 0.8 side with a
margin (at ~5.6 ms of CPU per call and 0.3 s per call, 16 in flight keep a loop ~30% busy). See
docs/pipeline.md, "LLM throughput"."""

PARENT_POLL_S = 1.0
"""How often a worker checks that its parent is still alive (besides noticing its pipe close)."""

STOP_WAIT_S = 5.0
"""How long close() waits for a worker to exit after asking it to, before terminating it."""


def worker_count(setting: int | Literal["auto"], concurrency: int, cores: int | None = None) -> int:
    """Processes that make provider calls for `llm_processes` = `setting`; 1 means in the caller's process
    (no workers). "auto": one loop per CALLS_PER_LOOP concurrent calls, at most one per core."""
    if setting != "auto":
        return setting
    cores = cores if cores is not None else _cores()
    return max(1, min(cores, math.ceil(concurrency / CALLS_PER_LOOP)))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- what crosses the process boundary (plain data) ---------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """A provider's answer: the text and the usage it reported."""

    text: str | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ErrorReply:
    """A provider error, translated in the worker into distill.errors' tree: `kind` names the class.
    (Exceptions are not sent as such: LLMError's `cause` and litellm's response objects do not pickle.)"""

    kind: str
    message: str
    cause: str
    detail: str
    """The provider's exception as "Type: text"."""
    retry_after_s: float | None

    def error(self) -> LLMError:
        cls = getattr(errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, LLMError)):
            cls = errors.TerminalLLMError
        return cls(self.message, cause=self.cause)


class ForwardedError(Exception):
    """In the parent: the provider error a worker got, already translated (`failure`). Carries the provider's
    Retry-After (`retry_after_s`, read by distill.llm.ratelimit.retry_after) and its text."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.detail)
        self.failure = reply.error()
        self.retry_after_s = reply.retry_after_s


# --- parent side --------------------------------------------------------------------------------------------
class _Worker:
    """One worker process, the parent's end of its pipe, and a thread that reads its replies."""

    def __init__(self, context: Any, call_fn: CallFn, prepare: Callable[[], object] | None, name: str) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.conn: Connection = parent_end
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self.lock = threading.Lock()  # guards `pending` and `dead` (the reader thread takes it)
        self.send_lock = threading.Lock()  # one message at a time on the pipe; never held with `lock`, so a
        # send blocked on a full pipe cannot stop the reader thread from draining the replies
        self.ready = threading.Event()
        self.dead = False
        self.killed: str | None = None  # why the parent killed it, if it did
        self.sent = 0
        self.process = context.Process(target=serve, args=(child_end, call_fn, prepare, os.getpid()), name=name,
                                       daemon=True)
        self.process.start()
        # The parent must not hold the child's end: its EOF is how a dead worker is noticed.
        child_end.close()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                kind, call_id, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "ready":
                self.ready.set()
                continue
            with self.lock:
                entry = self.pending.pop(call_id, None)
            if entry is not None:
                _settle(entry, kind, payload)
        self.process.join(timeout=STOP_WAIT_S)
        with self.lock:
            self.dead = True
            orphans, self.pending = list(self.pending.values()), {}
        self.ready.set()
        lost = f"LLM worker process {self.pid} {self.killed or f'exited (code {self.process.exitcode})'} during the call"
        for entry in orphans:
            _settle(entry, "lost", lost)

    def kill(self, why: str) -> None:
        """Kill a stuck worker: its pipe closes and the reader thread fails its calls."""
        self.killed = self.killed or why
        if self.process.is_alive():
            self.process.kill()

    def stop(self) -> None:
        try:
            self.send(("stop", 0, None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=STOP_WAIT_S)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=STOP_WAIT_S)
        self.conn.close()
        self._reader.join(timeout=STOP_WAIT_S)


def _settle(entry: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]], kind: str, payload: Any) -> None:
    """From a reader thread: complete the caller's future on the caller's loop."""
    loop, future = entry

    def complete() -> None:
        if future.done():
            return
        if kind == "done":
            future.set_result(payload)
        elif kind == "lost":
            future.set_exception(WorkerLost(payload, cause="LLM worker process died"))
        else:  # "bug": the call function raised something that is not a provider error
            future.set_exception(RuntimeError(f"in an LLM worker process: {payload}"))

    try:
        loop.call_soon_threadsafe(complete)
    except RuntimeError:  # that loop is closed: nobody waits for this answer any more
        pass


class WorkerPool:
    """`processes` worker processes that run `call_fn`; `await pool.call(request)` from any event loop.
    `prepare` (picklable by name) runs once in each new worker before it reports ready.

    Workers start on the first call ('spawn': litellm's client threads and pooled connections make fork
    unsafe), are shut down by close() or at interpreter exit, and exit by themselves when the parent dies (their
    pipe reaches EOF). A worker that dies fails its in-flight calls with WorkerLost (transient: the gateway
    retries) and is replaced on the next call."""

    def __init__(self, processes: int, call_fn: CallFn, *, prepare: Callable[[], object] | None = None,
                 name: str = "shelfgraph-llm") -> None:
        if processes < 1:
            raise ValueError("a worker pool needs at least one process")
        self.processes = processes
        self._call_fn = call_fn
        self._prepare = prepare
        self._name = name
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * processes
        self._ids = itertools.count(1)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        self.restarts = 0
        """Workers started to replace one that died."""

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (started ones only)."""
        return [w.pid for w in self._workers if w is not None and not w.dead]

    @property
    def sent(self) -> list[int]:
        """Calls sent to each slot's workers so far (replaced workers included)."""
        return [0 if w is None else w.sent for w in self._workers]

    def start(self, wait: bool = True) -> None:
        """Start every worker that is not running; with `wait`, return once each has loaded its call function."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the LLM worker pool is closed")
            for slot, worker in enumerate(self._workers):
                if worker is None or worker.dead:
                    if worker is not None:
                        self.restarts += 1
                    self._workers[slot] = _Worker(self._context, self._call_fn, self._prepare,
                                                  f"{self._name}-{slot}")
            started = [w for w in self._workers if w is not None]
        if wait:
            for worker in started:
                worker.ready.wait()

    async def call(self, request: Any, *, stuck_after_s: float | None = None) -> Any:
        """Run `call_fn(request)` in a worker and return its result. Raises WorkerLost when the worker dies
        first, RuntimeError when the call function raised (a bug, with the worker's traceback).
        `stuck_after_s`: no answer by then means the worker is alive but stuck (its loop blocked): it is killed,
        so that this call and its others fail with WorkerLost (and are retried) instead of waiting for ever."""
        worker = self._pick()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call_id = next(self._ids)
        with worker.lock:
            if worker.dead:
                raise WorkerLost(f"LLM worker process {worker.pid} exited before the call",
                                 cause="LLM worker process died")
            worker.pending[call_id] = (loop, future)
            worker.sent += 1
        try:
            worker.send(("call", call_id, request))
        except (OSError, ValueError) as exc:
            with worker.lock:
                worker.pending.pop(call_id, None)
            raise WorkerLost(f"LLM worker process {worker.pid} is gone: {exc}", cause="LLM worker process died") from exc
        try:
            if stuck_after_s is None:
                return await future
            try:
                return await asyncio.wait_for(asyncio.shield(future), stuck_after_s)
            except TimeoutError:
                worker.kill(f"gave no answer in {stuck_after_s:g} s (stuck), killed")
                return await future  # its reader thread fails it with WorkerLost once the process is gone
        except asyncio.CancelledError:
            with worker.lock:
                worker.pending.pop(call_id, None)
            try:
                worker.send(("cancel", call_id, None))
            except (OSError, ValueError):
                pass
            raise

    def _pick(self) -> _Worker:
        """The running worker with the fewest calls in flight (ties in turn); dead or unstarted ones are
        started first."""
        if any(w is None or w.dead for w in self._workers):
            self.start(wait=False)
        turn = next(self._turn)
        order = [self._workers[(turn + i) % self.processes] for i in range(self.processes)]
        return min((w for w in order if w is not None), key=lambda w: len(w.pending))

    def close(self) -> None:
        """Stop every worker (in-flight calls fail with WorkerLost). Idempotent."""
        with self._lock:
            self._closed = True
        self._finalizer()


def _stop_all(workers: list[_Worker | None]) -> None:
    for worker in workers:
        if worker is not None:
            worker.stop()


# --- worker side --------------------------------------------------------------------------------------------
def serve(conn: Connection, call_fn: CallFn, prepare: Callable[[], object] | None = None,
          parent_pid: int | None = None) -> None:
    """A worker process's main: serve calls until told to stop, the parent's end of the pipe closes, or the
    parent process `parent_pid` is gone (a copy of the parent's end held by another process would keep the pipe
    open: the parent's pid is polled too, as a PDEATHSIG would)."""
    # Ctrl-C reaches the whole process group: the parent decides when workers stop (close(), or its exit).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if prepare is not None:
        prepare()
    asyncio.run(_serve(conn, call_fn, parent_pid))


async def _watch_parent(parent_pid: int, stopped: asyncio.Future[None]) -> None:
    """Resolve `stopped` once this process is no longer `parent_pid`'s child (re-parented: the parent died)."""
    while not stopped.done():
        if os.getppid() != parent_pid:
            stopped.set_result(None)
            return
        await asyncio.sleep(PARENT_POLL_S)


async def _serve(conn: Connection, call_fn: CallFn, parent_pid: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()
    tasks: dict[int, asyncio.Task[None]] = {}

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except (OSError, ValueError):  # the parent is gone
            if not stopped.done():
                stopped.set_result(None)

    async def run(call_id: int, request: Any) -> None:
        try:
            result = await call_fn(request)
            message: tuple[Any, ...] = ("done", call_id, result)
        except asyncio.CancelledError:
            return
        except BaseException:  # noqa: BLE001 - a bug in the call function: its traceback goes to the parent
            message = ("bug", call_id, traceback.format_exc(limit=20))
        finally:
            tasks.pop(call_id, None)
        try:
            conn.send(message)
        except (OSError, ValueError):
            send(("bug", call_id, "the result could not be sent: " + traceback.format_exc(limit=5)))

    def readable() -> None:
        try:
            while conn.poll():
                kind, call_id, request = conn.recv()
                if kind == "call":
                    tasks[call_id] = loop.create_task(run(call_id, request))
                elif kind == "cancel" and call_id in tasks:
                    tasks[call_id].cancel()
                elif kind == "stop" and not stopped.done():
                    stopped.set_result(None)
                    return
        except (EOFError, OSError):
            if not stopped.done():
                stopped.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    watcher = loop.create_task(_watch_parent(parent_pid, stopped)) if parent_pid is not None else None
    send(("ready", 0, os.getpid()))
    try:
        await stopped
    finally:
        loop.remove_reader(conn.fileno())
        if watcher is not None:
            watcher.cancel()
        for task in list(tasks.values()):
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        conn.close()
