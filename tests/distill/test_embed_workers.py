"""The text encoder's worker processes (distill.evidence.embed_pool): the same vectors as one process, in input
order; small inputs stay in process; a dead or failing worker is a clear EncoderError and no child outlives
encode()."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from distill.errors import ConfigError, EncoderError
from distill.evidence import embed, embed_pool
from distill.evidence.embed import TextEncoder, model_dir

WORDS = ["usb", "cable", "organic", "whole", "milk", "camera", "lens", "tripod", "charger", "wireless", "oat",
         "coffee", "bean", "battery", "case", "gluten", "free", "pasta", "sauce", "mirrorless", "kit"]


def mixed_texts(n: int) -> list[str]:
    """Titles of 1 to 40 words in shuffled order, with repeats, so batches differ in length and size."""
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 41)))) for _ in range(n)]
    return texts + texts[:5] + ["", "x"]


@pytest.fixture(scope="module")
def single() -> TextEncoder:
    return TextEncoder(model_dir(), workers=1)


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> list[embed_pool._Worker]:
    """Every worker started during the test; the pool threshold is off so any input uses workers."""
    workers: list[embed_pool._Worker] = []
    real_init = embed_pool._Worker.__init__

    def recording_init(self: embed_pool._Worker, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        workers.append(self)

    monkeypatch.setattr(embed_pool._Worker, "__init__", recording_init)
    monkeypatch.setattr(embed, "POOL_MIN_TOKENS", 0)
    return workers


def test_workers_only_give_the_same_vectors_in_input_order(
    single: TextEncoder, started: list[embed_pool._Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_pool, "_CALLER_ENCODES", False)  # every batch goes through a child
    texts = mixed_texts(150)
    pooled = TextEncoder(model_dir(), workers=3)
    vectors = pooled.encode(texts, batch_size=8)
    assert pooled.last_pool is not None
    per_process = pooled.last_pool.batches_per_process
    assert per_process[0] == 0 and len(per_process) == 3 and sum(per_process) > 3
    assert np.array_equal(vectors, single.encode(texts, batch_size=8))
    assert [w.process.returncode for w in started] == [0, 0]  # shut down and reaped before encode() returned


def test_caller_and_worker_share_the_work_with_identical_output(
    single: TextEncoder, started: list[embed_pool._Worker]
) -> None:
    texts = mixed_texts(300)
    pooled = TextEncoder(model_dir(), workers=2)
    vectors = pooled.encode(texts, batch_size=4)
    assert pooled.last_pool is not None and sum(pooled.last_pool.batches_per_process) == len(
        embed._plan_batches(single.tokenize(texts), 4, embed.DEFAULT_BATCH_TOKENS))
    assert np.array_equal(vectors, single.encode(texts, batch_size=4))
    reversed_vectors = pooled.encode(texts[::-1], batch_size=4)
    np.testing.assert_allclose(reversed_vectors[::-1], vectors, atol=1e-6)
    assert len(started) == 2 and all(w.process.returncode == 0 for w in started)


def test_small_input_stays_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_worker(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker process was started for a small input")

    monkeypatch.setattr(embed_pool._Worker, "__init__", no_worker)
    encoder = TextEncoder(model_dir(), workers="auto")
    texts = ["organic whole milk", "USB-C charging cable"] * 20
    token_ids = encoder.tokenize(texts)
    padded = embed._PaddedBatches(token_ids, embed._plan_batches(token_ids, 64, embed.DEFAULT_BATCH_TOKENS))
    assert sum(padded.cells) < embed.POOL_MIN_TOKENS
    vectors = encoder.encode(texts)
    assert vectors.shape == (40, 384) and encoder.last_pool is None


def test_auto_uses_the_cores_this_process_may_run_on() -> None:
    encoder = TextEncoder(model_dir(), workers="auto")
    cores = len(os.sched_getaffinity(0))
    assert encoder._processes_for(10**9, 1000) == cores
    assert encoder._processes_for(10**9, 1) == 1  # never more processes than batches
    assert encoder._processes_for(embed.POOL_MIN_TOKENS - 1, 1000) == 1
    assert TextEncoder(model_dir(), workers=3)._processes_for(10**9, 1000) == 3


def test_killed_worker_is_a_clear_error_not_a_hang(
    started: list[embed_pool._Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_pool, "_CALLER_ENCODES", False)  # the parent can only wait for the child
    real_init = embed_pool._Worker.__init__

    def killed_at_start(self: embed_pool._Worker, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        os.kill(self.pid, signal.SIGKILL)

    monkeypatch.setattr(embed_pool._Worker, "__init__", killed_at_start)
    with pytest.raises(EncoderError, match=r"all-MiniLM-L6-v2 encoder worker 1 \(pid \d+\) was killed by signal 9"):
        TextEncoder(model_dir(), workers=2).encode(mixed_texts(40))
    assert all(w.process.returncode is not None for w in started)


def test_worker_that_raises_reports_its_traceback(
    tmp_path: Path, started: list[embed_pool._Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_pool, "_CALLER_ENCODES", False)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).symlink_to(model_dir() / name)
    encoder = TextEncoder(tmp_path, workers=2)
    (tmp_path / "model.safetensors").unlink()  # the worker loads the weights again, and finds none
    with pytest.raises(EncoderError, match=r"(?s)encoder worker 1 \(pid \d+\) failed:.*embedding model file missing"):
        encoder.encode(mixed_texts(40))
    assert all(w.process.returncode is not None for w in started)


def test_cache_sends_only_uncached_texts_to_the_workers(
    single: TextEncoder, started: list[embed_pool._Worker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distill.run.state import CachedEncoder

    pooled = TextEncoder(model_dir(), workers=2)
    asked: list[list[str]] = []
    real_encode = pooled.encode

    def recording_encode(texts: list[str], **kwargs: object) -> np.ndarray:
        asked.append(list(texts))
        return real_encode(texts, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pooled, "encode", recording_encode)
    # the reference goes through a cache too: the cache orders the texts it encodes by hash, which changes the
    # batches (and the last float bits), so a bare single.encode() is not the same computation
    cached, reference = CachedEncoder(pooled, tmp_path / "pooled"), CachedEncoder(single, tmp_path / "single")
    first, second = mixed_texts(60)[:60], [f"new title {i}" for i in range(30)]
    assert np.array_equal(cached.encode(first), reference.encode(first))
    both = second[:15] + first + second[15:]
    assert np.array_equal(cached.encode(both), reference.encode(both))
    assert len(asked) == 2 and sorted(asked[1]) == sorted(second)  # the cached titles were not encoded again
    assert started and all(w.process.returncode == 0 for w in started)  # the first call used a worker


@pytest.mark.parametrize("workers", [0, -1, "many", True])
def test_bad_workers_setting_is_a_config_error(workers: object) -> None:
    with pytest.raises(ConfigError, match="workers"):
        TextEncoder(model_dir(), workers=workers)  # type: ignore[arg-type]


def test_the_embed_workers_setting_reaches_the_pipelines_encoder(tmp_path, monkeypatch):
    """`embed_workers` (SHELFGRAPH_EMBED_WORKERS) decides the workers of the encoder the pipeline builds."""
    from distill.run.table import _cached
    from distill.settings import DistillSettings

    monkeypatch.setenv("SHELFGRAPH_EMBED_WORKERS", "1")
    settings = DistillSettings(data_dir=tmp_path)
    assert settings.embed_workers == 1
    assert _cached(None, settings).encoder.workers == 1
    assert _cached(None, DistillSettings(data_dir=tmp_path, embed_workers="auto")).encoder.workers == "auto"
