"""Held-out ground truth per dataset layout, and the training behaviour that is all distillation may see.

BundleRec: test-session bundles (mates with another leaf category = complement, same leaf = substitute).
Amazon 2018: held-out products' also_buy (complement) / also_view (substitute) lists. Baskets: held-out
baskets. Nothing here runs a model; what leaves this module for the distiller is `train_interactions`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import polars as pl

from distill.ingest.catalog import InteractionReport, Interactions
from distill.ingest.datasets import AmazonData, BundleRecData, LoadedDataset
from evaluation import EvaluationError
from evaluation.split import TEST_SHARE, Split, partition, split_ids
from graph_schema.models import Product

EvalKind = Literal["complement", "substitute", "any"]
EVAL_KINDS: Final[tuple[EvalKind, ...]] = ("any", "complement", "substitute")
"""`any` = every held-out partner, scored against the served complements (the protocol's headline);
`complement` / `substitute` = the per-kind proxies, scored against the served list of that kind."""

SERVED_KIND: Final[dict[EvalKind, Literal["complement", "substitute"]]] = {
    "complement": "complement", "substitute": "substitute", "any": "complement",
}


@dataclass(frozen=True)
class Query:
    """One query product and the catalog ids that count as right answers for it."""

    product_id: str
    relevant: frozenset[str]
    group: str
    """The held-out unit it came from: bundle id, basket id, or the product id itself (Amazon)."""
    intent: str | None = None
    """The annotators' free-text intent of the bundle (BundleRec only)."""


@dataclass(frozen=True)
class EvalData:
    """One dataset split for evaluation. `train_interactions` is the ONLY behaviour the distiller gets."""

    dataset: str
    products: tuple[Product, ...]
    train_interactions: Interactions
    queries: Mapping[EvalKind, tuple[Query, ...]]
    split: Split
    unit: str
    """What was split: "session", "basket" or "product"."""
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def catalog_ids(self) -> frozenset[str]:
        return frozenset(p.id for p in self.products)


def _interactions(baskets: pl.DataFrame, source: str) -> Interactions:
    baskets = baskets.select(pl.col("basket_id").cast(pl.String), pl.col("product_id").cast(pl.String)).unique(
        maintain_order=True
    )
    report = InteractionReport(source=source, rows_read=baskets.height, kept=baskets.height)
    return Interactions(baskets=baskets, report=report)


def _group_queries(
    groups: Iterable[tuple[str, list[str]]],
    leaf: Mapping[str, str | None],
    intents: Mapping[str, str] | None = None,
    *,
    with_substitutes: bool = True,
) -> dict[EvalKind, tuple[Query, ...]]:
    """Every member of a held-out group (bundle, basket) is a query; the other members are its answers."""
    out: dict[EvalKind, list[Query]] = {kind: [] for kind in EVAL_KINDS}
    for group, members in groups:
        unique = sorted(set(members))
        intent = intents.get(group) if intents is not None else None
        for pid in unique:
            mates = [m for m in unique if m != pid]
            if not mates:
                continue
            out["any"].append(Query(pid, frozenset(mates), group, intent))
            if not with_substitutes:
                out["complement"].append(Query(pid, frozenset(mates), group, intent))
                continue
            # A product without a category cannot be sorted into complement/substitute: `any` only.
            if leaf.get(pid) is None:
                continue
            known = [m for m in mates if leaf.get(m) is not None]
            complements = frozenset(m for m in known if leaf[m] != leaf[pid])
            substitutes = frozenset(m for m in known if leaf[m] == leaf[pid])
            if complements:
                out["complement"].append(Query(pid, complements, group, intent))
            if substitutes:
                out["substitute"].append(Query(pid, substitutes, group, intent))
    return {kind: tuple(queries) for kind, queries in out.items()}


# --------------------------------------------------------------------------------------------------- BundleRec


def bundlerec_eval_data(data: BundleRecData, seed: int = 0, test_share: float = TEST_SHARE) -> EvalData:
    """Split sessions; test bundles (bundles of test sessions) become queries, training sessions behaviour."""
    if data.interactions is None:
        raise EvaluationError("BundleRec data without sessions cannot be evaluated")
    products = tuple(data.catalog.products)
    known = {p.id for p in products}
    leaf = {p.id: p.leaf_category for p in products}
    session_ids = [*data.sessions["session_id"].to_list(), *data.session_bundles["session_id"].to_list()]
    split = split_ids((str(s) for s in session_ids), seed, test_share)
    train_rows, test_rows = partition(data.interactions.baskets, "basket_id", split)

    bundle_sessions: dict[str, set[str]] = defaultdict(set)
    for session, bundle in data.session_bundles.select("session_id", "bundle_id").iter_rows():
        bundle_sessions[str(bundle)].add(str(session))
    test_bundles = {b for b, sessions in bundle_sessions.items() if sessions <= split.test}
    # A bundle linked to sessions on both sides would hand its answers to training: leave it out, counted.
    mixed = sum(1 for sessions in bundle_sessions.values() if sessions & split.test and sessions - split.test)
    members: dict[str, list[str]] = defaultdict(list)
    outside = 0
    for bundle, pid in data.bundles.select("bundle_id", "product_id").iter_rows():
        if str(bundle) in test_bundles:
            if str(pid) in known:
                members[str(bundle)].append(str(pid))
            else:
                outside += 1
    intents = {str(b): str(i) for b, i in data.intents.select("bundle_id", "intent").iter_rows() if i}
    queries = _group_queries(sorted(members.items()), leaf, intents)
    return EvalData(
        dataset="bundlerec", products=products,
        train_interactions=_interactions(train_rows, f"{data.interactions.report.source} (training sessions)"),
        queries=queries, split=split, unit="session",
        stats={"train_sessions": len(split.train), "test_sessions": len(split.test),
               "train_rows": train_rows.height, "test_rows": test_rows.height, "test_bundles": len(members),
               "bundles_on_both_sides": mixed, "bundle_items_outside_catalog": outside},
    )


# ------------------------------------------------------------------------------------------------- Amazon 2018


def amazon_eval_data(data: AmazonData, seed: int = 0, test_share: float = TEST_SHARE) -> EvalData:
    """Split products. Held-out products' also_buy/also_view lists are the answers; the distiller gets only
    the training products' also_buy lists as baskets ({product} + its also_buy targets), with every
    held-out product removed from them, so no held-out list leaks back through a symmetric edge."""
    products = tuple(data.catalog.products)
    split = split_ids((p.id for p in products), seed, test_share)
    edges = data.edges.select(pl.col("source").cast(pl.String), pl.col("target").cast(pl.String), "kind")
    by_kind: dict[str, dict[str, set[str]]] = {"also_buy": defaultdict(set), "also_view": defaultdict(set)}
    for source, target, kind in edges.iter_rows():
        if kind in by_kind and source != target:
            by_kind[kind][source].add(target)
    queries: dict[EvalKind, list[Query]] = {kind: [] for kind in EVAL_KINDS}
    for pid in sorted(split.test):
        buy, view = by_kind["also_buy"].get(pid, set()), by_kind["also_view"].get(pid, set())
        if buy:
            queries["complement"].append(Query(pid, frozenset(buy), pid))
        if view:
            queries["substitute"].append(Query(pid, frozenset(view), pid))
        if buy | view:
            queries["any"].append(Query(pid, frozenset(buy | view), pid))
    basket_ids: list[str] = []
    basket_items: list[str] = []
    for source in sorted(split.train):
        targets = sorted(t for t in by_kind["also_buy"].get(source, ()) if t in split.train)
        if targets:
            for pid in (source, *targets):
                basket_ids.append(f"also_buy:{source}")
                basket_items.append(pid)
    baskets = pl.DataFrame({"basket_id": basket_ids, "product_id": basket_items},
                           schema={"basket_id": pl.String, "product_id": pl.String})
    return EvalData(
        dataset="amazon2018", products=products,
        train_interactions=_interactions(baskets, f"{data.catalog.report.source} (also_buy of training products)"),
        queries={kind: tuple(q) for kind, q in queries.items()}, split=split, unit="product",
        stats={"train_products": len(split.train), "test_products": len(split.test),
               "train_baskets": len(set(basket_ids)), "edges_outside_file": data.edges_outside},
    )


# ----------------------------------------------------------------------------------------------------- baskets


def basket_eval_data(
    data: LoadedDataset, name: str, seed: int = 0, test_share: float = TEST_SHARE, *, basket_products_only: bool = True
) -> EvalData:
    """Split baskets; every item of a held-out basket is a query, the rest of that basket its answers
    (complement and `any`; baskets carry no substitute signal). `basket_products_only` keeps the catalog to
    products seen in some basket (Instacart lists 49,688 products, 17,267 of them ever bought here)."""
    if data.interactions is None or data.interactions.baskets.height == 0:
        raise EvaluationError(f"{name}: no baskets to evaluate against")
    baskets = data.interactions.baskets
    split = split_ids(baskets["basket_id"].unique().to_list(), seed, test_share)
    train_rows, test_rows = partition(baskets, "basket_id", split)
    products = tuple(data.catalog.products)
    if basket_products_only:
        seen = set(baskets["product_id"].unique().to_list())
        products = tuple(p for p in products if p.id in seen)
    groups: dict[str, list[str]] = defaultdict(list)
    for basket, pid in test_rows.iter_rows():
        groups[basket].append(pid)
    queries = _group_queries(sorted(groups.items()), {}, None, with_substitutes=False)
    return EvalData(
        dataset=name, products=products,
        train_interactions=_interactions(train_rows, f"{data.interactions.report.source} (training baskets)"),
        queries=queries, split=split, unit="basket",
        stats={"train_baskets": len(split.train), "test_baskets": len(split.test), "train_rows": train_rows.height,
               "test_rows": test_rows.height, "catalog_products": len(products)},
    )
