"""The C extension of the lookup hot path (serve/_fastindex.c via serve.native): built and used by default,
equal to the pure-Python path field by field and type by type, and refusing corrupt buffers with an error
instead of reading outside them."""

from __future__ import annotations

import gc
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from graph_schema.store import PublishedGraph
from serve import create_app, native, rows
from serve.index import GraphIndex, Neighbour
from serve.mapped import IdTable
from serve.settings import ServeSettings
from tests.serve.conftest import make_graph, product, rel

fast = pytest.importorskip("serve._fastindex") if native.available() else None
needs_native = pytest.mark.skipif(fast is None, reason="serve._fastindex is not built")


def _c_compiler() -> str | None:
    """The compiler setuptools would call (sysconfig's CC, else cc/gcc on PATH), None when there is none."""
    cc = (sysconfig.get_config_var("CC") or "").split()
    return next((found for name in (cc[:1] + ["cc", "gcc"]) if (found := shutil.which(name))), None)


def test_the_extension_is_built_and_indexes_use_it_by_default() -> None:
    """CI installs with `pip install -e .`, which compiles serve/_fastindex.c: with a C compiler on the
    machine this fails if the module is not there (a broken build must not pass as "pure Python"); without
    one it skips, as the install then rightly fell back to pure Python."""
    if not native.available():
        compiler = _c_compiler()
        if compiler is None:
            pytest.skip("no C compiler: serve._fastindex cannot be built here, pure Python answers")
        headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
        pytest.fail(f"serve._fastindex is not built although {compiler} is there (Python.h "
                    f"{'found' if headers.exists() else 'MISSING: install python3-dev'}): rerun `pip install -e .` "
                    "and read its build output")
    graph = make_graph([product("a", "A"), product("b", "B")], [rel("a", "b", "complement", 0.5)])
    assert GraphIndex.from_published(graph).native
    assert not GraphIndex.from_published(graph, native=False).native


class _Source:
    def __init__(self, graph: PublishedGraph) -> None:
        self.graph = graph

    def current_version(self) -> str | None:
        return self.graph.manifest.version_id

    def load(self) -> PublishedGraph:
        return self.graph


def test_pure_python_setting_reaches_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = make_graph([product("a", "A"), product("b", "B")], [rel("a", "b", "complement", 0.5)])
    monkeypatch.setenv("SHELFGRAPH_PURE_PYTHON", "1")
    settings = ServeSettings(reload_interval_s=0)
    assert settings.pure_python
    app = create_app(settings, source=_Source(graph), start_polling=False)
    index = app.extensions["shelfgraph"].holder.index
    assert index is not None and not index.native
    assert index.complements("a", 5).items[0].product_id == "b"


@needs_native
def test_crc32_is_zlibs() -> None:
    rng = random.Random(5)
    samples = [b"", b"a", "é東🎒".encode()] + [rng.randbytes(rng.randint(0, 40)) for _ in range(500)]
    assert [fast.crc32(b) for b in samples] == [zlib.crc32(b) for b in samples]  # type: ignore[union-attr]


def _odd_graph(seed: int) -> PublishedGraph:
    """Unicode ids and titles, unpriced and uncategorized products, rows without edges, borrowed edges."""
    rng = random.Random(seed)
    ids = [rng.choice(["p{}", "é{}", "東京-{}", "🎒{}"]).format(i) for i in range(50)]
    cats = [(), ("Ö",), ("Ö", "Käse"), ("E", "Cam")]
    products = [product(pid, f"Titel {pid} ✓", rng.choice(cats), rng.choice([None, 9.99, rng.uniform(1, 9)]))
                for pid in ids]
    relations = []
    for _ in range(90):
        a, b = rng.sample(ids[:40], 2)  # ids[40:] have no edges at all
        relations.append(rel(a, b, "complement" if rng.random() < 0.7 else "substitute", rng.uniform(0.01, 1)))
    return make_graph(products, relations)


def _types(result: object) -> list[list[type]]:
    return [[type(f) for f in item] for item in result.items]  # type: ignore[attr-defined]


