"""The index of one graph version as flat files that every worker maps read-only, so N workers hold one
copy in the page cache and a reload maps the new version's folder. Owns the file layout, the packing
(narrowest integer types that fit, strings as UTF-8 blobs with offsets, a hash table from product id to
row) and the read-only views; it decides no ranking rule (`serve.build` and `serve.index` do).

A folder is written under a temporary name and renamed into place, so a reader sees a whole index or none.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from serve.build import SCORE_LEVELS, Csr, IndexArrays, IndexMeta, NodeColumns, ProductDetails

FORMAT = 1
_META = "meta.json"
_DETAIL_FIELDS = ("description", "brand", "attributes_json", "enriched_json")
Bytes = bytes | mmap.mmap
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only; elsewhere pages fault in on first touch


class StringColumn(Sequence[str | None]):
    """Row -> str (or None) over a UTF-8 blob and end offsets; nothing decoded until asked."""

    __slots__ = ("_blob", "_ends", "_valid", "_n")

    def __init__(self, blob: Bytes, ends: np.ndarray, valid: np.ndarray | None) -> None:
        self._blob = blob
        self._ends = ends.data  # scalar reads from a memoryview are plain ints, 3x faster than numpy's
        self._valid = valid.data if valid is not None else None
        self._n = len(ends) - 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, row: int) -> str | None:  # type: ignore[override]
        if row < 0:
            row += self._n
        if self._valid is not None and not self._valid[row]:
            return None
        ends = self._ends
        return self._blob[ends[row] : ends[row + 1]].decode()

    def take(self, rows: list[int]) -> list[str]:
        """Several rows of a column without nulls (ids, titles), in one call: the per-item method call
        is most of the cost of a short list. (`bytes.decode()` takes UTF-8's fast path; `str(b, "utf-8")`
        looks the codec up by name, twice as slow.)"""
        ends, blob = self._ends, self._blob
        return [blob[ends[r] : ends[r + 1]].decode() for r in rows]

    def __iter__(self) -> Iterator[str | None]:
        return (self[i] for i in range(self._n))

    def buffers(self) -> tuple[Bytes, memoryview]:
        """(UTF-8 blob, end offsets): what the C reader (`serve.native`) decodes from, read-only."""
        return self._blob, self._ends

    def nbytes(self) -> int:
        return len(self._blob) + self._ends.nbytes + (self._valid.nbytes if self._valid is not None else 0)


class IdTable:
    """Product id -> row: open addressing (linear probing) over crc32 of the UTF-8 id, a table of int32
    rows (-1 = empty) at most half full. crc32, not hash(): every worker must find the same slot."""

    __slots__ = ("_table", "_mask", "_ids")

    def __init__(self, table: np.ndarray, ids: StringColumn) -> None:
        self._table = table.data
        self._mask = len(table) - 1
        self._ids = ids

    @staticmethod
    def build(ids: Sequence[str]) -> np.ndarray:
        size = 8
        while size < 2 * len(ids):
            size *= 2
        table = np.full(size, -1, dtype=np.int32)
        slots = table.data
        mask = size - 1
        for row, pid in enumerate(ids):
            slot = zlib.crc32(pid.encode()) & mask
            while slots[slot] >= 0:
                slot = (slot + 1) & mask
            slots[slot] = row
        return table

    def get(self, product_id: str) -> int:
        """The row, or -1 when the id is not in this version."""
        key = product_id.encode()
        table, mask = self._table, self._mask
        blob, ends = self._ids._blob, self._ids._ends
        slot = zlib.crc32(key) & mask
        while True:
            row = table[slot]
            if row < 0:
                return -1
            if blob[ends[row] : ends[row + 1]] == key:
                return int(row)
            slot = (slot + 1) & mask

    @property
    def slots(self) -> memoryview:
        """The int32 slots (row, or -1 = empty), for the C reader (`serve.native`)."""
        return self._table

    def nbytes(self) -> int:
        return self._table.nbytes


# --- packing ----------------------------------------------------------------------------------------------
def _strings(values: Sequence[str | None], *, nullable: bool) -> dict[str, np.ndarray]:
    encoded = [v.encode() if v is not None else b"" for v in values]
    ends = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=ends[1:])
    out = {"blob": np.frombuffer(b"".join(encoded), dtype=np.uint8), "ends": _narrow_indptr(ends)}
    if nullable:
        out["valid"] = np.fromiter((v is not None for v in values), dtype=np.uint8, count=len(values))
    return out


def _narrow_indptr(indptr: np.ndarray) -> np.ndarray:
    fits = len(indptr) == 0 or int(indptr[-1]) <= np.iinfo(np.int32).max
    return indptr.astype(np.int32) if fits else indptr.astype(np.int64)


def _reason_dtype(n_reasons: int) -> type[np.integer[Any]]:
    return np.uint16 if n_reasons <= np.iinfo(np.uint16).max + 1 else np.int32


def pack(arrays: IndexArrays) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta document, named arrays) for one index: what `write_index` puts on disk."""
    csrs = (arrays.complements, arrays.substitutes, arrays.category_complements)
    # relations without reasons (id -1) point at an empty tuple appended to the table, only when there are any
    has_empty = any(len(c.reason_id) and int(c.reason_id.min()) < 0 for c in csrs)
    reasons = list(arrays.reasons) + ([()] if has_empty else [])
    reason_dtype = _reason_dtype(len(reasons))
    out: dict[str, np.ndarray] = {}

    # one table of distinct scores for the three lists: 2-byte codes when it fits, float32 otherwise
    table = np.unique(np.concatenate([c.score.astype(np.float32) for c in csrs]))
    coded = len(table) <= SCORE_LEVELS
    if coded:
        out["scores.table"] = table

    def csr(name: str, c: Csr) -> None:
        out[f"{name}.indptr"] = _narrow_indptr(c.indptr)
        out[f"{name}.dst"] = c.dst.astype(np.int32, copy=False)
        score = c.score.astype(np.float32, copy=False)
        out[f"{name}.score"] = np.searchsorted(table, score).astype(np.uint16) if coded else score
        rid = c.reason_id.astype(np.int64)
        out[f"{name}.reason_id"] = np.where(rid < 0, len(arrays.reasons), rid).astype(reason_dtype)
        if c.via is not None:
            out[f"{name}.via"] = c.via.astype(np.int32, copy=False)

    csr("complements", arrays.complements)
    csr("substitutes", arrays.substitutes)
    csr("category_complements", arrays.category_complements)
    nodes = arrays.nodes
    out["nodes.category_id"] = nodes.category_id.astype(np.int32, copy=False)
    out["nodes.price"] = nodes.price.astype(np.float64, copy=False)
    for field, values in (("ids", nodes.ids), ("titles", nodes.titles)):
        for part, array in _strings(values, nullable=False).items():
            out[f"{field}.{part}"] = array
    if nodes.details is not None:
        d = nodes.details
        columns: dict[str, Sequence[str | None]] = {f: getattr(d, f) for f in _DETAIL_FIELDS}
        columns["keyphrases_json"] = [json.dumps(k) if k else None for k in d.keyphrases]
        for field, column in columns.items():
            for part, array in _strings(column, nullable=True).items():
                out[f"details.{field}.{part}"] = array
    out["ids.table"] = IdTable.build(nodes.ids)
    meta = arrays.meta
    doc = {
        "format": FORMAT,
        "version": meta.version,
        "created_at": meta.created_at.isoformat() if meta.created_at else None,
        "manifest_product_count": meta.manifest_product_count,
        "manifest_relation_counts": meta.manifest_relation_counts,
        "dropped_edges": meta.dropped_edges,
        "reasons": [list(r) for r in reasons],
        "categories": [list(c) for c in nodes.categories],
        "has_details": nodes.details is not None,
        "arrays": {name: {"dtype": a.dtype.str, "length": int(a.size)} for name, a in out.items()},
    }
    return doc, out


