"""Worker processes for the text encoder (distill.evidence.embed). The caller and N-1 child processes take
length-sorted, padded batches from one queue, so each process gets work as fast as it finishes its last batch
(equal token work without a static split, also when other jobs slow one core), and every batch's vectors are
put back at its index. Knows nothing about the model: the caller's share runs through a callback, the children
run `python -m distill.evidence.embed_worker`.

Children are fresh interpreters started with subprocess, not multiprocessing's fork: forking a process that
has live threads (the tokenizer's rayon pool, OpenBLAS, an LLM client's) can deadlock the child, and spawn or
forkserver would re-import the caller's `__main__` (the CLI and everything it imports). A child costs about
0.6 s (interpreter, numpy, loading the weights), paid while the caller is already encoding its own batches.

Protocol, two pipes per child (multiprocessing.connection over os.pipe): parent -> child `(index, ids, mask)`;
child -> parent `("ready", pid, load_seconds)`, `("done", index, vectors)` or `("error", traceback)`. The
child exits when its task pipe closes, so a parent that dies (even by SIGKILL) leaves no worker behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from distill.errors import EncoderError

F32 = npt.NDArray[np.float32]
Batch = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]
"""(token ids, attention mask), both (texts, padded length)."""

PREFETCH: Final = 2
"""Batches queued per child: one computing, one waiting, so a child never idles while the caller (which
reads results only between its own batches) is busy."""

_CALLER_ENCODES = True
"""The calling process encodes batches too (it would otherwise sit idle on one of the cores). Tests turn it
off to force every batch through the children."""


@dataclass(frozen=True)
class PoolStats:
    """What one pooled encode did: batches per process (the caller first) and, per child, the seconds from
    starting it to its "ready" (None if it never got ready before the work ran out)."""

    batches_per_process: list[int]
    worker_ready_seconds: list[float | None]


_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[2]
_SHUTDOWN_SECONDS: Final = 10.0


class _Worker:
    """One child process and its two pipes; `inflight` holds the batch indices it has been sent."""

    def __init__(self, number: int, model_dir: Path, max_tokens: int) -> None:
        self.number = number
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        # The child's environment, not a setting: one BLAS/OpenMP thread from the first import (no pool of
        # sleeping threads), no tokenizer threads (children never tokenize), and this package importable.
        env = dict(os.environ)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "distill.evidence.embed_worker", str(task_r), str(result_w), str(model_dir),
                 str(max_tokens)],
                pass_fds=(task_r, result_w), env=env, stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.inflight: deque[int] = deque()
        self.ready = False
        self.batches_done = 0
        self.started = time.perf_counter()
        self.ready_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self, *, kill: bool) -> None:
        """Close both pipes (a child blocked on either sees EOF or EPIPE and exits), then reap the child."""
        for conn in (self.tasks, self.results):
            try:
                conn.close()
            except OSError:
                pass
        if kill and self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=_SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def encode_batches(
    batches: Sequence[Batch], processes: int, local: Callable[[Batch], F32], *, model_dir: Path, max_tokens: int,
    encoder_name: str, advance: Callable[[int], None] = lambda index: None,
) -> tuple[list[F32], PoolStats]:
    """Vectors of every batch, in the order given, computed by the caller (`local`) and `processes - 1`
    children; `advance(index)` after each batch. Also returns what each process did (PoolStats). Batches are handed out from the front, so give the costliest first. Raises EncoderError when a
    child dies or fails; children are shut down on return, on error and on KeyboardInterrupt alike."""
    if processes < 2:
        raise ValueError(f"encode_batches needs >= 2 processes, got {processes}")
    results: list[F32 | None] = [None] * len(batches)
    pending: deque[int] = deque(range(len(batches)))
    workers: list[_Worker] = []
    caller_done = 0
    clean = False
    try:
        for number in range(1, processes):
            workers.append(_Worker(number, model_dir, max_tokens))
        remaining = len(batches)
        while remaining:
            remaining -= _service(workers, batches, pending, results, encoder_name, advance, timeout=0)
            if pending and _CALLER_ENCODES:
                index = pending.popleft()
                results[index] = local(batches[index])
                caller_done += 1
                remaining -= 1
                advance(index)
            elif remaining:
                remaining -= _service(workers, batches, pending, results, encoder_name, advance, timeout=None)
        clean = True
    finally:
        for worker in workers:
            worker.close(kill=not clean)
    done: list[F32] = [r for r in results if r is not None]
    assert len(done) == len(batches)
    return done, PoolStats([caller_done, *(w.batches_done for w in workers)], [w.ready_seconds for w in workers])


def _service(
    workers: list[_Worker], batches: Sequence[Batch], pending: deque[int], results: list[F32 | None],
    encoder_name: str, advance: Callable[[int], None], *, timeout: float | None,
) -> int:
    """Read every message the children have sent (waiting up to `timeout` for the first), top up their task
    queues, and return how many batches were completed."""
    completed = 0
    by_conn = {id(w.results): w for w in workers}
    for conn in wait([w.results for w in workers], timeout=timeout):
        worker = by_conn[id(conn)]
        while True:
            try:
                message = worker.results.recv()
            except (EOFError, OSError) as exc:
                raise _died(worker, encoder_name) from exc
            kind = message[0]
            if kind == "ready":
                worker.ready = True
                worker.ready_seconds = time.perf_counter() - worker.started
            elif kind == "done":
                _, index, vectors = message
                results[index] = vectors
                worker.inflight.remove(index)
                worker.batches_done += 1
                completed += 1
                advance(index)
            else:
                raise EncoderError(
                    f"{encoder_name} encoder worker {worker.number} (pid {worker.pid}) failed:\n{message[1]}"
                )
            if not worker.results.poll():
                break
    for worker in workers:
        while worker.ready and pending and len(worker.inflight) < PREFETCH:
            index = pending.popleft()
            try:
                worker.tasks.send((index, *batches[index]))
            except OSError as exc:
                raise _died(worker, encoder_name) from exc
            worker.inflight.append(index)
    return completed


def _died(worker: _Worker, encoder_name: str) -> EncoderError:
    try:
        code: int | None = worker.process.wait(timeout=_SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    return EncoderError(
        f"{encoder_name} encoder worker {worker.number} (pid {worker.pid}) {how} while encoding "
        f"{len(worker.inflight)} batch(es); rerun with workers=1 to encode in this process"
    )
