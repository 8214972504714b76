"""Neo4j graph store: versions are written side by side in one database and a `:CurrentGraph` pointer is
switched in one transaction once a version is complete. One publisher at a time holds a lease (a
`:PublishLock` node with owner and heartbeat); others are refused. The driver is passed in (or built by
`from_settings`); neo4j errors leave this package only as StoreError/VersionNotFound/PublisherBusy.
Parts: session (driver, helpers), reader, lease, writer; `Neo4jStore` is all of them.
"""

from __future__ import annotations

import neo4j

from graph_store.config import StoreSettings
from graph_store.neo4j.reader import Reader
from graph_store.neo4j.writer import Writer


class Neo4jStore(Reader, Writer):
    """GraphStore on Neo4j (Community or Enterprise). One publisher at a time: a publish holds a lease
    (`lease_seconds`, renewed by a heartbeat every third of it) and a second publisher gets PublisherBusy.
    A lease whose holder died is taken over: at once when the holder ran on this machine and its process is
    gone, otherwise once the lease expires. Any number of readers. A publish that dies half-way leaves the
    previous version current; the next publish removes the partial version (at once when its publisher
    failed or died, otherwise once its heartbeat is older than the lease) and writes its own from scratch. `parallel` sessions write relationship batches."""

    @classmethod
    def from_settings(cls, settings: StoreSettings, *, progress: bool = False) -> Neo4jStore:
        """Builds the driver from SHELFGRAPH_NEO4J_* settings; `close()` releases it."""
        driver = neo4j.GraphDatabase.driver(
            settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value())
        )
        store = cls(
            driver,
            database=settings.neo4j_database,
            batch_size=settings.neo4j_batch_size,
            keep=settings.keep_versions,
            progress=progress,
        )
        store._owns_driver = True
        return store

    def close(self) -> None:
        if self._owns_driver:
            self._driver.close()

    def __enter__(self) -> Neo4jStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

