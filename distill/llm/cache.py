"""Persistent response cache of the LLM gateway: one SQLite file, keyed by a hash of (model, prompt name,
prompt version, rendered input). Stores only answers that validated, so a re-run never pays twice for one.
Safe with several writers (threads or processes): WAL journal, busy timeout, one connection per thread."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill.llm.prompts import RenderedPrompt

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key            TEXT PRIMARY KEY,
    model          TEXT NOT NULL,
    prompt_name    TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    text           TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       REAL NOT NULL,
    created_at     TEXT NOT NULL
)
"""
_COLUMNS = "key, model, prompt_name, prompt_version, text, input_tokens, output_tokens, cost_usd, created_at"
# Long enough to ride out another process's write transaction (they last milliseconds).
_BUSY_TIMEOUT_MS = 30_000


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch to the WAL journal. WAL is a property of the file, so after the first open this only reads the
    mode. The switch itself needs the file to itself, and SQLite refuses it with "database is locked" at once,
    without the busy timeout, while another process opens the same new file; so the wait is ours: retry
    with backoff for as long as the busy timeout would have waited."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class CacheEntry:
    """One validated model answer. `text` is the raw response text exactly as the model returned it."""

    key: str
    model: str
    prompt_name: str
    prompt_version: str
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    created_at: datetime = field(default_factory=_utcnow)


def cache_key(model: str, prompt: RenderedPrompt[Any]) -> str:
    """sha256 of model + prompt name + prompt version + rendered messages (a new prompt version is a miss)."""
    material = json.dumps(
        [model, prompt.name, prompt.version, prompt.cache_key_material], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResponseCache:
    """SQLite-backed map cache key -> CacheEntry. Cheap to construct; the file is created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as conn:
            conn.execute(_SCHEMA)

    key = staticmethod(cache_key)

    # --- connections ---------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE takes the write lock up
            # front, so two writers wait on the busy timeout instead of failing with "database is locked").
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            _enter_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all_connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all_connections:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    # Created in another thread: that thread's exit will release it.
                    pass
            self._all_connections.clear()
        self._local = threading.local()

    # --- reads ---------------------------------------------------------------------------------------
    def get(self, key: str) -> CacheEntry | None:
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else _entry(row)

    def contains(self, key: str) -> bool:
        return self._conn().execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.contains(key)

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    # --- writes --------------------------------------------------------------------------------------
    def put(self, entry: CacheEntry) -> None:
        with self._transaction() as conn:
            conn.execute(_UPSERT, _row(entry))

    def import_batch_results(self, entries: Iterable[CacheEntry]) -> int:
        """Store many validated answers in one transaction (batch API results). Returns how many."""
        rows = [_row(entry) for entry in entries]
        with self._transaction() as conn:
            conn.executemany(_UPSERT, rows)
        return len(rows)


_UPSERT = f"INSERT OR REPLACE INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _row(entry: CacheEntry) -> tuple[Any, ...]:
    return (
        entry.key,
        entry.model,
        entry.prompt_name,
        entry.prompt_version,
        entry.text,
        int(entry.input_tokens),
        int(entry.output_tokens),
        float(entry.cost_usd),
        entry.created_at.isoformat(),
    )


def _entry(row: tuple[Any, ...]) -> CacheEntry:
    return CacheEntry(
        key=row[0],
        model=row[1],
        prompt_name=row[2],
        prompt_version=row[3],
        text=row[4],
        input_tokens=int(row[5]),
        output_tokens=int(row[6]),
        cost_usd=float(row[7]),
        created_at=datetime.fromisoformat(row[8]),
    )
