"""A child process of the text encoder's pool (distill.evidence.embed_pool starts it): loads the weights once,
then encodes padded batches from its task pipe until the pipe closes. Results go out through a sender thread,
so the next batch is computed while the parent has not yet read the last one.

    python -m distill.evidence.embed_worker TASK_FD RESULT_FD MODEL_DIR MAX_TOKENS
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path


def _send_all(results: Connection, outbox: queue.SimpleQueue[tuple[object, ...] | None]) -> None:
    while (message := outbox.get()) is not None:
        try:
            results.send(message)
        except OSError:  # the parent is gone or has given up on us: nothing left to do
            os._exit(1)


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group; the parent decides, and closes our pipes to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    task_fd, result_fd, model_dir, max_tokens = int(argv[0]), int(argv[1]), Path(argv[2]), int(argv[3])
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    outbox: queue.SimpleQueue[tuple[object, ...] | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(results, outbox), name="embed-worker-sender", daemon=True)
    sender.start()
    try:
        from distill.evidence.embed import TextEncoder, _blas_limit

        started = time.perf_counter()
        encoder = TextEncoder(model_dir, max_tokens=max_tokens, blas_threads=1, workers=1)
        outbox.put(("ready", os.getpid(), time.perf_counter() - started))
        with _blas_limit(1):
            while True:
                try:
                    index, ids, mask = tasks.recv()
                except EOFError:
                    break
                outbox.put(("done", index, encoder._forward(ids, mask)))
    except Exception:
        outbox.put(("error", traceback.format_exc()))
    outbox.put(None)
    sender.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