@needs_native
@pytest.mark.parametrize("seed", range(5))
def test_native_answers_equal_pure_ones_field_by_field(seed: int, tmp_path: Path) -> None:
    graph = _odd_graph(seed)
    folder = GraphIndex.write(graph, tmp_path / "v")
    fast_ix, pure_ix = GraphIndex.open(folder), GraphIndex.open(folder, native=False)
    assert fast_ix.native and not pure_ix.native
    rng = random.Random(seed)
    ids = list(pure_ix.nodes.ids)
    sources = set()
    for pid in ids + ["nope", "", "é"]:
        assert (pid in fast_ix) == (pid in pure_ix)
        if pid not in pure_ix:
            continue
        for k in (1, 3, 10):
            for f in ({}, {"min_score": 0.3}, {"category": "Ö"}, {"price_max": 5.0}, {"exclude": ids[:3]}):
                want = pure_ix.complements(pid, k, **f)
                got = fast_ix.complements(pid, k, **f)
                assert got == want and _types(got) == _types(want)
                assert all(type(n) is Neighbour for n in got.items)
                sources.add(want.source)
                want_subs = pure_ix.substitutes(pid, k, **f)
                got_subs = fast_ix.substitutes(pid, k, **f)
                assert got_subs == want_subs and _types(got_subs) == _types(want_subs)
        cart = rng.sample(ids, rng.randint(1, 5)) + ["nope"]
        assert fast_ix.cart_addons(cart, 8) == pure_ix.cart_addons(cart, 8)
    assert {"direct", "via_substitutes", "none"} <= sources


@needs_native
def test_float32_scores_are_rounded_like_numpy() -> None:
    values = np.random.default_rng(1).random(20_000, dtype=np.float32)
    values = np.concatenate([values, np.array([0.0, 1.0, 0.5, 1e-7, 0.1234565], np.float32)])
    rows = fast.Rows(np.array([0, len(values)], np.int64), np.zeros(len(values), np.int32), values,  # type: ignore[union-attr]
                     np.zeros(len(values), np.uint16), None, None, None, 1)
    assert rows.rounded_scores(0, len(values)) == np.round(values.astype(np.float64), 6).tolist()
    assert rows.raw_scores(0, len(values)) == values.tolist()


