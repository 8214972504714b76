"""Neo4j graph store: versions are written side by side in one database and a `:CurrentGraph` pointer is
switched in one transaction once a version is complete. One publisher at a time holds a lease (a
`:PublishLock` node with owner and heartbeat); others are refused. The driver is passed in (or built by
`from_settings`); neo4j errors leave this module only as StoreError/VersionNotFound/PublisherBusy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, TypeVar, cast

import neo4j
import polars as pl
from neo4j.exceptions import DriverError, Neo4jError

from graph_schema.errors import PublisherBusy, StoreError, VersionNotFound
from graph_store.config import StoreSettings
from graph_schema.store import PublishedGraph
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


_DIGEST_FORMAT = "2:"
"""Prefix of the current digest format; a stored digest without it was made by `_legacy_digest`."""


def _sorted_tables(
    product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    yield sorted(product_rows, key=lambda r: r["id"])
    yield sorted(relation_rows, key=lambda r: (r["source"], r["target"], r["kind"]))


def _digest(product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]) -> str:
    """Content hash of a publish: tells a repeated publish of the same graph from a different one. One JSON
    document per table (a single call into the C encoder, several times faster than a call per row)."""
    digest = hashlib.sha256()
    encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
    for rows in _sorted_tables(product_rows, relation_rows):
        digest.update(encode(rows).encode("utf-8"))
        digest.update(b"\0")
    return _DIGEST_FORMAT + digest.hexdigest()


def _legacy_digest(product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]) -> str:
    """The digest versions published before format 2 carry (one JSON line per row)."""
    digest = hashlib.sha256()
    encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
    for rows in _sorted_tables(product_rows, relation_rows):
        for row in rows:
            digest.update(encode(row).encode("utf-8"))
            digest.update(b"\n")
        digest.update(b"\0")
    return digest.hexdigest()


_PROVENANCE_FIELDS = ("run_id", "model", "prompt_version", "stage")


def _provenance_table(relation_rows: list[dict[str, Any]]) -> tuple[list[list[Any]], list[int]]:
    """(distinct provenance tuples in first-seen order, each row's index into them)."""
    index: dict[tuple[Any, ...], int] = {}
    positions = []
    for row in relation_rows:
        key = tuple(row[f] for f in _PROVENANCE_FIELDS)
        positions.append(index.setdefault(key, len(index)))
    return [list(key) for key in index], positions


def _decode_provenance(row: dict[str, Any]) -> dict[str, Any]:
    """`row` (a COMPLEMENTS_TOP_K record) with run_id, model, prompt_version and stage taken from the version's
    provenance table; rows of versions written before the table already carry them."""
    table_json, position = row.pop("provenance"), row.pop("p")
    if position is None:
        return row
    if table_json is None:
        raise StoreError("a relation in Neo4j points into a provenance table its version does not have")
    return {**row, **dict(zip(_PROVENANCE_FIELDS, json.loads(table_json)[position], strict=True))}


# --- who is publishing ---------------------------------------------------------------------------------


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a live process from a reused pid."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Publisher:
    """Identity of one publish, recorded on the lease: enough to tell, on the same machine, that it is dead."""

    owner: str
    host: str
    boot_id: str | None
    pid_ns: str | None
    pid: int
    pid_start: str | None

    @classmethod
    def this_process(cls) -> Publisher:
        try:
            pid_ns: str | None = os.readlink("/proc/self/ns/pid")
        except OSError:
            pid_ns = None
        pid = os.getpid()
        return cls(owner=f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}", host=socket.gethostname(),
                   boot_id=_read_text("/proc/sys/kernel/random/boot_id"), pid_ns=pid_ns, pid=pid,
                   pid_start=_process_start(pid))

    def params(self) -> dict[str, Any]:
        return {"owner": self.owner, "host": self.host, "boot_id": self.boot_id, "pid_ns": self.pid_ns,
                "pid": self.pid, "pid_start": self.pid_start}


def _known_dead(lock: dict[str, Any], me: Publisher) -> bool:
    """True only when the lease holder provably ended: same machine, same boot and pid namespace as us, and its
    pid is gone or now names another process. Elsewhere only the lease's expiry frees it."""
    if lock.get("pid") is None or lock.get("boot_id") is None or lock.get("pid_ns") is None:
        return False
    if (lock.get("host"), lock.get("boot_id"), lock.get("pid_ns")) != (me.host, me.boot_id, me.pid_ns):
        return False
    start = _process_start(int(lock["pid"]))
    return start is None or start != lock.get("pid_start")


