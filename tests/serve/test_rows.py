"""serve.rows (the short, numpy-free reads of the lookup hot path) and its C twin (serve.native) against
numpy on the same arrays, and the mapped index's strings read from the mapping, not from a per-worker copy."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from serve.build import Csr
from serve.index import GraphIndex
from serve.native import rows_reader
from serve.rows import ScoreTables
from tests.serve.conftest import READERS, make_graph, product, rel, use_native


def _csr(coded: bool) -> Csr:
    rng = np.random.default_rng(3)
    table = np.unique(rng.random(50, dtype=np.float32))
    codes = rng.integers(0, len(table), 40).astype(np.uint16)
    indptr = np.array([0, 0, 7, 7, 25, 40], np.int64)
    return Csr(
        indptr=indptr,
        dst=rng.integers(0, 1000, 40).astype(np.int32),
        score=codes if coded else table[codes],
        reason_id=rng.integers(0, 9, 40).astype(np.uint16),
        via=rng.integers(0, 1000, 40).astype(np.int32),
        score_table=table if coded else None,
    )


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("coded", [True, False], ids=["uint16 codes", "float32 scores"])
def test_rows_read_exactly_what_numpy_reads(coded: bool, reader: str) -> None:
    csr = _csr(coded)
    tables = ScoreTables(csr.score_table) if csr.score_table is not None else None
    rows = rows_reader(csr, tables, 1000, use_native(reader))
    for row in range(len(csr.indptr) - 1):
        lo, hi = rows.bounds(row)
        assert (lo, hi) == (int(csr.indptr[row]), int(csr.indptr[row + 1]))
        assert rows.degree(row) == hi - lo
        scores = csr.scores(lo, hi)
        assert rows.dst(lo, hi) == csr.dst[lo:hi].tolist()
        assert rows.reasons(lo, hi) == csr.reason_id[lo:hi].tolist()
        assert rows.via(lo, hi) == csr.via[lo:hi].tolist()  # type: ignore[index]
        assert rows.raw_scores(lo, hi) == scores.tolist()
        assert rows.rounded_scores(lo, hi) == np.round(scores.astype(np.float64), 6).tolist()
        assert all(type(v) is float for v in rows.raw_scores(lo, hi) + rows.rounded_scores(lo, hi))


def test_mapped_strings_are_read_from_the_mapping(tmp_path: Path) -> None:
    graph = make_graph(
        [product("a", "Camera"), product("b", "Lens é"), product("c", "Bag")],
        [rel("a", "b", "complement", 0.9), rel("a", "c", "complement", 0.4)],
    )
    index = GraphIndex.open(GraphIndex.write(graph, tmp_path / "v1"))
    ids, titles = index.nodes.ids, index.nodes.titles
    # a copy would cost every worker the whole blob (8 MB of ids, more of titles at 1M products)
    assert isinstance(ids._blob, mmap.mmap) and isinstance(titles._blob, mmap.mmap)  # type: ignore[attr-defined]
    assert [n.title for n in index.complements("a", 5).items] == ["Lens é", "Bag"]
    assert list(ids) == ["a", "b", "c"]
