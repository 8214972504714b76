"""The Neo4j store's connection: the driver, the session helpers every part runs its Cypher through, and the
translation of neo4j errors into StoreError. The store's parts (reader, lease, writer) build on `Neo4jBase`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, LiteralString, TypeVar, cast

import neo4j
from neo4j.exceptions import DriverError, Neo4jError

from graph_schema import cypher
from graph_schema.errors import StoreError
from graph_schema.kinds import RelationKind

log = logging.getLogger("graph_store.neo4j")

_T = TypeVar("_T")
_KIND_OF_TYPE: dict[str, RelationKind] = {rel_type: kind for kind, rel_type in cypher.REL_TYPES.items()}
_QUIET = neo4j.NotificationMinimumSeverity.OFF
"""The store reads optional properties that are often absent (e.g. `description`); the server's notices about
that say nothing the caller can act on."""


def _q(text: str) -> LiteralString:
    # Every query is a constant from graph_schema.cypher; this only satisfies the driver's typing.
    return cast(LiteralString, text)  # type: ignore[redundant-cast]  # mypy reads LiteralString as str


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except (Neo4jError, DriverError) as exc:
        raise StoreError(f"Neo4j store: {action} failed: {exc}") from exc


def _node_key(version: str, product_id: str) -> str:
    return f"{version}{cypher.KEY_SEPARATOR}{product_id}"


def _chunks(rows: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class Neo4jBase:
    """The driver and its settings, and the session helpers."""

    def __init__(
        self,
        driver: neo4j.Driver,
        *,
        database: str | None = None,
        batch_size: int = 20_000,
        keep: int = 5,
        progress: bool = False,
        parallel: int = 2,
        lease_seconds: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if keep < 1:
            raise ValueError("keep must be >= 1")
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self._driver = driver
        self._database = database
        self._batch_size = batch_size
        self._keep = keep
        self._progress = progress
        self._parallel = parallel
        self._lease_ms = int(lease_seconds * 1000)
        self._owns_driver = False
        self._schema_ready = False

    # --- plumbing --------------------------------------------------------------------------------------
    def _session(self, access: str = neo4j.WRITE_ACCESS) -> neo4j.Session:
        return self._driver.session(database=self._database, default_access_mode=access,
                                    notifications_min_severity=_QUIET)

    def _write(self, query: str, **params: Any) -> list[dict[str, Any]]:
        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(_q(query), params)]

        with self._session() as session:
            return session.execute_write(work)

    def _read(self, work: Callable[[neo4j.ManagedTransaction], _T]) -> _T:
        with self._session(neo4j.READ_ACCESS) as session:
            return session.execute_read(work)

    def _read_rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self._read(lambda tx: [record.data() for record in tx.run(_q(query), params)])

    def _write_batch(self, query: str, params: dict[str, Any], version: str) -> dict[str, Any]:
        """One batch, one transaction (retried by the driver on transient errors); its one result row, with
        `written`. `params`: `rows` (one map per row) or one list per column. Tests override this."""
        result = self._write(query, version=version, **params)
        return result[0] if result else {"written": 0}

    def ensure_schema(self) -> None:
        """Creates the uniqueness constraints and indexes the store relies on (idempotent)."""
        if self._schema_ready:
            return
        with _translated("creating the schema"), self._session() as session:
            for statement in cypher.SCHEMA_STATEMENTS:
                session.run(_q(statement)).consume()
            session.run(_q(cypher.AWAIT_INDEXES)).consume()
        self._schema_ready = True