def write_index(arrays: IndexArrays, folder: Path) -> Path:
    """Write the index into `folder` (atomically: built beside it, then renamed). Returns `folder`."""
    doc, named = pack(arrays)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, array in named.items():
            np.ascontiguousarray(array).tofile(tmp / f"{name}.bin")
        (tmp / _META).write_text(json.dumps(doc), encoding="utf-8")
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / _META).is_file():  # another process renamed its own copy first: that one serves
            raise
    return folder


def is_complete(folder: Path) -> bool:
    return (folder / _META).is_file()


# --- mapping ----------------------------------------------------------------------------------------------
def _map(path: Path, dtype: np.dtype[Any], length: int) -> np.ndarray:
    if length == 0:
        return np.zeros(0, dtype=dtype)
    with open(path, "rb") as f:
        # the mapping outlives the descriptor. MAP_POPULATE fills this process's page table at open (from
        # the page cache the workers share, no copy): otherwise the first touch of each page costs a lookup
        # a page fault, tens of microseconds over a cold 1M-product index
        mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
    return np.frombuffer(mm, dtype=dtype, count=length)  # read-only: the buffer is


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _in_memory(named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: _frozen(np.ascontiguousarray(a)) for name, a in named.items()}


def _open_files(folder: Path, doc: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        name: _map(folder / f"{name}.bin", np.dtype(spec["dtype"]), spec["length"])
        for name, spec in doc["arrays"].items()
    }


