"""Publishing a version to Neo4j: validate, write nodes then relationships in batches on parallel sessions
under the publish lease, check the counts, switch `:CurrentGraph` in one transaction, remove old versions.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, cast

from neo4j.exceptions import DriverError, Neo4jError

from graph_schema import cypher
from graph_schema.errors import PublisherBusy, StoreError
from graph_schema.kinds import RELATION_KINDS
from graph_schema.models import GraphVersion, Product, Relation
from graph_schema.tables import EDGE_SCHEMA, EdgeRows, product_row, relation_row
from graph_store.neo4j.lease import Leases, Publisher, _Lease, _lost_message
from graph_store.neo4j.reader import _PROVENANCE_FIELDS
from graph_store.neo4j.session import _KIND_OF_TYPE, _chunks, _node_key, _translated, log


_EDGE_COLUMNS: tuple[str, ...] = tuple(EDGE_SCHEMA)
"""A relation tuple's fields: `relation_row`'s keys in EDGE_SCHEMA order (source, target, kind, score, reasons,
evidence, run_id, model, prompt_version, stage)."""
RelationTuple = tuple[Any, ...]
_PROVENANCE_SLICE = slice(_EDGE_COLUMNS.index(_PROVENANCE_FIELDS[0]), _EDGE_COLUMNS.index(_PROVENANCE_FIELDS[-1]) + 1)


def _relation_tuples(relations: Sequence[Relation]) -> list[RelationTuple]:
    """`relation_row(r)`'s values as tuples: a tuple is cheaper to build, sort and encode than a dict, and a
    RelationTable's frame gives them without building one `Relation` per row."""
    if isinstance(relations, EdgeRows):
        return relations.frame.rows()
    return [tuple(relation_row(r).values()) for r in relations]  # one definition of the fields: relation_row


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector while a publish turns objects into parameter columns: those build
    hundreds of thousands of small containers and no cycles, and each allocation burst would make the collector
    scan every live Product/Relation again (a third of the client's CPU for 100k relations)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validate(products: Sequence[Product], relations: list[RelationTuple]) -> None:
    """Refuse input a MERGE would silently fold together or drop (duplicates, dangling endpoints)."""
    counts = Counter(p.id for p in products)
    known = set(counts)
    if len(known) != len(products):
        dupes = sorted(pid for pid, n in counts.items() if n > 1)[:5]
        raise StoreError(f"duplicate product ids in publish, e.g. {dupes}")
    if len({row[:3] for row in relations}) != len(relations):
        seen: set[RelationTuple] = set()
        for row in relations:
            if row[:3] in seen:
                raise StoreError(f"duplicate relation {row[:3]} in publish")
            seen.add(row[:3])
    for row in relations:
        for end in (row[0], row[1]):
            if end not in known:
                raise StoreError(f"relation {row[:3]} points at product {end!r}, which is not in the publish")


_DIGEST_FORMAT = "3:"
"""Prefix of the current digest format. Digests of format 2 (`_digest_v2`) and unprefixed ones
(`_legacy_digest`), stored by earlier versions of the store, are checked with their own function."""
_DIGEST_V2 = "2:"


def _digest(product_rows: list[dict[str, Any]], relations: list[RelationTuple]) -> str:
    """Content hash of a publish: tells a repeated publish of the same graph from a different one. One JSON
    document of rows as arrays (product_row's and EDGE_SCHEMA's column order) per table, sorted by id and by
    (source, target, kind): both unique, so sorting whole tuples never compares further."""
    digest = hashlib.sha256()
    encode = json.JSONEncoder(ensure_ascii=False).encode
    digest.update(encode(sorted(tuple(row.values()) for row in product_rows)).encode("utf-8"))
    digest.update(b"\0")
    digest.update(encode(sorted(relations)).encode("utf-8"))
    digest.update(b"\0")
    return _DIGEST_FORMAT + digest.hexdigest()


def _stored_digest_of(stored: str, product_rows: list[dict[str, Any]], relations: list[RelationTuple]) -> str:
    """This publish's digest in the format of the `stored` one."""
    if stored.startswith(_DIGEST_FORMAT):
        return _digest(product_rows, relations)
    relation_rows = [dict(zip(_EDGE_COLUMNS, row, strict=True)) for row in relations]
    return (_digest_v2 if stored.startswith(_DIGEST_V2) else _legacy_digest)(product_rows, relation_rows)


def _sorted_tables(
    product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    yield sorted(product_rows, key=lambda r: r["id"])
    yield sorted(relation_rows, key=lambda r: (r["source"], r["target"], r["kind"]))


def _digest_v2(product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]) -> str:
    """The digest of format 2 (one JSON document of row objects per table)."""
    digest = hashlib.sha256()
    encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
    for rows in _sorted_tables(product_rows, relation_rows):
        digest.update(encode(rows).encode("utf-8"))
        digest.update(b"\0")
    return _DIGEST_V2 + digest.hexdigest()


def _legacy_digest(product_rows: list[dict[str, Any]], relation_rows: list[dict[str, Any]]) -> str:
    """The digest versions published before format 2 carry (one JSON line per row object)."""
    digest = hashlib.sha256()
    encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
    for rows in _sorted_tables(product_rows, relation_rows):
        for row in rows:
            digest.update(encode(row).encode("utf-8"))
            digest.update(b"\n")
        digest.update(b"\0")
    return digest.hexdigest()


def _provenance_table(relations: list[RelationTuple]) -> tuple[list[list[Any]], list[int]]:
    """(distinct provenance tuples in first-seen order, each relation's index into them)."""
    index: dict[tuple[Any, ...], int] = {}
    positions = [index.setdefault(row[_PROVENANCE_SLICE], len(index)) for row in relations]
    return [list(key) for key in index], positions


_Job = tuple[str, dict[str, Any], int]
"""One batch: (query, its parameters, rows it must write)."""


class Writer(Leases):
    """The write half of the GraphStore protocol: publish, and the cleanup that follows it."""

    def publish(
        self, products: Sequence[Product], relations: Sequence[Relation], manifest: GraphVersion
    ) -> GraphVersion:
        """Raises PublisherBusy (nothing written) while another live publisher holds the lease."""
        version = manifest.version_id
        with _gc_paused():
            relation_rows = _relation_tuples(relations)
            _validate(products, relation_rows)
            product_rows = [product_row(p) for p in products]
        self.ensure_schema()
        me = Publisher.this_process()
        with _translated(f"publishing version {version!r}"), self._lease(me, version) as lease:
            existing = self._read_rows(cypher.GET_VERSION, version=version)
            if existing and existing[0]["state"] == cypher.STATE_COMPLETE:
                stored = str(existing[0]["digest"] or "")
                same = _stored_digest_of(stored, product_rows, relation_rows)
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
                    if not switched:  # the lease was lost after the last batch: give the partial version up too
                        raise StoreError(_lost_message(version))
                except BaseException:
                    self._abandon(version, lease)
                    raise
                finally:
                    lease.version = None
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
        self, version: str, product_rows: list[dict[str, Any]], relations: list[RelationTuple],
        positions: list[int], lease: _Lease,
    ) -> None:
        """Nodes first (their element ids come back), then relationships by kind; `parallel` sessions.
        Relationship batches travel as columns (one list per property, `s`/`t` the ends' element ids): a few
        flat lists pack several times faster than one map per row, and the server unpacks no map keys."""
        with self._progress_bar(version, len(product_rows) + len(relations)) as advance:
            node_jobs: list[_Job] = [
                (cypher.CREATE_PRODUCTS, {"rows": [{"key": _node_key(version, row["id"]), **row} for row in chunk]},
                 len(chunk))
                for chunk in _chunks(product_rows, self._batch_size)
            ]
            element_ids: dict[str, str] = {}
            for result in self._run_batches(node_jobs, version, lease, advance):
                element_ids.update(result["ids"])
            rel_jobs: list[_Job] = []
            with _gc_paused():
                for kind in RELATION_KINDS:
                    of_kind = [i for i, row in enumerate(relations) if row[2] == kind]
                    for chunk in _chunks(of_kind, self._batch_size):
                        rows = [relations[i] for i in chunk]
                        columns = {
                            "s": [element_ids[row[0]] for row in rows], "t": [element_ids[row[1]] for row in rows],
                            "score": [row[3] for row in rows], "reasons": [row[4] for row in rows],
                            "evidence": [row[5] for row in rows], "p": [positions[i] for i in chunk],
                        }
                        rel_jobs.append((cypher.CREATE_RELATIONS[kind], columns, len(chunk)))
            self._run_batches(rel_jobs, version, lease, advance)

    def _run_batches(
        self, jobs: list[_Job], version: str, lease: _Lease, advance: Callable[[int], None]
    ) -> list[dict[str, Any]]:
        """Runs the batches on up to `parallel` sessions; the first failure cancels what has not started."""

        def run(job: _Job) -> dict[str, Any]:
            if lease.lost.is_set():
                raise StoreError(_lost_message(version))
            query, params, n_rows = job
            result = self._write_batch(query, params, version)
            if int(result["written"]) != n_rows:
                raise StoreError(f"a batch of {n_rows} rows wrote {result['written']} in version {version!r}")
            advance(n_rows)
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

    def _verify_written(self, version: str, n_products: int, relations: list[RelationTuple]) -> None:
        products = self._read_rows(cypher.COUNT_VERSION_PRODUCTS, version=version)
        found_products = int(products[0]["n"]) if products else 0
        relation_counts = self._read_rows(cypher.COUNT_VERSION_RELATIONS, version=version)
        found = {_KIND_OF_TYPE[r["type"]]: int(r["n"]) for r in relation_counts}
        kinds = Counter(row[2] for row in relations)
        wanted = {kind: kinds[kind] for kind in RELATION_KINDS}
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
