"""GraphIndex against a brute-force Python reference on random graphs (seeded, property style).
The reference re-derives every rule from the relation list: best duplicate, symmetric substitutes,
fallbacks, filters, cart sum, exclusions and diversification. Every check runs on the index built in memory
and on the same index written as files and mapped (what the server's workers share), each read through the
C extension and in pure Python (`serve.native`)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from graph_schema.store import PublishedGraph
from graph_schema.models import Product, Relation
from serve.build import SCORE_LEVELS
from serve.index import SUBSTITUTE_FANOUT, GraphIndex
from tests.serve.conftest import READERS, make_graph, product, rel, use_native

CATEGORIES = [("E", "Cam"), ("E", "Acc"), ("E", "Sto"), ("Home",), ("Home", "Acc")]
TITLES = ["P{}", "Caméra {}", "三脚 {} 東京", "Bag {} 🎒", "Ölkanne {}"]
f32 = np.float32


def build(how: str, graph: PublishedGraph, tmp_path: Path, reader: str = "native") -> GraphIndex:
    native = use_native(reader)
    if how == "memory":
        return GraphIndex.from_published(graph, native=native)
    # "quantized": as if the graph had more distinct scores than 2-byte codes hold (the 1M-product case)
    levels = 1 if how == "quantized" else SCORE_LEVELS
    folder = tmp_path / "index" / f"{graph.manifest.version_id}-{reader}"
    return GraphIndex.open(GraphIndex.write(graph, folder, score_levels=levels), native=native)


HOW = ["memory", "mapped", "quantized"]


def stored(score: float, how: str) -> float:
    """What the index stores: float32, and on the k/65535 grid when quantized."""
    if how != "quantized":
        return float(f32(score))
    return float(f32(round(min(max(float(f32(score)), 0.0), 1.0) * 65535) / 65535))


@dataclass
class Ref:
    products: dict[str, Product]
    comp: dict[str, dict[str, float]]
    subs: dict[str, dict[str, float]]
    how: str = "memory"


def random_graph(seed: int, n: int = 60) -> tuple[list[Product], list[Relation]]:
    rng = random.Random(seed)
    products = [
        product(f"p{i:03d}", rng.choice(TITLES).format(i), rng.choice(CATEGORIES + [()]),
                rng.choice([None, round(rng.uniform(1, 100), 2)]))
        for i in range(n)
    ]
    relations = []
    for _ in range(n * 3):
        a, b = rng.sample(range(n), 2)
        kind = "complement" if rng.random() < 0.75 else "substitute"
        relations.append(rel(f"p{a:03d}", f"p{b:03d}", kind, round(rng.uniform(0.01, 1.0), 6)))
    return products, relations


def reference(products: list[Product], relations: list[Relation], how: str = "memory") -> Ref:
    comp: dict[str, dict[str, float]] = {p.id: {} for p in products}
    subs: dict[str, dict[str, float]] = {p.id: {} for p in products}
    for r in relations:
        s = stored(r.score, how)
        if r.kind == "complement":
            comp[r.source][r.target] = max(comp[r.source].get(r.target, 0.0), s)
        else:
            for a, b in ((r.source, r.target), (r.target, r.source)):
                subs[a][b] = max(subs[a].get(b, 0.0), s)
    return Ref({p.id: p for p in products}, comp, subs, how)


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def ref_candidates(ref: Ref, pid: str) -> tuple[str, list[tuple[str, float]]]:
    if ref.comp[pid]:
        return "direct", ranked(ref.comp[pid])
    top_subs = [s for s, _ in ranked(ref.subs[pid])[:SUBSTITUTE_FANOUT]]
    borrowed: dict[str, float] = {}
    for s in top_subs:
        for t, c in ref.comp[s].items():
            if t != pid and t not in top_subs:
                borrowed[t] = max(borrowed.get(t, 0.0), float(f32(c) * f32(ref.subs[pid][s])))
    if borrowed:
        return "via_substitutes", ranked(borrowed)
    cat = ref.products[pid].category
    if cat:
        sources = [q for q, p in ref.products.items() if p.category == cat and ref.comp[q]]
        totals: dict[str, float] = {}
        for q in sources:
            for t, c in ref.comp[q].items():
                totals[t] = totals.get(t, 0.0) + c
        means = {t: stored(float(f32(v / len(sources))), ref.how) for t, v in totals.items()}
        kept = [(t, s) for t, s in ranked(means)[:50] if t != pid and t not in top_subs]
        if kept:
            return "via_category", kept
    return "none", []


def passes(ref: Ref, pid: str, score: float, f: dict) -> bool:  # type: ignore[type-arg]
    p = ref.products[pid]
    if score < f.get("min_score", 0.0):
        return False
    if f.get("category") is not None and f["category"] not in p.category:
        return False
    for bound, ok in (("price_min", lambda v, b: v >= b), ("price_max", lambda v, b: v <= b)):
        if f.get(bound) is not None and (p.price is None or not ok(p.price, f[bound])):
            return False
    return pid not in f.get("exclude", ())


def random_filters(rng: random.Random, ids: list[str]) -> dict:  # type: ignore[type-arg]
    f: dict = {}  # type: ignore[type-arg]
    if rng.random() < 0.3:
        f["min_score"] = rng.uniform(0, 0.8)
    if rng.random() < 0.3:
        f["category"] = rng.choice(["E", "Acc", "Home", "Sto", "Nope"])
    if rng.random() < 0.3:
        f["price_min"] = rng.uniform(0, 50)
    if rng.random() < 0.3:
        f["price_max"] = rng.uniform(50, 100)
    if rng.random() < 0.3:
        f["exclude"] = frozenset(rng.sample(ids, 5))
    return f


def close(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("seed", range(8))
def test_lookups_match_reference(seed: int, how: str, reader: str, tmp_path: Path) -> None:
    products, relations = random_graph(seed)
    ref = reference(products, relations, how)
    ix = build(how, make_graph(products, relations), tmp_path, reader)
    rng = random.Random(1000 + seed)
    ids = [p.id for p in products]
    sources_seen = set()
    for pid in ids:
        k = rng.randint(1, 12)
        f = random_filters(rng, ids)
        source, cands = ref_candidates(ref, pid)
        want = [(t, s) for t, s in cands if passes(ref, t, s, f)][:k]
        got = ix.complements(pid, k, **f)
        assert got.source == source
        sources_seen.add(source)
        close([(n.product_id, n.score) for n in got.items], want)

        want_subs = [(t, s) for t, s in ranked(ref.subs[pid]) if passes(ref, t, s, f)][:k]
        close([(n.product_id, n.score) for n in ix.substitutes(pid, k, **f).items], want_subs)
    assert "direct" in sources_seen


def ref_cart(ref: Ref, cart: list[str], k: int, f: dict) -> list[tuple[str, float]]:  # type: ignore[type-arg]
    known = [c for c in dict.fromkeys(cart) if c in ref.products]
    banned = set(known) | {s for c in known for s in ref.subs[c]}
    totals: dict[str, float] = {}
    for c in known:
        for t, s in ref_candidates(ref, c)[1]:
            if t not in banned and passes(ref, t, s, {**f, "min_score": 0.0}):
                totals[t] = totals.get(t, 0.0) + s
    order = [(t, s) for t, s in ranked(totals) if s >= f.get("min_score", 0.0)]
    cap, per_cat, chosen, skipped = math.ceil(k / 2), {}, [], []  # type: ignore[var-annotated]
    for t, s in order:
        if len(chosen) >= k:
            break
        cat = ref.products[t].category
        if per_cat.get(cat, 0) < cap:
            per_cat[cat] = per_cat.get(cat, 0) + 1
            chosen.append(t)
        else:
            skipped.append(t)
    keep = set(chosen) | set(skipped[: max(0, k - len(chosen))])
    return [(t, s) for t, s in order if t in keep]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("seed", range(6))
def test_cart_matches_reference(seed: int, how: str, reader: str, tmp_path: Path) -> None:
    products, relations = random_graph(seed)
    ref = reference(products, relations, how)
    ix = build(how, make_graph(products, relations), tmp_path, reader)
    rng = random.Random(2000 + seed)
    ids = [p.id for p in products]
    for _ in range(40):
        cart = rng.sample(ids, rng.randint(1, 5)) + (["unknown"] if rng.random() < 0.2 else [])
        k = rng.randint(1, 12)
        f = random_filters(rng, ids)
        got = ix.cart_addons(cart, k, **f)
        want = ref_cart(ref, cart, k, f)
        close([(s.product_id, s.score) for s in got.items], want)
        for s in got.items:
            assert {c.cart_item for c in s.goes_with} <= set(cart)
            assert math.isclose(sum(c.score for c in s.goes_with), s.score, rel_tol=1e-5)


@pytest.mark.parametrize("readers", [("pure", "pure"), ("pure", "native"), ("native", "native")])
@pytest.mark.parametrize("seed", range(4))
def test_mapped_index_answers_exactly_like_the_in_memory_one(seed: int, readers: tuple[str, str], tmp_path: Path) -> None:
    """Same items, scores, reasons, vias, product views and facts, compared as whole values (in memory read
    by one path, mapped read by the other)."""
    products, relations = random_graph(seed, n=80)
    graph = make_graph(products, relations)
    memory, mapped = build("memory", graph, tmp_path, readers[0]), build("mapped", graph, tmp_path, readers[1])
    rng = random.Random(3000 + seed)
    ids = [p.id for p in products]
    assert mapped.product_count == memory.product_count and mapped.relation_counts() == memory.relation_counts()
    assert mapped.meta == memory.meta
    for pid in ids + ["unknown", ""]:
        assert (pid in mapped) == (pid in memory)
        if pid not in memory:
            continue
        assert mapped.product(pid) == memory.product(pid)
        k, f = rng.randint(1, 12), random_filters(rng, ids)
        assert mapped.complements(pid, k, **f) == memory.complements(pid, k, **f)
        assert mapped.substitutes(pid, k, **f) == memory.substitutes(pid, k, **f)
        cart = rng.sample(ids, rng.randint(1, 5)) + ["unknown"]
        assert mapped.cart_addons(cart, k, **f) == memory.cart_addons(cart, k, **f)


def test_mapped_files_are_read_only_and_shared(tmp_path: Path) -> None:
    products, relations = random_graph(0)
    folder = GraphIndex.write(make_graph(products, relations), tmp_path / "v")
    a, b = GraphIndex.open(folder), GraphIndex.open(folder)
    dst = a._a.complements.dst  # noqa: SLF001
    assert not dst.flags.writeable
    with pytest.raises(ValueError):
        dst[0] = 1
    assert a.complements("p000", 5) == b.complements("p000", 5)
    assert a.shared_bytes() == sum(f.stat().st_size for f in folder.glob("*.bin"))
