"""The default graph store: immutable version folders on local disk plus an atomically swapped pointer.

Layout: root/versions/<version_id>/{nodes.parquet, edges.parquet, manifest.json}, root/current (the id of
the current version), root/staging/ (publishes in progress). A reader follows the pointer once, so it sees
one whole version; a publish that fails half-way never moves the pointer.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import networkx as nx  # type: ignore[import-untyped]
import polars as pl
from pydantic import ValidationError

from graph_schema.errors import StoreError, VersionNotFound
from graph_schema.store import PublishedGraph
from graph_schema.models import GraphVersion, Product, Relation
from graph_schema.relation_table import relation_table
from graph_schema.tables import EDGE_SCHEMA, NODE_SCHEMA, edges_frame, nodes_frame

NODES_FILE: Final = "nodes.parquet"
EDGES_FILE: Final = "edges.parquet"
MANIFEST_FILE: Final = "manifest.json"
_POINTER: Final = "current"
_LOAD_ATTEMPTS: Final = 3


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory holding it is synced.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _is_safe_id(version_id: str) -> bool:
    # Stricter than GraphVersion (ASCII only): the id becomes a path component here.
    return (
        bool(version_id)
        and not version_id.startswith(".")
        and all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in version_id)
    )


class EmbeddedStore:
    """`GraphStore` on a local folder. Safe for one publisher and any number of readers (processes too);
    concurrent publishers are serialized by a lock file."""

    def __init__(self, root: Path, keep: int = 5) -> None:
        if keep < 1:
            raise StoreError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r}, keep={self.keep})"

    # ---------------------------------------------------------------------------------------- writing

    @contextmanager
    def _publish_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".publish.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _clean_staging(self) -> None:
        """Leftovers of a publish that died (crash, kill): never visible to readers, safe to delete under the lock."""
        if self.staging_dir.exists():
            shutil.rmtree(self.staging_dir, ignore_errors=True)
        (self.root / f"{_POINTER}.tmp").unlink(missing_ok=True)

    def publish(
        self, products: Sequence[Product], relations: Sequence[Relation], manifest: GraphVersion
    ) -> GraphVersion:
        """Write a new version and make it current. `product_count` and `relation_counts` of the stored
        manifest are counted from the tables; `parent_version` defaults to the version current before.
        Raises StoreError (the previous version stays current)."""
        version_id = manifest.version_id
        if not _is_safe_id(version_id):
            raise StoreError(f"version id {version_id!r} is not a safe folder name ([A-Za-z0-9._-], no leading dot)")
        known = {p.id for p in products}
        if len(known) != len(products):
            raise StoreError(f"version {version_id}: duplicate product ids in the nodes table")
        table = relation_table(relations)  # checked as columns: a large version holds a million relations
        ids = pl.Series(list(known), dtype=pl.String).implode()
        dangling = table.frame.filter(~pl.col("source").is_in(ids) | ~pl.col("target").is_in(ids)).select(
            "source", "target", "kind").rows()
        if dangling:
            raise StoreError(
                f"version {version_id}: {len(dangling)} relations point outside the catalog, e.g. {dangling[:3]}"
            )
        if table.frame.select("source", "target", "kind").is_duplicated().any():
            raise StoreError(f"version {version_id}: duplicate (source, target, kind) relations")
        with self._publish_lock():
            self._clean_staging()
            target = self.versions_dir / version_id
            if target.exists():
                raise StoreError(
                    f"version {version_id!r} already exists in {self.versions_dir}; versions are immutable"
                )
            counts = table.counts()
            stored = manifest.model_copy(update={
                "product_count": len(products),
                "relation_counts": counts,
                "parent_version": manifest.parent_version or self.current_version(),
            })
            stage = self.staging_dir / f"{version_id}.{uuid.uuid4().hex[:8]}"
            try:
                stage.mkdir(parents=True)
                self._write_version(stage, nodes_frame(products), edges_frame(table), stored)
                self.versions_dir.mkdir(parents=True, exist_ok=True)
                os.rename(stage, target)
                _fsync_dir(self.versions_dir)
            except Exception as exc:  # any failure: nothing became visible; clean and report
                shutil.rmtree(stage, ignore_errors=True)
                raise StoreError(f"publishing version {version_id!r} failed: {exc}") from exc
            previous = self.current_version()
            try:
                self._swap_pointer(version_id)
            except Exception as exc:
                # The folder is complete but was never current; remove it so the id can be published again.
                shutil.rmtree(target, ignore_errors=True)
                raise StoreError(f"switching to version {version_id!r} failed: {exc}") from exc
            try:
                _fsync_dir(self.root)
            except Exception as exc:
                # The pointer already names the new folder: it must stay (see _after_failed_sync).
                raise self._after_failed_sync(version_id, previous, exc) from exc
            self._prune()
        return stored

    def _after_failed_sync(self, version_id: str, previous: str | None, exc: BaseException) -> StoreError:
        """The pointer was replaced but the directory sync failed: whether a crash would keep the new pointer is
        unknown, so the new folder stays (a pointer must never name a missing version) and the previous version
        is made current again, best effort, as a failed publish promises."""
        if previous is None:
            outcome = "it stays current (there was no previous version)"
        else:
            try:
                self._swap_pointer(previous)
                outcome = f"{previous!r} is current again"
            except OSError as again:
                outcome = f"it stays current (restoring {previous!r} failed too: {again})"
        return StoreError(
            f"switching to version {version_id!r} failed while syncing {self.root}: {exc}; its folder is kept and "
            f"{outcome}"
        )

    def _write_version(self, folder: Path, nodes: pl.DataFrame, edges: pl.DataFrame, manifest: GraphVersion) -> None:
        nodes.write_parquet(folder / NODES_FILE)
        edges.write_parquet(folder / EDGES_FILE)
        (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        for name in (NODES_FILE, EDGES_FILE, MANIFEST_FILE):
            _fsync_file(folder / name)
        _fsync_dir(folder)

    def _swap_pointer(self, version_id: str) -> None:
        temporary = self.root / f"{_POINTER}.tmp"
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(version_id)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.root / _POINTER)

    def _prune(self) -> None:
        current = self.current_version()
        manifests = self.list_versions()
        keep = {m.version_id for m in manifests[-self.keep:]} | {current}
        for manifest in manifests:
            if manifest.version_id not in keep:
                shutil.rmtree(self.versions_dir / manifest.version_id, ignore_errors=True)

    # ---------------------------------------------------------------------------------------- reading

    def current_version(self) -> str | None:
        try:
            text = (self.root / _POINTER).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read the current-version pointer in {self.root}: {exc}") from exc
        if not text:
            raise StoreError(f"{self.root / _POINTER} is empty")
        return text

    def _resolve(self, version_id: str | None) -> str:
        chosen = version_id if version_id is not None else self.current_version()
        if chosen is None:
            raise VersionNotFound(f"nothing published yet in {self.root}")
        if not _is_safe_id(chosen):
            raise VersionNotFound(f"invalid version id {chosen!r}")
        return chosen

    def _read_manifest(self, version_id: str) -> GraphVersion:
        path = self.versions_dir / version_id / MANIFEST_FILE
        try:
            return GraphVersion.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise VersionNotFound(f"version {version_id!r} not found in {self.versions_dir}") from None
        except (OSError, ValidationError) as exc:
            raise StoreError(f"unreadable manifest {path}: {exc}") from exc

    def manifest(self, version_id: str | None = None) -> GraphVersion:
        return self._read_manifest(self._resolve(version_id))

    def load(self, version_id: str | None = None) -> PublishedGraph:
        """Read one version whole. With no id, the pointer is read once; if that version is pruned while
        being read (a reader slower than `keep` publishes), the read starts over from the new pointer."""
        for attempt in range(_LOAD_ATTEMPTS):
            chosen = self._resolve(version_id)
            try:
                return self._load_version(chosen)
            except VersionNotFound:
                if version_id is not None or attempt == _LOAD_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _load_version(self, version_id: str) -> PublishedGraph:
        manifest = self._read_manifest(version_id)
        folder = self.versions_dir / version_id
        try:
            nodes = pl.read_parquet(folder / NODES_FILE)
            edges = pl.read_parquet(folder / EDGES_FILE)
        except FileNotFoundError:
            raise VersionNotFound(f"version {version_id!r} disappeared while being read") from None
        except Exception as exc:  # polars/arrow raise many types for a damaged file
            raise StoreError(f"cannot read version {version_id!r} in {folder}: {exc}") from exc
        try:
            nodes, edges = nodes.cast(NODE_SCHEMA), edges.cast(EDGE_SCHEMA)  # type: ignore[arg-type]
            return PublishedGraph(manifest=manifest, nodes=nodes, edges=edges)
        except (ValueError, pl.exceptions.PolarsError) as exc:
            raise StoreError(f"version {version_id!r} has an unexpected table layout: {exc}") from exc

    def list_versions(self) -> list[GraphVersion]:
        if not self.versions_dir.exists():
            return []
        manifests = []
        for folder in self.versions_dir.iterdir():
            if folder.is_dir():
                try:
                    manifests.append(self._read_manifest(folder.name))
                except VersionNotFound:
                    continue  # pruned between listing and reading
        return sorted(manifests, key=lambda m: (m.created_at, m.version_id))


def export_graphml(graph: PublishedGraph, path: Path) -> Path:
    """Write a version as GraphML (Gephi, yEd, networkx). Parallel edges of different kinds are kept."""
    out = nx.MultiDiGraph(version=graph.manifest.version_id)
    for row in graph.nodes.iter_rows(named=True):
        attrs = {"title": row["title"], "category": " > ".join(row["category"] or ())}
        attrs.update({k: row[k] for k in ("brand", "price") if row[k] is not None})
        out.add_node(row["id"], **attrs)
    for row in graph.edges.iter_rows(named=True):
        out.add_edge(
            row["source"], row["target"], key=row["kind"], kind=row["kind"], score=float(row["score"]),
            reasons=" | ".join(row["reasons"] or ()), run_id=row["run_id"],
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        nx.write_graphml(out, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise StoreError(f"cannot write GraphML to {path}: {exc}") from exc
    return path
