"""Neo4j graph store: versions are written side by side in one database and a `:CurrentGraph` pointer is
switched in one transaction once a version is complete. The driver is passed in (or built by
`from_settings`); neo4j errors leave this module only as StoreError/VersionNotFound.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, TypeVar, cast

import neo4j
import polars as pl
from neo4j.exceptions import DriverError, Neo4jError

from distill.errors import StoreError, VersionNotFound
from distill.settings import DistillSettings
from distill.store.base import PublishedGraph
from graph_schema import cypher
from graph_schema.kinds import RELATION_KINDS, RelationKind
from graph_schema.models import GraphVersion, Product, Relation
from graph_schema.tables import EDGE_SCHEMA, NODE_SCHEMA, product_row, relation_from_row, relation_row

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_KIND_OF_TYPE: dict[str, RelationKind] = {rel_type: kind for kind, rel_type in cypher.REL_TYPES.items()}
_LOAD_ATTEMPTS = 3
"""A load retries when cleanup removed the version it was reading (only possible with a small `keep`)."""
_READ_PAGE = 10_000
"""Products per read page (their relations come with them)."""


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


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _validate(products: Sequence[Product], relations: Sequence[Relation]) -> None:
    """Refuse input a MERGE would silently fold together or drop (duplicates, dangling endpoints)."""
    counts = Counter(p.id for p in products)
    known = set(counts)
    if len(known) != len(products):
        dupes = sorted(pid for pid, n in counts.items() if n > 1)[:5]
        raise StoreError(f"duplicate product ids in publish, e.g. {dupes}")
    seen: set[tuple[str, str, str]] = set()
    for rel in relations:
        if rel.key in seen:
            raise StoreError(f"duplicate relation {rel.key} in publish")
        seen.add(rel.key)
        for end in (rel.source, rel.target):
            if end not in known:
                raise StoreError(f"relation {rel.key} points at product {end!r}, which is not in the publish")


def _digest(product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]) -> str:
    """Content hash of a publish: tells a resumed or repeated publish from a different graph."""
    digest = hashlib.sha256()
    for rows, key in ((product_rows, ("id",)), (relation_rows, ("source", "target", "kind"))):
        for row in sorted(rows, key=lambda r: tuple(r[k] for k in key)):
            digest.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8"))
            digest.update(b"\n")
        digest.update(b"\0")
    return digest.hexdigest()


class Neo4jStore:
    """GraphStore on Neo4j (Community or Enterprise). Assumes one publisher at a time (the nightly job);
    any number of readers. A publish that dies half-way leaves the previous version current; the next
    publish of the same content resumes it, and any other publish removes it."""

    def __init__(
        self,
        driver: neo4j.Driver,
        *,
        database: str | None = None,
        batch_size: int = 5000,
        keep: int = 5,
        progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self._driver = driver
        self._database = database
        self._batch_size = batch_size
        self._keep = keep
        self._progress = progress
        self._owns_driver = False
        self._schema_ready = False

    @classmethod
    def from_settings(cls, settings: DistillSettings, *, progress: bool = False) -> Neo4jStore:
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

    # --- plumbing --------------------------------------------------------------------------------------
    def _session(self, access: str = neo4j.WRITE_ACCESS) -> neo4j.Session:
        return self._driver.session(database=self._database, default_access_mode=access)

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

    def _write_batch(self, query: str, rows: list[dict[str, Any]], version: str) -> int:
        """One batch, one transaction (retried by the driver on transient errors). Tests override this."""
        result = self._write(query, rows=rows, version=version)
        return int(result[0]["written"]) if result else 0

    def ensure_schema(self) -> None:
        """Creates the uniqueness constraints and indexes the store relies on (idempotent)."""
        if self._schema_ready:
            return
        with _translated("creating the schema"), self._session() as session:
            for statement in cypher.SCHEMA_STATEMENTS:
                session.run(_q(statement)).consume()
            session.run(_q(cypher.AWAIT_INDEXES)).consume()
        self._schema_ready = True

    # --- reads -----------------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        with _translated("reading the current version"):
            rows = self._read_rows(cypher.GET_CURRENT, name=cypher.CURRENT_NAME)
        return str(rows[0]["version"]) if rows and rows[0]["version"] is not None else None

    def _complete_version(self, version_id: str | None) -> dict[str, Any]:
        wanted = version_id if version_id is not None else self.current_version()
        if wanted is None:
            raise VersionNotFound("no graph version has been published to Neo4j yet")
        with _translated(f"reading version {wanted!r}"):
            rows = self._read_rows(cypher.GET_VERSION, version=wanted)
        if not rows or rows[0]["state"] != cypher.STATE_COMPLETE:
            state = rows[0]["state"] if rows else "absent"
            raise VersionNotFound(f"graph version {wanted!r} is not available in Neo4j (state: {state})")
        return rows[0]

    def manifest(self, version_id: str | None = None) -> GraphVersion:
        row = self._complete_version(version_id)
        return GraphVersion.model_validate_json(row["manifest"])

    def list_versions(self) -> list[GraphVersion]:
        with _translated("listing versions"):
            rows = self._read_rows(cypher.LIST_COMPLETE_VERSIONS, complete=cypher.STATE_COMPLETE)
        return [GraphVersion.model_validate_json(row["manifest"]) for row in rows]

    def load(self, version_id: str | None = None) -> PublishedGraph:
        for _ in range(_LOAD_ATTEMPTS):
            row = self._complete_version(version_id)
            version = str(row["version_id"])
            with _translated(f"loading version {version!r}"):
                nodes, edges = self._read(lambda tx: self._load_frames(tx, version))
                # Cleanup marks a version `deleting` before removing anything, so a version still
                # complete after the read was whole while it was read (read-committed isolation).
                state = self._read_rows(cypher.VERSION_STATE, version=version)
            if state and state[0]["state"] == cypher.STATE_COMPLETE:
                if nodes.height != row["product_rows"] or edges.height != row["relation_rows"]:
                    raise StoreError(
                        f"version {version!r} in Neo4j holds {nodes.height} products and {edges.height} "
                        f"relations, its manifest row says {row['product_rows']} and {row['relation_rows']}"
                    )
                manifest = GraphVersion.model_validate_json(row["manifest"])
                return PublishedGraph(manifest=manifest, nodes=nodes, edges=edges)
            if version_id is not None:
                raise VersionNotFound(f"graph version {version!r} was removed while it was being loaded")
        raise StoreError(f"the current version changed and was removed {_LOAD_ATTEMPTS} times during load")

    def _load_frames(self, tx: neo4j.ManagedTransaction, version: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        ids_record = tx.run(_q(cypher.LOAD_PRODUCT_IDS), version=version).single(strict=True)
        keys = [_node_key(version, pid) for pid in ids_record["ids"]]
        node_rows: list[list[Any]] = []
        edge_rows: list[list[Any]] = []
        for start in range(0, len(keys), _READ_PAGE):
            page = keys[start : start + _READ_PAGE]
            node_rows += tx.run(_q(cypher.LOAD_PRODUCTS_PAGE), keys=page).single(strict=True)["rows"]
            edge_rows += tx.run(_q(cypher.LOAD_RELATIONS_PAGE), keys=page).single(strict=True)["rows"]
        # Entities deleted while being read come back as nulls (read-committed); they are dropped here and
        # the caller's state check then sees the version as `deleting` and retries.
        node_rows = [row for row in node_rows if row[0] is not None]
        kept_edges = []
        for row in edge_rows:
            kind = _KIND_OF_TYPE.get(row[2])
            if kind is not None and row[0] is not None and row[1] is not None:
                row[2] = kind
                kept_edges.append(row)
        nodes = pl.DataFrame(node_rows, schema=NODE_SCHEMA, orient="row")
        edges = pl.DataFrame(kept_edges, schema=EDGE_SCHEMA, orient="row")
        return nodes.sort("id"), edges.sort("source", "kind", "target")

    # --- publish ---------------------------------------------------------------------------------------
    def publish(
        self, products: Sequence[Product], relations: Sequence[Relation], manifest: GraphVersion
    ) -> GraphVersion:
        version = manifest.version_id
        _validate(products, relations)
        product_rows = [product_row(p) for p in products]
        relation_rows = [relation_row(r) for r in relations]
        digest = _digest(product_rows, relation_rows)
        self.ensure_schema()
        with _translated(f"publishing version {version!r}"):
            existing = self._read_rows(cypher.GET_VERSION, version=version)
            if existing and existing[0]["state"] == cypher.STATE_COMPLETE:
                return self._republish(existing[0], digest)
            if existing and existing[0]["digest"] != digest:
                # Left by a crashed publish of other content: start again from nothing.
                self._purge(version)
            self._write(
                cypher.BEGIN_VERSION,
                version=version,
                state=cypher.STATE_WRITING,
                digest=digest,
                manifest=manifest.model_dump_json(),
                product_rows=len(product_rows),
                relation_rows=len(relation_rows),
            )
            self._write_rows(version, product_rows, relation_rows)
            self._verify_written(version, len(product_rows), relation_rows)
            switched = self._write(
                cypher.COMPLETE_AND_SWITCH,
                version=version,
                complete=cypher.STATE_COMPLETE,
                name=cypher.CURRENT_NAME,
            )
            if not switched or switched[0]["version"] != version:
                raise StoreError(f"version {version!r} vanished before it could be made current")
        self._cleanup(version)
        return manifest

    def _republish(self, existing: dict[str, Any], digest: str) -> GraphVersion:
        version = str(existing["version_id"])
        if existing["digest"] != digest:
            raise StoreError(
                f"version {version!r} is already published with different content; versions are immutable"
            )
        self._write(
            cypher.SWITCH_TO_COMPLETE, version=version, complete=cypher.STATE_COMPLETE, name=cypher.CURRENT_NAME
        )
        return GraphVersion.model_validate_json(existing["manifest"])

    def _write_rows(
        self, version: str, product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]
    ) -> None:
        node_batches = [
            [{"key": _node_key(version, row["id"]), **row} for row in chunk]
            for chunk in _chunks(product_rows, self._batch_size)
        ]
        rel_batches: list[tuple[str, list[dict[str, Any]]]] = []
        for kind in RELATION_KINDS:
            of_kind = [row for row in relation_rows if row["kind"] == kind]
            for chunk in _chunks(of_kind, self._batch_size):
                rows = [
                    {
                        "source_key": _node_key(version, row["source"]),
                        "target_key": _node_key(version, row["target"]),
                        **{k: v for k, v in row.items() if k not in ("source", "target", "kind")},
                    }
                    for row in chunk
                ]
                rel_batches.append((cypher.MERGE_RELATIONS[kind], rows))
        jobs = [(cypher.MERGE_PRODUCTS, rows) for rows in node_batches] + rel_batches
        with self._progress_bar(version, len(product_rows) + len(relation_rows)) as advance:
            for query, rows in jobs:
                written = self._write_batch(query, rows, version)
                if written != len(rows):
                    raise StoreError(f"a batch of {len(rows)} rows wrote {written} in version {version!r}")
                advance(len(rows))

    def _verify_written(self, version: str, n_products: int, relation_rows: list[dict[str, Any]]) -> None:
        products = self._read_rows(cypher.COUNT_VERSION_PRODUCTS, version=version)
        found_products = int(products[0]["n"]) if products else 0
        relation_counts = self._read_rows(cypher.COUNT_VERSION_RELATIONS, version=version)
        found = {_KIND_OF_TYPE[r["type"]]: int(r["n"]) for r in relation_counts}
        wanted = {kind: sum(1 for r in relation_rows if r["kind"] == kind) for kind in RELATION_KINDS}
        if found_products != n_products or any(found.get(k, 0) != n for k, n in wanted.items()):
            raise StoreError(
                f"version {version!r} holds {found_products} products and {found} relations after writing, "
                f"expected {n_products} and {wanted}; it stays unpublished"
            )

    @contextmanager
    def _progress_bar(self, version: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self._progress:
            yield lambda _n: None
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"writing {version} to Neo4j", total=total)
            yield lambda n: bar.advance(task, n)

    # --- cleanup ---------------------------------------------------------------------------------------
    def _purge(self, version: str) -> bool:
        """Removes one non-current version in batches. False if it is current (never removed)."""
        marked = self._write(
            cypher.MARK_DELETING, version=version, name=cypher.CURRENT_NAME, deleting=cypher.STATE_DELETING
        )
        if not marked:
            return False
        while True:
            deleted = self._write(cypher.DELETE_VERSION_PRODUCTS_BATCH, version=version, limit=self._batch_size)
            if not deleted or int(deleted[0]["deleted"]) == 0:
                break
        self._write(cypher.DELETE_VERSION_NODE, version=version)
        return True

    def _cleanup(self, published: str) -> None:
        """Keeps the newest `keep` complete versions (and always the current one); removes the rest and
        partial versions left by crashed publishes. A failure here is logged: the publish itself stands."""
        try:
            complete = self._read_rows(cypher.LIST_COMPLETE_VERSIONS, complete=cypher.STATE_COMPLETE)
            keep = [str(row["version_id"]) for row in complete][-self._keep :]
            doomed = self._read_rows(
                cypher.LIST_DOOMED_VERSIONS,
                name=cypher.CURRENT_NAME,
                publishing=published,
                complete=cypher.STATE_COMPLETE,
                keep=keep,
            )
            for row in doomed:
                self._purge(str(row["version_id"]))
        except (Neo4jError, DriverError) as exc:
            log.warning("Neo4j store: removing old versions after publishing %r failed: %s", published, exc)


def complements_query(
    driver: neo4j.Driver, product_id: str, k: int = 10, *, database: str | None = None
) -> list[Relation]:
    """Live lookup of the top-k complements of one product in the current version, best first.
    The serving path answers from memory; this is the per-request Cypher it is compared against."""
    with _translated(f"looking up complements of {product_id!r}"):
        records, _, _ = driver.execute_query(
            _q(cypher.COMPLEMENTS_TOP_K),
            name=cypher.CURRENT_NAME,
            separator=cypher.KEY_SEPARATOR,
            product_id=product_id,
            k=k,
            database_=database,
            routing_=neo4j.RoutingControl.READ,
        )
    return [relation_from_row({**record.data(), "kind": _KIND_OF_TYPE[record["type"]]}) for record in records]
