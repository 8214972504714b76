"""The optional C extension of the lookup hot path (`serve/_fastindex.c`) and the choice, per index, between
it and the pure-Python readers (`serve.rows`, `serve.mapped`). Both read the same packed buffers and give
equal answers, field by field; the C one exists because building ten Neighbour records in Python costs about
10 us. `serve.index` defines every ranking rule; the one C function that applies some, the whole cart
(`Nodes.cart`, serve/_fastcart.c), copies those of `GraphIndex.cart_addons` and is tested equal to it. The
extension is optional: without a compiler at install time it is absent, `available()` is False and every
index answers in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from serve.build import Csr, IndexArrays
from serve.mapped import IdTable, StringColumn
from serve import rows
from serve.rows import Candidates, CsrRows, ScoreTables

try:
    import serve._fastindex as _fastindex
except ImportError:  # not built: the pure-Python path answers
    _fastindex = None  # type: ignore[assignment]

RowReader: TypeAlias = "CsrRows | _fastindex.Rows"
"""One CSR read row by row; both have the same methods (bounds, degree, dst, reasons, via, *_scores)."""
NodeReader: TypeAlias = "_fastindex.Nodes"


def available() -> bool:
    """True when the C extension is built and importable."""
    return _fastindex is not None


def rows_reader(csr: Csr, tables: ScoreTables | None, n_products: int, native: bool) -> RowReader:
    """The C `Rows` when `native` and built, else `CsrRows`."""
    if not native or _fastindex is None:
        return CsrRows(csr, tables)
    return _fastindex.Rows(
        csr.indptr, csr.dst, csr.score, csr.reason_id, csr.via,
        tables.raw if tables is not None else None, tables.rounded if tables is not None else None, n_products,
    )


def node_reader(arrays: IndexArrays, table: IdTable, record: type[tuple[object, ...]]) -> NodeReader | None:
    """The C `Nodes` (id -> row, ids and titles of rows, the `record` tuples of a head); None when not built.
    `record` is `serve.index.Neighbour`, passed in so that this module does not import the index."""
    if _fastindex is None:
        return None
    nodes = arrays.nodes
    ids, titles = nodes.ids, nodes.titles
    assert isinstance(ids, StringColumn) and isinstance(titles, StringColumn), "a packed index (serve.mapped)"
    return _fastindex.Nodes(
        table.slots, *ids.buffers(), *titles.buffers(), nodes.category_id, nodes.price,
        nodes.categories, arrays.reasons, record,
    )


SumByTarget = Callable[[Candidates, set[int]], dict[int, float]]
Gather = Callable[[Candidates, list[int]], dict[int, list[tuple[float, int, int, int]]]]


def cart_ops(native: bool) -> tuple[SumByTarget, Gather]:
    """The cart's sum and gather over candidate lists: C when `native` and built, else `serve.rows`'."""
    if native and _fastindex is not None:
        return _fastindex.sum_by_target, _fastindex.gather
    return rows.sum_by_target, rows.gather
