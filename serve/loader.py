"""Where the server's index comes from: a `GraphSource` (a graph store seen read-only) and the
`IndexHolder` that swaps in a new `GraphIndex` atomically when the store's current version changes.

A new index is built off to the side and published by rebinding one attribute, so a request that
already took the old index finishes on it. With an `index_dir`, a version is built once (by whichever
worker gets the lock first), written as files, and every worker maps the same files read-only. When the source fails, the last index keeps serving and the
holder records since when it is stale and why. Nothing here imports litellm.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from graph_schema.store import GraphStore, PublishedGraph
from serve.errors import SourceUnavailable
from serve import mapped
from serve.index import GraphIndex
from serve.settings import ServeSettings

if TYPE_CHECKING:
    from neo4j import Driver

log = logging.getLogger(__name__)


@runtime_checkable
class GraphSource(Protocol):
    def current_version(self) -> str | None: ...

    def load(self) -> PublishedGraph: ...


class StoreSource:
    """Any `GraphStore`, read-only: the server never publishes."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    def current_version(self) -> str | None:
        return self.store.current_version()

    def load(self) -> PublishedGraph:
        return self.store.load()


class EmbeddedSource(StoreSource):
    def __init__(self, root: Path) -> None:
        from graph_store.embedded import EmbeddedStore  # written beside this module; import when used

        super().__init__(EmbeddedStore(Path(root)))


class Neo4jSource(StoreSource):
    def __init__(self, driver: Driver, **store_kwargs: Any) -> None:
        from graph_store.neo4j import Neo4jStore

        super().__init__(Neo4jStore(driver, **store_kwargs))

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> Neo4jSource:
        from neo4j import GraphDatabase

        driver = GraphDatabase.driver(
            settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value())
        )
        kwargs: dict[str, Any] = {}
        if settings.neo4j_database:
            kwargs["database"] = settings.neo4j_database
        return cls(driver, **kwargs)


def source_from_settings(settings: ServeSettings) -> GraphSource:
    if settings.graph_source == "neo4j":
        return Neo4jSource.from_settings(settings)
    return EmbeddedSource(settings.graph_dir)


_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def version_folder(version: str) -> str:
    """A folder name for a version id (ids with other characters are hashed), tagged with the file format."""
    name = version if _SAFE_NAME.fullmatch(version) else "h" + hashlib.sha256(version.encode()).hexdigest()[:32]
    return f"{name}.f{mapped.FORMAT}"


@dataclass(frozen=True)
class ReloadOutcome:
    reloaded: bool
    version: str | None
    previous_version: str | None
    build_seconds: float | None = None


@dataclass(frozen=True)
class HolderStatus:
    version: str | None
    stale_since: datetime | None
    last_error: str | None
    last_check: datetime | None

    @property
    def stale(self) -> bool:
        return self.stale_since is not None


class IndexHolder:
    """Holds the current GraphIndex. Reads are a plain attribute load; reloads are serialized."""

    def __init__(self, source: GraphSource | None, index: GraphIndex | None = None,
                 index_dir: Path | None = None, *, native: bool = True) -> None:
        """`index_dir`: where versions are written as mapped files (None: built in this process's memory);
        `native`: indexes it builds read through the C extension when built (see `serve.native`)."""
        self.source = source
        self.native = native
        self._index = index
        self.index_dir = index_dir
        self._reload_lock = threading.Lock()
        self._stale_since: datetime | None = None
        self._last_error: str | None = None
        self._last_check: datetime | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def index(self) -> GraphIndex | None:
        return self._index

    def status(self) -> HolderStatus:
        index = self._index
        return HolderStatus(index.version if index else None, self._stale_since, self._last_error, self._last_check)

    def _fail(self, message: str) -> None:
        if self._stale_since is None:
            self._stale_since = datetime.now(timezone.utc)
        self._last_error = message
        log.warning("graph source: %s (serving %s)", message, self._index.version if self._index else "nothing")

    def reload_if_changed(self) -> ReloadOutcome:
        """Build and swap in the source's current version if it differs from the one served.
        Raises SourceUnavailable (after recording it) when the source fails; the old index stays."""
        if self.source is None:
            current = self._index.version if self._index else None
            return ReloadOutcome(False, current, current)
        with self._reload_lock:
            previous = self._index.version if self._index else None
            self._last_check = datetime.now(timezone.utc)
            try:
                version = self.source.current_version()
            except Exception as exc:  # any store failure: record it, keep serving
                self._fail(f"{type(exc).__name__}: {exc}")
                raise SourceUnavailable(self._last_error or "source failed") from exc
            if version is None:
                self._fail("no graph version published yet")
                raise SourceUnavailable("no graph version published yet")
            if version == previous:
                self._stale_since, self._last_error = None, None
                return ReloadOutcome(False, version, previous)
            started = time.perf_counter()
            try:
                index = self._build(version)
            except Exception as exc:
                self._fail(f"loading version {version}: {type(exc).__name__}: {exc}")
                raise SourceUnavailable(self._last_error or "load failed") from exc
            seconds = time.perf_counter() - started
            self._index = index  # the swap: one reference rebinding, atomic for readers
            self._stale_since, self._last_error = None, None
            log.info("serving graph %s (was %s), built in %.2fs", index.version, previous, seconds)
            return ReloadOutcome(True, index.version, previous, seconds)

    def _build(self, version: str) -> GraphIndex:
        assert self.source is not None
        if self.index_dir is None:
            return GraphIndex.from_published(self.source.load(), native=self.native)
        folder = self.index_dir / version_folder(version)
        if not mapped.is_complete(folder):
            self.index_dir.mkdir(parents=True, exist_ok=True)
            with open(self.index_dir / f".{folder.name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one worker builds; the others wait, then map its files
                if not mapped.is_complete(folder):
                    graph = self.source.load()
                    if graph.manifest.version_id != version:
                        raise SourceUnavailable(f"asked for {version}, the store loaded {graph.manifest.version_id}")
                    GraphIndex.write(graph, folder)
        index = GraphIndex.open(folder, native=self.native)
        self._prune(keep={folder.name, version_folder(self._index.version)} if self._index else {folder.name})
        return index

    def _prune(self, keep: set[str]) -> None:
        """Folders of versions older than the last two go; a worker still mapping one keeps its pages
        (unlinking a mapped file does not unmap it)."""
        assert self.index_dir is not None
        for old in self.index_dir.iterdir():
            if old.is_dir() and not old.name.startswith(".") and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
                (self.index_dir / f".{old.name}.lock").unlink(missing_ok=True)

    def start_polling(self, interval_s: float) -> None:
        if interval_s <= 0 or self.source is None or self._poller is not None:
            return
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll, args=(interval_s,), name="shelfgraph-index-poller", daemon=True
        )
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.reload_if_changed()
            except SourceUnavailable:
                pass  # recorded by reload_if_changed; /readyz reports it
            except Exception:  # the poller must survive anything
                log.exception("index poller")