def read_meta(folder: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((folder / _META).read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{folder}: index format {doc.get('format')!r}, this server reads {FORMAT}")
    return doc


def map_index(folder: Path) -> tuple[IndexArrays, IdTable, int]:
    """(arrays over the mapped files, the id table, bytes mapped). Nothing is copied."""
    doc = read_meta(folder)
    return _assemble(doc, _open_files(folder, doc))


def packed_in_memory(arrays: IndexArrays) -> tuple[IndexArrays, IdTable, int]:
    """The same packed layout without files (tests, benchmarks, `GraphIndex.from_published`)."""
    doc, named = pack(arrays)
    doc = json.loads(json.dumps(doc))  # exactly what a reader of the files would see
    return _assemble(doc, _in_memory(named))


def _sliceable(blob: np.ndarray) -> Bytes:
    """The mmap (or bytes) under a blob array: slicing those yields bytes, which compare and decode
    several times faster than memoryview slices."""
    base = blob.base
    if isinstance(base, memoryview):  # np.frombuffer keeps a memoryview of the mmap, not the mmap itself
        base = base.obj
    if isinstance(base, (mmap.mmap, bytes)) and len(base) == blob.nbytes:
        return base
    return blob.tobytes()  # in-memory indexes only: a mapped blob is never copied into a worker


def _column(a: dict[str, np.ndarray], prefix: str, nullable: bool) -> StringColumn:
    return StringColumn(_sliceable(a[f"{prefix}.blob"]), a[f"{prefix}.ends"], a[f"{prefix}.valid"] if nullable else None)


def _csr(a: dict[str, np.ndarray], name: str) -> Csr:
    return Csr(
        indptr=a[f"{name}.indptr"],
        dst=a[f"{name}.dst"],
        score=a[f"{name}.score"],
        reason_id=a[f"{name}.reason_id"],
        via=a.get(f"{name}.via"),
        score_table=a.get("scores.table"),
    )


def _assemble(doc: dict[str, Any], a: dict[str, np.ndarray]) -> tuple[IndexArrays, IdTable, int]:
    ids = _column(a, "ids", False)
    details = None
    if doc["has_details"]:
        keyphrases = _column(a, "details.keyphrases_json", True)
        description, brand, attributes, enriched = (_column(a, f"details.{f}", True) for f in _DETAIL_FIELDS)
        details = ProductDetails(
            description=description,  # type: ignore[arg-type]  # a Sequence, read like the list it replaces
            brand=brand,  # type: ignore[arg-type]
            attributes_json=attributes,  # type: ignore[arg-type]
            enriched_json=enriched,  # type: ignore[arg-type]
            keyphrases=_JsonLists(keyphrases),  # type: ignore[arg-type]
        )
    nodes = NodeColumns(
        ids=ids,  # type: ignore[arg-type]
        titles=_column(a, "titles", False),  # type: ignore[arg-type]
        category_id=a["nodes.category_id"],
        categories=tuple(tuple(c) for c in doc["categories"]),
        price=a["nodes.price"],
        details=details,
    )
    meta = IndexMeta(
        version=doc["version"],
        created_at=datetime.fromisoformat(doc["created_at"]) if doc["created_at"] else None,
        manifest_product_count=doc["manifest_product_count"],
        manifest_relation_counts=doc["manifest_relation_counts"],
        dropped_edges=doc["dropped_edges"],
    )
    arrays = IndexArrays(
        meta=meta,
        nodes=nodes,
        reasons=tuple(tuple(r) for r in doc["reasons"]),
        complements=_csr(a, "complements"),
        substitutes=_csr(a, "substitutes"),
        category_complements=_csr(a, "category_complements"),
    )
    return arrays, IdTable(a["ids.table"], ids), sum(int(x.nbytes) for x in a.values())


class _JsonLists(Sequence[list[str] | None]):
    __slots__ = ("_column",)

    def __init__(self, column: StringColumn) -> None:
        self._column = column

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, row: int) -> list[str] | None:  # type: ignore[override]
        text = self._column[row]
        return json.loads(text) if text is not None else None