class Neo4jStore:
    """GraphStore on Neo4j (Community or Enterprise). One publisher at a time: a publish holds a lease
    (`lease_seconds`, renewed by a heartbeat every third of it) and a second publisher gets PublisherBusy.
    A lease whose holder died is taken over: at once when the holder ran on this machine and its process is
    gone, otherwise once the lease expires. Any number of readers. A publish that dies half-way leaves the
    previous version current; the next publish removes the partial version (at once when its publisher
    failed or died, otherwise once its heartbeat is older than the lease) and writes its own from scratch. `parallel` sessions write relationship batches."""

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

    def _write_batch(self, query: str, rows: list[dict[str, Any]], version: str) -> dict[str, Any]:
        """One batch, one transaction (retried by the driver on transient errors); its one result row, with
        `written`. Tests override this."""
        result = self._write(query, rows=rows, version=version)
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
                nodes, edges = self._read(lambda tx: self._load_frames(tx, version, row["provenance"]))
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

    def _load_frames(
        self, tx: neo4j.ManagedTransaction, version: str, provenance_json: str | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
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
        table = [list(entry) for entry in json.loads(provenance_json)] if provenance_json else []
        kept_edges = []
        for row in edge_rows:
            kind = _KIND_OF_TYPE.get(row[2])
            if kind is None or row[0] is None or row[1] is None:
                continue
            position, legacy = row[6], row[7:]
            del row[6:]
            if position is None:
                row.extend(legacy)  # written before the provenance table
            elif 0 <= position < len(table):
                row.extend(table[position])
            else:
                raise StoreError(f"relation {row[0]!r} -> {row[1]!r} in version {version!r} has no provenance entry")
            row[2] = kind
            kept_edges.append(row)
        nodes = pl.DataFrame(node_rows, schema=NODE_SCHEMA, orient="row")
        edges = pl.DataFrame(kept_edges, schema=EDGE_SCHEMA, orient="row")
        return nodes.sort("id"), edges.sort("source", "kind", "target")

    # --- the publish lease -----------------------------------------------------------------------------
    @contextmanager
    def _lease(self, me: Publisher, version: str) -> Iterator[_Lease]:
        """Holds the publish lease for the block (PublisherBusy if another live publisher has it), renewing
        it from a heartbeat thread; released at the end, whatever happened."""
        lease = _Lease(me, self._claim(me, version))
        beat = threading.Thread(target=self._heartbeat, args=(lease,), name="neo4j-publish-heartbeat", daemon=True)
        beat.start()
        try:
            yield lease
        finally:
            lease.stop.set()
            beat.join()
            try:
                self._write(cypher.RELEASE_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME, owner=me.owner)
            except (Neo4jError, DriverError) as exc:  # it expires by itself
                log.warning("Neo4j store: releasing the publish lease failed (it expires in %.0f s): %s",
                            self._lease_ms / 1000, exc)

    def _claim(self, me: Publisher, version: str) -> str | None:
        """Takes the lease; returns the owner it was taken over from when that one was dead (else None)."""
        rows = self._read_rows(cypher.READ_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME)
        stale: str | None = None
        if rows and rows[0]["owner"] is not None and rows[0]["owner"] != me.owner:
            lock = rows[0]
            expired = lock["expires_in_ms"] is None or lock["expires_in_ms"] < 0
            if expired or _known_dead(lock, me):
                stale = str(lock["owner"])
                log.warning("Neo4j store: taking over the publish lease of %s (%s)", stale,
                            "expired" if expired else "its process is gone")
            else:
                raise PublisherBusy(_busy_message(lock, version))
        claimed = self._write(
            cypher.CLAIM_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME, stale=stale or "", lease_ms=self._lease_ms,
            version=version, **me.params(),
        )
        if not claimed or not claimed[0]["acquired"]:
            again = self._read_rows(cypher.READ_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME)
            raise PublisherBusy(_busy_message(again[0] if again else {"owner": claimed[0]["owner"]}, version))
        return stale

    def _heartbeat(self, lease: _Lease) -> None:
        interval = self._lease_ms / 3000
        while not lease.stop.wait(interval):
            try:
                held = self._write(cypher.RENEW_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME, owner=lease.me.owner,
                                   lease_ms=self._lease_ms)
                if not held or not held[0]["held"]:
                    lease.lost.set()
                # Touched even after the lease is lost: this process still writes that version.
                if lease.version is not None:
                    self._write(cypher.TOUCH_VERSION, version=lease.version, writing=cypher.STATE_WRITING,
                                owner=lease.me.owner)
            except (Neo4jError, DriverError) as exc:  # the next beat tries again; the lease outlives a few misses
                log.warning("Neo4j store: publish heartbeat failed: %s", exc)

    def _reclaim(self, lease: _Lease) -> list[str]:
        return [lease.me.owner] + ([lease.taken_from] if lease.taken_from else [])

    # --- publish ---------------------------------------------------------------------------------------
    def publish(
        self, products: Sequence[Product], relations: Sequence[Relation], manifest: GraphVersion
    ) -> GraphVersion:
        """Raises PublisherBusy (nothing written) while another live publisher holds the lease."""
        version = manifest.version_id
        _validate(products, relations)
        product_rows = [product_row(p) for p in products]
        relation_rows = [relation_row(r) for r in relations]
        self.ensure_schema()
        me = Publisher.this_process()
        with _translated(f"publishing version {version!r}"), self._lease(me, version) as lease:
            existing = self._read_rows(cypher.GET_VERSION, version=version)
            if existing and existing[0]["state"] == cypher.STATE_COMPLETE:
                stored = str(existing[0]["digest"] or "")
                same = (_digest if stored.startswith(_DIGEST_FORMAT) else _legacy_digest)(product_rows, relation_rows)
                return self._republish(existing[0], same, lease)
            if existing and not self._purge(version, lease):
                raise PublisherBusy(
                    f"version {version!r} is being written by another live publisher ({existing[0]['owner']}, "
                    f"heartbeat {existing[0]['heartbeat_age_ms'] / 1000:.1f} s ago); it is left alone"
                )
            with ThreadPoolExecutor(1, thread_name_prefix="neo4j-digest") as background:
                # The digest only matters once the version is complete: it is hashed while the batches go out.
                digest = background.submit(_digest, product_rows, relation_rows)
                table, positions = _provenance_table(relation_rows)
                self._write(
                    cypher.BEGIN_VERSION, version=version, state=cypher.STATE_WRITING, owner=me.owner,
                    manifest=manifest.model_dump_json(), product_rows=len(product_rows),
                    relation_rows=len(relation_rows), provenance=json.dumps(table, ensure_ascii=False),
                )
                lease.version = version
                try:
                    self._write_rows(version, product_rows, relation_rows, positions, lease)
                    self._verify_written(version, len(product_rows), relation_rows)
                    switched = self._write(
                        cypher.COMPLETE_AND_SWITCH, version=version, complete=cypher.STATE_COMPLETE,
                        name=cypher.CURRENT_NAME, lock=cypher.PUBLISH_LOCK_NAME, owner=me.owner,
                        digest=digest.result(),
                    )
                except BaseException:
                    self._abandon(version, lease)
                    raise
                finally:
                    lease.version = None
            if not switched:
                raise StoreError(_lost_message(version))
            if switched[0]["version"] != version:
                raise StoreError(f"version {version!r} vanished before it could be made current")
            self._cleanup(version, lease)
        return manifest

    def _abandon(self, version: str, lease: _Lease) -> None:
        lease.version = None
        try:
            self._write(cypher.ABANDON_VERSION, version=version, writing=cypher.STATE_WRITING, owner=lease.me.owner)
        except (Neo4jError, DriverError) as exc:  # its heartbeat stops, so it is removable once the lease has passed
            log.warning("Neo4j store: marking the partial version %r abandoned failed: %s", version, exc)

    def _republish(self, existing: dict[str, Any], digest: str, lease: _Lease) -> GraphVersion:
        version = str(existing["version_id"])
        if existing["digest"] != digest:
            raise StoreError(
                f"version {version!r} is already published with different content; versions are immutable"
            )
        switched = self._write(
            cypher.SWITCH_TO_COMPLETE, version=version, complete=cypher.STATE_COMPLETE, name=cypher.CURRENT_NAME,
            lock=cypher.PUBLISH_LOCK_NAME, owner=lease.me.owner,
        )
        if not switched:
            raise StoreError(_lost_message(version))
        return GraphVersion.model_validate_json(existing["manifest"])

    def _write_rows(
        self, version: str, product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]],
        positions: list[int], lease: _Lease,
    ) -> None:
        """Nodes first (their element ids come back), then relationships by kind; `parallel` sessions."""
        with self._progress_bar(version, len(product_rows) + len(relation_rows)) as advance:
            node_jobs = [
                (cypher.CREATE_PRODUCTS, [{"key": _node_key(version, row["id"]), **row} for row in chunk])
                for chunk in _chunks(product_rows, self._batch_size)
            ]
            element_ids: dict[str, str] = {}
            for result in self._run_batches(node_jobs, version, lease, advance):
                element_ids.update(result["ids"])
            rel_jobs: list[tuple[str, list[dict[str, Any]]]] = []
            for kind in RELATION_KINDS:
                of_kind = [
                    {"s": element_ids[row["source"]], "t": element_ids[row["target"]], "score": row["score"],
                     "reasons": row["reasons"], "evidence": row["evidence"], "p": position}
                    for row, position in zip(relation_rows, positions, strict=True) if row["kind"] == kind
                ]
                rel_jobs += [(cypher.CREATE_RELATIONS[kind], chunk) for chunk in _chunks(of_kind, self._batch_size)]
            self._run_batches(rel_jobs, version, lease, advance)

    def _run_batches(
        self, jobs: list[tuple[str, list[dict[str, Any]]]], version: str, lease: _Lease,
        advance: Callable[[int], None],
    ) -> list[dict[str, Any]]:
        """Runs the batches on up to `parallel` sessions; the first failure cancels what has not started."""

        def run(job: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
            if lease.lost.is_set():
                raise StoreError(_lost_message(version))
            query, rows = job
            result = self._write_batch(query, rows, version)
            if int(result["written"]) != len(rows):
                raise StoreError(f"a batch of {len(rows)} rows wrote {result['written']} in version {version!r}")
            advance(len(rows))
            return result

        if self._parallel == 1 or len(jobs) < 2:
            return [run(job) for job in jobs]
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="neo4j-write") as pool:
            futures: list[Future[dict[str, Any]]] = [pool.submit(run, job) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                wait(futures)
                raise cast(BaseException, failed[0].exception())
        return [future.result() for future in futures]

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
    def _purge(self, version: str, lease: _Lease) -> bool:
        """Removes one non-current version in batches. False if it is current, or another live publisher is
        writing it (never removed)."""
        marked = self._write(
            cypher.MARK_DELETING, version=version, name=cypher.CURRENT_NAME, deleting=cypher.STATE_DELETING,
            writing=cypher.STATE_WRITING, owner=lease.me.owner, reclaim=self._reclaim(lease), lease_ms=self._lease_ms,
        )
        if not marked:
            return False
        for query in (cypher.DELETE_VERSION_RELATIONS_BATCH, cypher.DELETE_VERSION_PRODUCTS_BATCH):
            while True:
                deleted = self._write(query, version=version, limit=self._batch_size)
                if not deleted or int(deleted[0]["deleted"]) == 0:
                    break
        self._write(cypher.DELETE_VERSION_NODE, version=version)
        return True

    def _cleanup(self, published: str, lease: _Lease) -> None:
        """Keeps the newest `keep` complete versions (and always the current one); removes the rest and
        partial versions left by crashed publishes, never one a live publisher is writing. Runs under the
        lease. A failure here is logged: the publish itself stands."""
        try:
            complete = self._read_rows(cypher.LIST_COMPLETE_VERSIONS, complete=cypher.STATE_COMPLETE)
            keep = [str(row["version_id"]) for row in complete][-self._keep :]
            doomed = self._read_rows(
                cypher.LIST_DOOMED_VERSIONS,
                name=cypher.CURRENT_NAME,
                publishing=published,
                complete=cypher.STATE_COMPLETE,
                keep=keep,
                writing=cypher.STATE_WRITING,
                reclaim=self._reclaim(lease),
                lease_ms=self._lease_ms,
            )
            for row in doomed:
                self._purge(str(row["version_id"]), lease)
        except (Neo4jError, DriverError) as exc:
            log.warning("Neo4j store: removing old versions after publishing %r failed: %s", published, exc)


@dataclass
class _Lease:
    """The publish lease this process holds: `lost` is set by the heartbeat once another publisher has it."""

    me: Publisher
    taken_from: str | None
    """The dead publisher this lease was taken over from: its partial version may be removed at once."""
    version: str | None = None
    """The version being written, whose heartbeat the lease's thread keeps fresh."""

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.lost = threading.Event()


def _busy_message(lock: dict[str, Any], version: str) -> str:
    details = []
    if lock.get("version"):
        details.append(f"writing version {lock['version']!r}")
    if lock.get("host"):
        details.append(f"host {lock['host']}, pid {lock.get('pid')}")
    if lock.get("heartbeat_age_ms") is not None:
        details.append(f"last heartbeat {lock['heartbeat_age_ms'] / 1000:.1f} s ago")
    if lock.get("expires_in_ms") is not None:
        details.append(f"lease expires in {max(0, lock['expires_in_ms']) / 1000:.0f} s unless renewed")
    return (f"cannot publish version {version!r}: another publisher is running ({lock.get('owner')}; "
            f"{'; '.join(details)}). Nothing was written; try again when it has finished "
            f"(a dead publisher's lease is taken over once it expires)")


def _lost_message(version: str) -> str:
    return (f"version {version!r} was not made current: this publisher lost the publish lease to another one "
            f"(its heartbeat could not renew it in time); the previous version stays current")


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
    out = []
    for record in records:
        row = _decode_provenance(record.data())
        out.append(relation_from_row({**row, "kind": _KIND_OF_TYPE[row.pop("type")]}))
    return out