@needs_native
def test_lookups_keep_refcounts_and_memory_flat(tmp_path: Path) -> None:
    """A missed Py_DECREF in the C reader leaks every record it builds: after a warm-up, thousands more
    lookups must neither grow the traced memory nor change the references held on the shared tuples."""
    index = GraphIndex.open(GraphIndex.write(_odd_graph(3), tmp_path / "v"))
    assert index.native
    ids = list(index.nodes.ids)
    shared = [*index._a.reasons, *index._a.nodes.categories]

    def calls(n: int) -> None:
        for i in range(n):
            pid = ids[i % len(ids)]
            index.complements(pid, 10)
            index.complements(pid, 5, category="Ö")
            index.substitutes(pid, 10)
            index.cart_addons(ids[i % 7: i % 7 + 4] + ["nope"], 6)
            pid in index

    calls(2 * len(ids))
    gc.collect()
    counts = [sys.getrefcount(t) for t in shared]
    tracemalloc.start()
    try:
        calls(len(ids))
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        calls(3000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after 3000 rounds of lookups"
    assert [sys.getrefcount(t) for t in shared] == counts


# --- corrupt buffers -----------------------------------------------------------------------------------------
def _nodes(**bad: object) -> object:
    """Two products ("a", "bb") with a valid id table, unless a column is replaced by `bad`."""
    cols: dict[str, object] = {
        "table": IdTable.build(["a", "bb"]),
        "ids_blob": b"abb", "ids_ends": np.array([0, 1, 3], np.int32),
        "titles_blob": "AB".encode(), "titles_ends": np.array([0, 1, 2], np.int64),
        "cat_of": np.array([0, -1], np.int32), "price": np.array([1.0, np.nan]),
        "categories": (("C",),), "reasons": (("r",),), "record": Neighbour,
    }
    cols.update(bad)
    return fast.Nodes(**cols)  # type: ignore[union-attr]


def _rows(**bad: object) -> object:
    cols: dict[str, object] = {
        "indptr": np.array([0, 2, 2], np.int64), "dst": np.array([1, 0], np.int32),
        "score": np.array([1, 0], np.uint16), "reason": np.array([0, 0], np.uint16), "via": None,
        "raw": np.array([0.25, 0.75], np.float32), "rounded": np.array([0.25, 0.75], np.float64), "n_targets": 2,
    }
    cols.update(bad)
    return fast.Rows(**cols)  # type: ignore[union-attr]


@needs_native
def test_valid_buffers_read() -> None:
    nodes, rows = _nodes(), _rows()
    assert [nodes.row(k) for k in ("a", "bb", "b", "")] == [0, 1, -1, -1]  # type: ignore[attr-defined]
    assert rows.bounds(0) == (0, 2) and rows.degree(1) == 0  # type: ignore[attr-defined]
    assert nodes.head(rows, 0, 2) == (  # type: ignore[attr-defined]
        Neighbour("bb", "B", (), None, 0.75, ("r",), None), Neighbour("a", "A", ("C",), 1.0, 0.25, ("r",), None))
    assert nodes.take_ids([1, 0]) == ["bb", "a"] and nodes.take_titles([1]) == ["B"]  # type: ignore[attr-defined]


@needs_native
@pytest.mark.parametrize(("column", "value"), [
    ("dst", np.array([5, 0], np.int32)),                 # a target past the products
    ("dst", np.array([-1, 0], np.int32)),
    ("score", np.array([7, 0], np.uint16)),              # a code past the score table
    ("reason", np.array([3, 0], np.uint16)),             # a reason id past the reasons
    ("via", np.array([9, -1], np.int32)),                # a lender past the products
])
def test_corrupt_edges_raise(column: str, value: np.ndarray) -> None:
    nodes, rows = _nodes(), _rows(**{column: value})
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        nodes.head(rows, 0, 2)  # type: ignore[attr-defined]


@needs_native
def test_corrupt_indptr_and_spans_raise() -> None:
    rows = _rows(indptr=np.array([0, 9, 2], np.int64))
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        rows.bounds(0)  # type: ignore[attr-defined]
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        rows.bounds(1)  # type: ignore[attr-defined]  # hi < lo
    rows = _rows()
    for lo, hi in ((0, 3), (-1, 1), (2, 1)):
        with pytest.raises(IndexError):
            rows.dst(lo, hi)  # type: ignore[attr-defined]
        with pytest.raises(IndexError):
            _nodes().head(rows, lo, hi)  # type: ignore[attr-defined]
    with pytest.raises(IndexError):
        rows.bounds(2)  # type: ignore[attr-defined]
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        _rows(dst=np.array([2, 0], np.int32)).dst(0, 2)  # type: ignore[attr-defined]


@needs_native
@pytest.mark.parametrize(("column", "value"), [
    ("ids_ends", np.array([0, 1, 30], np.int32)),        # an id past the blob
    ("titles_ends", np.array([0, 2, 1], np.int64)),      # a title ending before it starts
    ("cat_of", np.array([4, -1], np.int32)),             # a category id past the categories
    ("cat_of", np.array([-2, -1], np.int32)),
])
def test_corrupt_nodes_raise(column: str, value: np.ndarray) -> None:
    nodes = _nodes(**{column: value})
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        nodes.head(_rows(), 0, 2)  # type: ignore[attr-defined]


@needs_native
def test_corrupt_id_tables_raise() -> None:
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        _nodes(table=np.array([7, 7, 7, 7], np.int32)).row("a")  # type: ignore[attr-defined]  # rows past the ids
    # full, and "zz" in none of its slots: the probe must stop (the Python table would loop forever)
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        _nodes(table=np.array([0, 1, 0, 1], np.int32)).row("zz")  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        _nodes(table=np.array([0, 1, -1], np.int32))  # not a power of two
    with pytest.raises(UnicodeDecodeError):
        _nodes(ids_blob=b"\xff\xfe\xfd").take_ids([1])  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        _nodes().row(b"a")  # type: ignore[attr-defined]


@needs_native
def test_wrong_shapes_and_types_are_refused() -> None:
    with pytest.raises(TypeError):
        _rows(dst=np.array([1, 0], np.int64))                          # int32 targets expected
    with pytest.raises(TypeError):
        _rows(dst=np.array([[1, 0]], np.int32))                        # 2-D
    with pytest.raises(TypeError):
        _rows(score=np.array([0.1, 0.2], np.float32))                            # codes expected when a table is given
    with pytest.raises(ValueError):
        _rows(reason=np.array([0], np.uint16))                         # lengths disagree
    with pytest.raises(ValueError):
        _nodes(price=np.array([1.0]))
    with pytest.raises(TypeError):
        _nodes(record=dict)                                            # not a tuple subclass
    with pytest.raises(TypeError):
        _nodes().head(object(), 0, 1)  # type: ignore[attr-defined]


@needs_native
def test_a_corrupt_file_raises_instead_of_reading_outside_the_mapping(tmp_path: Path) -> None:
    graph = make_graph([product("a", "A"), product("b", "B"), product("c", "C")],
                       [rel("a", "b", "complement", 0.9), rel("a", "c", "complement", 0.4)])
    folder = GraphIndex.write(graph, tmp_path / "v")
    dst = np.fromfile(folder / "complements.dst.bin", np.int32)
    np.full_like(dst, 1 << 30).tofile(folder / "complements.dst.bin")
    index = GraphIndex.open(folder)
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        index.complements("a", 5)
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        index.cart_addons(["a"], 5)


def test_the_package_answers_without_the_extension() -> None:
    """As when no compiler was there at install time: the import fails, every index reads in Python."""
    code = (
        "import sys; sys.modules['serve._fastindex'] = None\n"  # makes the import of serve._fastindex fail
        "from serve import native\nfrom serve.index import GraphIndex\n"
        "from tests.serve.conftest import make_graph, product, rel\n"
        "assert not native.available()\n"
        "g = make_graph([product('a', 'A'), product('b', 'B')], [rel('a', 'b', 'complement', 0.5)])\n"
        "ix = GraphIndex.from_published(g)\n"
        "assert not ix.native and ix.complements('a', 5).items[0].product_id == 'b'\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@needs_native
def test_cart_sums_and_gathers_equal_the_python_loops() -> None:
    rng = random.Random(9)
    for _ in range(50):
        lists = []
        for _ in range(rng.randint(0, 5)):
            n = rng.randint(0, 12)
            via = [rng.choice([-1, 3]) for _ in range(n)] if rng.random() < 0.5 else None
            lists.append((rng.choice(["direct", "via_category"]), [rng.randrange(20) for _ in range(n)],
                          [float(np.float32(rng.random())) for _ in range(n)], [rng.randrange(4) for _ in range(n)], via))
        banned = set(rng.sample(range(20), rng.randint(0, 6)))
        chosen = rng.sample(range(20), rng.randint(0, 8))
        assert fast.sum_by_target(lists, banned) == rows.sum_by_target(lists, banned)  # type: ignore[union-attr]
        assert fast.gather(lists, chosen) == rows.gather(lists, chosen)  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        fast.sum_by_target([("direct", [1, 2], [0.5], [0, 0], None)], set())  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        fast.gather([("direct", [1], [0.5])], [1])  # type: ignore[union-attr]
    with pytest.raises(fast.CorruptIndex):  # type: ignore[union-attr]
        _nodes().records(tuple, [0, 2], ())  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        _nodes().records(tuple, [0, 1], ([1.0],))  # type: ignore[attr-defined]
    assert _nodes().records(tuple, [1], (["x"],)) == [("bb", "B", (), None, "x")]  # type: ignore[attr-defined]
