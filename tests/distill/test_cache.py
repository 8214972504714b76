"""ResponseCache: keys, round trips, persistence, and concurrent writers from threads and processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel

from distill.llm import cache as cache_module
from distill.llm.cache import CacheEntry, ResponseCache, cache_key
from distill.llm.prompts import ChatMessage, RenderedPrompt

REPO_ROOT = Path(__file__).resolve().parents[2]


class Answer(BaseModel):
    value: str


def prompt(text: str, version: str = "1", name: str = "p") -> RenderedPrompt[Answer]:
    return RenderedPrompt(name=name, version=version, messages=(ChatMessage("user", text),), response_model=Answer)


def entry(key: str, text: str = '{"value": "x"}') -> CacheEntry:
    return CacheEntry(key=key, model="m", prompt_name="p", prompt_version="1", text=text, input_tokens=3, output_tokens=4, cost_usd=0.5)


def test_key_depends_on_model_prompt_version_and_input() -> None:
    base = cache_key("m", prompt("a"))
    assert base == cache_key("m", prompt("a"))
    assert len({base, cache_key("m2", prompt("a")), cache_key("m", prompt("b")), cache_key("m", prompt("a", version="2")),
                cache_key("m", prompt("a", name="q"))}) == 5


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    cache = ResponseCache(path)
    assert cache.get("k") is None and not cache.contains("k") and cache.count() == 0
    cache.put(entry("k"))
    cache.put(entry("k", text='{"value": "y"}'))  # same key overwrites, never duplicates
    cache.close()
    reopened = ResponseCache(path)
    got = reopened.get("k")
    assert got is not None and got.text == '{"value": "y"}' and got.input_tokens == 3 and got.cost_usd == 0.5
    assert got.created_at.tzinfo is not None
    assert "k" in reopened and reopened.count() == 1


def test_import_batch_results_is_one_transaction(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    assert cache.import_batch_results(entry(f"k{i}") for i in range(50)) == 50
    assert cache.count() == 50


def test_threads_write_concurrently(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")

    def write(worker: int) -> None:
        for i in range(50):
            cache.put(entry(f"t{worker}-{i}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.count() == 400


_WRITER = """
import sys
from pathlib import Path
from distill.llm.cache import CacheEntry, ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
for i in range(300):
    cache.put(CacheEntry(key=f"{sys.argv[2]}-{i}", model="m", prompt_name="p", prompt_version="1", text=str(i)))
print("done")
"""


@pytest.mark.parametrize("names", [("a", "b"), ("a", "b", "c", "d")], ids=["two", "four"])
def test_processes_open_one_new_file_and_write_concurrently(tmp_path: Path, names: tuple[str, ...]) -> None:
    path = tmp_path / "c.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    ]
    outputs = [writer.communicate(timeout=120) for writer in writers]
    assert [writer.returncode for writer in writers] == [0] * len(names), [err for _, err in outputs]
    cache = ResponseCache(path)
    assert cache.count() == 300 * len(names)
    assert cache.get("a-299") is not None and cache.get(f"{names[-1]}-0") is not None


class _LockedThenFree:
    """A connection whose WAL pragma is refused `refusals` times with SQLite's immediate SQLITE_BUSY."""

    def __init__(self, refusals: int, message: str = "database is locked") -> None:
        self.refusals = refusals
        self.message = message
        self.calls = 0
        self.mode = "delete"

    def execute(self, sql: str) -> _LockedThenFree:
        if sql == "PRAGMA journal_mode":
            return self
        self.calls += 1
        if self.calls <= self.refusals:
            raise sqlite3.OperationalError(self.message)
        self.mode = "wal"
        return self

    def fetchone(self) -> tuple[str]:
        return (self.mode,)


def test_wal_switch_waits_out_a_lock_that_sqlite_does_not_wait_for() -> None:
    # Two processes opening one new file: SQLite can refuse the journal switch at once instead of waiting on
    # the busy timeout (the CI failure of 2026-12-01); the cache must wait for the other process itself.
    conn = _LockedThenFree(refusals=3)
    cache_module._enter_wal(conn)  # type: ignore[arg-type]
    assert (conn.calls, conn.mode) == (4, "wal")
    cache_module._enter_wal(conn)  # type: ignore[arg-type]
    assert conn.calls == 4, "a file already in WAL is not switched again"


def test_wal_switch_does_not_retry_other_errors() -> None:
    conn = _LockedThenFree(refusals=1, message="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        cache_module._enter_wal(conn)  # type: ignore[arg-type]
    assert conn.calls == 1


def test_sixteen_threads_open_one_new_file_at_once(tmp_path: Path) -> None:
    # Before the WAL switch waited for itself, about one round in sixteen failed here with "database is locked".
    for round_ in range(50):
        path = tmp_path / f"c{round_}.sqlite"
        errors: list[BaseException] = []

        def open_and_count(path: Path = path, errors: list[BaseException] = errors) -> None:
            try:
                ResponseCache(path).count()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_count) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"round {round_}: {errors[0]!r}"
