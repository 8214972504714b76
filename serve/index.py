"""`GraphIndex`: an immutable, in-memory projection of one published graph version, and its lookups.

No store, no model. Products are int32 rows; each relation kind is a CSR (indptr, target, score, reason
id) sorted by score descending, so a lookup is a slice, a mask and a head. Building lives in `serve.build`,
the packed file layout every worker maps read-only in `serve.mapped`. A reload maps a new GraphIndex
beside the old one; nothing here is ever mutated.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np

from graph_schema.store import PublishedGraph
from graph_schema.kinds import RelationKind
from serve.build import (
    F32,
    SCORE_LEVELS,
    I32,
    Csr,
    EdgeColumns,
    IndexArrays,
    IndexMeta,
    NodeColumns,
    build_arrays,
    columns_from_published,
    parse_json_object,
)
from serve.mapped import IdTable, map_index, packed_in_memory, write_index
from serve.native import NodeReader, RowReader, cart_ops, node_reader, rows_reader
from serve.rows import Candidates, ScoreTables, round_scores

Source = Literal["direct", "via_substitutes", "via_category", "none"]
"""Where complements came from: the product's own edges, the complements of its substitutes, or what
products of its category are complemented by; `none` when all three are empty."""

SUBSTITUTE_FANOUT = 5
"""Substitutes whose complements a product without complement edges borrows."""


class UnknownProduct(KeyError):
    """The product id is not in this graph version."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Applied to candidate targets. Price bounds exclude products without a price."""

    min_score: float = 0.0
    category: str | None = None
    """Matches any level of the target's category path (so "Cameras" matches "Electronics > Cameras")."""
    price_min: float | None = None
    price_max: float | None = None
    exclude: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        return (
            self.min_score <= 0
            and self.category is None
            and self.price_min is None
            and self.price_max is None
            and not self.exclude
        )


NO_FILTERS = Filters()


class Neighbour(NamedTuple):
    product_id: str
    title: str
    category: tuple[str, ...]
    price: float | None
    score: float
    reasons: tuple[str, ...]
    via: str | None
    """The substitute or same-category product whose edge lent this candidate; None when direct."""


@dataclass(frozen=True, slots=True)
class NeighbourList:
    product_id: str
    kind: RelationKind
    source: Source
    items: tuple[Neighbour, ...]


class CartContribution(NamedTuple):
    cart_item: str
    score: float
    reasons: tuple[str, ...]
    source: Source
    via: str | None


class CartSuggestion(NamedTuple):
    product_id: str
    title: str
    category: tuple[str, ...]
    price: float | None
    score: float
    """Sum of the complement scores towards every cart item it goes with (can exceed 1)."""
    goes_with: tuple[CartContribution, ...]


@dataclass(frozen=True, slots=True)
class CartResult:
    cart: tuple[str, ...]
    unknown: tuple[str, ...]
    items: tuple[CartSuggestion, ...]


@dataclass(frozen=True, slots=True)
class ProductView:
    id: str
    title: str
    description: str | None
    brand: str | None
    category: tuple[str, ...]
    price: float | None
    attributes: dict[str, str]
    enriched: dict[str, str]
    keyphrases: tuple[str, ...]
    complement_count: int
    substitute_count: int


@dataclass(frozen=True, slots=True)
class _Candidates:
    source: Source
    dst: I32
    score: F32
    reason: I32
    via: I32 | None  # None = all direct; else -1 = direct, row = the product that lent the edge


def _by_score_then_item(hit: tuple[float, int, int, int]) -> tuple[float, int]:
    return -hit[0], hit[1]


_R = TypeVar("_R", bound=tuple[Any, ...])
_EMPTY_I32 = np.zeros(0, np.int32)
_EMPTY_F32 = np.zeros(0, np.float32)


class GraphIndex:
    """Read-only lookups over one graph version. Safe to share between threads."""

    __slots__ = ("_a", "_rows", "_cat_by_name", "_cat_masks", "_memory", "_shared", "_cat_of", "_price_of",
                 "_comp", "_subs", "_tables_bytes", "_cats", "_fast", "_find", "_take_ids", "_take_titles",
                 "_sum_by_target", "_gather",
                 "__weakref__")

    def __init__(self, arrays: IndexArrays, rows: IdTable, shared_bytes: int, *, native: bool = True) -> None:
        """Over packed arrays (see `serve.mapped`): use `open`, `from_published` or `from_columns`.
        `native`: read through the C extension when it is built (`serve.native`); False = pure Python."""
        self._a = arrays
        self._rows = rows
        self._shared = shared_bytes
        # memoryviews over the (mapped) columns: a scalar read is a plain Python int/float, several times
        # cheaper than numpy indexing, and for ten rows cheaper than a gather plus tolist()
        self._cat_of = np.ascontiguousarray(arrays.nodes.category_id, dtype=np.int32).data
        self._cats = (*arrays.nodes.categories, ())  # category id -1 (uncategorized) indexes the last: ()
        self._price_of = np.ascontiguousarray(arrays.nodes.price, dtype=np.float64).data
        table = arrays.complements.score_table
        tables = ScoreTables(table) if table is not None else None
        self._tables_bytes = tables.nbytes if tables is not None else 0
        n = len(arrays.nodes.ids)
        self._comp: RowReader = rows_reader(arrays.complements, tables, n, native)
        self._subs: RowReader = rows_reader(arrays.substitutes, tables, n, native)
        self._fast: NodeReader | None = node_reader(arrays, rows, Neighbour) if native else None
        fast, ids = self._fast, arrays.nodes.ids
        self._find = fast.row if fast is not None else rows.get
        self._take_ids = fast.take_ids if fast is not None else ids.take  # type: ignore[attr-defined]
        self._take_titles = fast.take_titles if fast is not None else arrays.nodes.titles.take  # type: ignore[attr-defined]
        self._sum_by_target, self._gather = cart_ops(fast is not None)
        by_name: dict[str, list[int]] = {}
        for cat_id, path in enumerate(arrays.nodes.categories):
            for name in set(path):
                by_name.setdefault(name, []).append(cat_id)
        self._cat_by_name = {name: np.array(ids, np.int32) for name, ids in by_name.items()}
        self._cat_masks: dict[str, np.ndarray] = {}
        self._memory: int | None = None
        self.memory_bytes()  # once, at build time, not in the first /metrics request

    # --- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_published(cls, graph: PublishedGraph, *, native: bool = True) -> GraphIndex:
        """Built and packed in this process's memory (no files)."""
        return cls(*packed_in_memory(build_arrays(*columns_from_published(graph))), native=native)

    @classmethod
    def from_columns(cls, meta: IndexMeta, nodes: NodeColumns, edges: EdgeColumns, *, native: bool = True) -> GraphIndex:
        """The same vectorized path as `from_published`, for callers that already hold arrays."""
        return cls(*packed_in_memory(build_arrays(meta, nodes, edges)), native=native)

    @staticmethod
    def write(graph: PublishedGraph, folder: Path, *, score_levels: int = SCORE_LEVELS) -> Path:
        """Build the index of `graph` and write it as the files `open` maps."""
        return write_index(build_arrays(*columns_from_published(graph), score_levels=score_levels), folder)

    @staticmethod
    def write_columns(meta: IndexMeta, nodes: NodeColumns, edges: EdgeColumns, folder: Path) -> Path:
        return write_index(build_arrays(meta, nodes, edges), folder)

    @classmethod
    def open(cls, folder: Path, *, native: bool = True) -> GraphIndex:
        """Map an index folder read-only: every process that opens it shares one copy in the page cache."""
        return cls(*map_index(folder), native=native)

    # --- facts -----------------------------------------------------------------------------------------
    @property
    def native(self) -> bool:
        """True when lookups read through the C extension (`serve.native`), False in pure Python."""
        return self._fast is not None

    @property
    def meta(self) -> IndexMeta:
        return self._a.meta

    @property
    def version(self) -> str:
        return self._a.meta.version

    @property
    def created_at(self) -> datetime | None:
        return self._a.meta.created_at

    @property
    def product_count(self) -> int:
        return len(self._a.nodes.ids)

    @property
    def nodes(self) -> NodeColumns:
        """The product columns (ids sorted, titles, categories), read-only: what title search scans."""
        return self._a.nodes

    def relation_counts(self) -> dict[RelationKind, int]:
        """Directed edges held; a substitute pair counts twice (both directions are served)."""
        return {"complement": len(self._a.complements.dst), "substitute": len(self._a.substitutes.dst)}

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, str) and self._find(product_id) >= 0

    def memory_bytes(self) -> int:
        """The packed arrays (mapped: one copy however many workers) plus this process's Python objects
        (interned reasons and categories; computed once)."""
        if self._memory is None:
            a = self._a
            total = self._shared + self._tables_bytes
            total += sum(sum(sys.getsizeof(s) for s in r) + sys.getsizeof(r) for r in a.reasons)
            total += sum(sum(sys.getsizeof(s) for s in c) + sys.getsizeof(c) for c in a.nodes.categories)
            self._memory = total
        return self._memory

    def shared_bytes(self) -> int:
        """Bytes of the packed arrays alone (what the mapped files hold)."""
        return self._shared

    # --- lookups ---------------------------------------------------------------------------------------
    def _row(self, product_id: str) -> int:
        row: int = self._find(product_id)
        if row < 0:
            raise UnknownProduct(product_id)
        return row

    def product(self, product_id: str) -> ProductView:
        row = self._row(product_id)
        n, d = self._a.nodes, self._a.nodes.details
        return ProductView(
            id=product_id,
            title=n.titles[row],
            description=d.description[row] if d else None,
            brand=d.brand[row] if d else None,
            category=self._category(row),
            price=self._price(row),
            attributes=parse_json_object(d.attributes_json[row]) if d else {},
            enriched=parse_json_object(d.enriched_json[row]) if d else {},
            keyphrases=tuple(d.keyphrases[row] or ()) if d else (),
            complement_count=self._comp.degree(row),
            substitute_count=self._subs.degree(row),
        )

    def complements(
        self,
        product_id: str,
        k: int,
        *,
        min_score: float = 0.0,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> NeighbourList:
        """Top-k complements. Own edges when the product has any; otherwise those of its substitutes
        (score x substitute score); otherwise its category's list (see `serve.build`)."""
        row = self._row(product_id)
        exclude = frozenset(exclude)
        if min_score <= 0 and category is None and price_min is None and price_max is None and not exclude:
            lo, hi = self._comp.bounds(row)
            if hi > lo:  # the common request: own edges, already ranked, just cut
                return NeighbourList(product_id, "complement", "direct", self._head(self._comp, lo, min(hi, lo + k)))
        filters = Filters(min_score, category, price_min, price_max, exclude)
        cand = self._complement_candidates(row)
        # own edges never point back (self-loops are dropped at build); fallbacks could
        banned = set() if cand.source == "direct" else {row}
        return NeighbourList(product_id, "complement", cand.source, self._top(cand, k, filters, banned))

    def substitutes(
        self,
        product_id: str,
        k: int,
        *,
        min_score: float = 0.0,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> NeighbourList:
        """Top-k substitutes from the product's own edges (no fallback: a guessed substitute misleads)."""
        row = self._row(product_id)
        exclude = frozenset(exclude)
        if min_score <= 0 and category is None and price_min is None and price_max is None and not exclude:
            lo, hi = self._subs.bounds(row)
            return NeighbourList(product_id, "substitute", "direct", self._head(self._subs, lo, min(hi, lo + k)))
        filters = Filters(min_score, category, price_min, price_max, exclude)
        dst, score, reason = self._slice(self._a.substitutes, row)
        cand = _Candidates("direct", dst, score, reason, None)
        return NeighbourList(product_id, "substitute", "direct", self._top(cand, k, filters, set()))

    def cart_addons(
        self,
        cart_ids: Sequence[str],
        k: int,
        *,
        min_score: float = 0.0,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> CartResult:
        """Complements of the whole cart. A candidate's score is the SUM of its complement scores towards
        the cart items (going with two items beats going with one); cart items and every substitute of a
        cart item are dropped; at most ceil(k/2) suggestions per category unless too few categories are
        left to fill k; `min_score` applies to the summed score."""
        filters = Filters(0.0, category, price_min, price_max, frozenset(exclude))
        cart: list[str] = list(dict.fromkeys(cart_ids))
        if self._fast is not None:  # the same rules in one C call (serve/_fastcart.c); None: answer below
            plain = filters.is_empty()
            got = self._fast.cart(CartSuggestion, CartContribution, self._comp, self._subs,  # type: ignore[arg-type]
                                  cart, k, float(min_score), plain, partial(self._cart_list, filters, plain))
            if got is not None:  # C Rows (native), CartSuggestion records
                return CartResult(*got)  # type: ignore[arg-type]
        get_row = self._find
        found = [(pid, get_row(pid)) for pid in cart]
        known = [pid for pid, row in found if row >= 0]
        unknown = tuple(pid for pid, row in found if row < 0)
        rows = [row for _, row in found if row >= 0]
        if not rows:
            return CartResult((), unknown, ())
        banned = self._subs.targets(rows)
        banned.update(rows)
        # candidate lists are short (tens per item): plain lists, summed into a dict (in C when built)
        lists = self._cart_lists(rows, filters)
        totals = self._sum_by_target(lists, banned)
        # score descending, ties by row: sort the rows, then stably by score alone (list.sort's fast paths
        # for plain ints and plain floats, no tuples)
        ranked = sorted(totals) if min_score <= 0 else sorted(t for t, total in totals.items() if total >= min_score)
        ranked.sort(key=totals.__getitem__, reverse=True)
        chosen = self._diversify(ranked, k)
        # the contributions of the chosen few only, in item then list order (then sorted, stably)
        hits = self._gather(lists, chosen)
        reasons, ids = self._a.reasons, self._a.nodes.ids
        new = tuple.__new__  # NamedTuple's own __new__ is a Python function; this is the C one
        goes_with: list[tuple[CartContribution, ...]] = []
        for t in chosen:
            h = hits[t]
            if len(h) > 1:
                h.sort(key=_by_score_then_item)
            goes_with.append(tuple([
                new(CartContribution, (known[i], sc, reasons[r], lists[i][0], ids[v] if v >= 0 else None))
                for sc, i, r, v in h
            ]))
        items = self._records(CartSuggestion, chosen, ([totals[t] for t in chosen], goes_with))
        return CartResult(tuple(known), unknown, tuple(items))

    def _cart_lists(self, rows: list[int], filters: Filters) -> Candidates:
        """Per cart item: (source, targets, float32 scores, reason ids, lenders or None), filtered."""
        plain = filters.is_empty()
        return [self._cart_list(filters, plain, row) for row in rows]

    def _cart_list(
        self, filters: Filters, plain: bool, row: int
    ) -> tuple[str, list[int], list[float], list[int], list[int] | None]:
        """One cart item's candidate list (`plain`: `filters` are empty); the C cart asks for the lists it
        does not read itself (fallbacks, filters) through this."""
        comp = self._comp
        lo, hi = comp.bounds(row)
        if plain and hi > lo:
            return ("direct", comp.dst(lo, hi), comp.raw_scores(lo, hi), comp.reasons(lo, hi), None)
        cand = self._complement_candidates(row)
        dst, score, reason, via = cand.dst, cand.score, cand.reason, cand.via
        if not plain:
            keep = np.flatnonzero(self._mask(dst, score, filters, set()))
            dst, score, reason = dst[keep], score[keep], reason[keep]
            via = via[keep] if via is not None else None
        return (cand.source, dst.tolist(), score.tolist(), reason.tolist(), via.tolist() if via is not None else None)

    # --- internals -------------------------------------------------------------------------------------
    @staticmethod
    def _slice(csr: Csr, row: int) -> tuple[I32, F32, I32]:
        lo, hi = int(csr.indptr[row]), int(csr.indptr[row + 1])
        return csr.dst[lo:hi], csr.scores(lo, hi), csr.reason_id[lo:hi]

    def _category(self, row: int) -> tuple[str, ...]:
        c: int = self._cat_of[row]
        return self._a.nodes.categories[c] if c >= 0 else ()

    def _price(self, row: int) -> float | None:
        p: float = self._price_of[row]
        return None if p != p else p

    def _complement_candidates(self, row: int) -> _Candidates:
        comp = self._a.complements
        dst, score, reason = self._slice(comp, row)
        if len(dst):
            return _Candidates("direct", dst, score, reason, None)
        sub_dst, sub_score, _ = self._slice(self._a.substitutes, row)
        sub_dst, sub_score = sub_dst[:SUBSTITUTE_FANOUT], sub_score[:SUBSTITUTE_FANOUT]
        parts = [(s, ss, *self._slice(comp, int(s))) for s, ss in zip(sub_dst, sub_score)]
        parts = [p for p in parts if len(p[2])]
        if parts:
            dst = np.concatenate([p[2] for p in parts])
            score = np.concatenate([p[3] * p[1] for p in parts]).astype(np.float32)
            reason = np.concatenate([p[4] for p in parts])
            via = np.concatenate([np.full(len(p[2]), p[0], np.int32) for p in parts])
            keep = (dst != row) & ~np.isin(dst, sub_dst)
            dst, score, reason, via = dst[keep], score[keep], reason[keep], via[keep]
            if len(dst):
                # best path per target, then score order (ties: target row)
                order = np.lexsort((dst, -score))
                _, first = np.unique(dst[order], return_index=True)
                best = order[np.sort(first)]
                best = best[np.lexsort((dst[best], -score[best]))]
                return _Candidates("via_substitutes", dst[best], score[best], reason[best], via[best])
        cat = int(self._a.nodes.category_id[row])
        if cat >= 0:
            cc = self._a.category_complements
            lo, hi = int(cc.indptr[cat]), int(cc.indptr[cat + 1])
            assert cc.via is not None
            dst, score, reason, via = cc.dst[lo:hi], cc.scores(lo, hi), cc.reason_id[lo:hi], cc.via[lo:hi]
            keep = (dst != row) & ~np.isin(dst, sub_dst)
            if keep.any():
                return _Candidates("via_category", dst[keep], score[keep], reason[keep], via[keep])
        return _Candidates("none", _EMPTY_I32, _EMPTY_F32, _EMPTY_I32, _EMPTY_I32)

    def _mask(self, dst: I32, score: F32, f: Filters, banned: set[int]) -> np.ndarray:
        mask = np.ones(len(dst), dtype=bool)
        if f.min_score > 0:
            mask &= score >= np.float64(f.min_score)  # a huge bound must not overflow float32
        if f.category is not None:
            mask &= self._category_mask(f.category)[self._a.nodes.category_id[dst]]
        if f.price_min is not None or f.price_max is not None:
            price = self._a.nodes.price[dst]
            with np.errstate(invalid="ignore"):
                if f.price_min is not None:
                    mask &= price >= f.price_min
                if f.price_max is not None:
                    mask &= price <= f.price_max
        rows = banned | {r for r in map(self._find, f.exclude) if r >= 0}
        if len(rows) <= 8:  # a few comparisons beat np.isin's sort on short candidate lists
            for banned_row in rows:
                mask &= dst != banned_row
        else:
            mask &= ~np.isin(dst, np.fromiter(rows, np.int32, len(rows)))
        return mask

    def _category_mask(self, name: str) -> np.ndarray:
        """Bool per category id (+1 slot so id -1, uncategorized, indexes a False), cached per name:
        a lookup costs one gather instead of an np.isin sort."""
        mask = self._cat_masks.get(name)
        if mask is None:
            mask = np.zeros(len(self._a.nodes.categories) + 1, dtype=bool)
            mask[self._cat_by_name.get(name, _EMPTY_I32)] = True
            mask.flags.writeable = False
            if len(self._cat_masks) < 4096:  # bounded: category names come from requests
                self._cat_masks[name] = mask
        return mask

    def _top(self, cand: _Candidates, k: int, f: Filters, banned: set[int]) -> tuple[Neighbour, ...]:
        via: I32 | None
        if f.is_empty() and not banned:  # the common request: already ranked, just cut
            dst, score, reason, via = cand.dst[:k], cand.score[:k], cand.reason[:k], cand.via
            via = via[:k] if via is not None else None
        else:
            keep = np.flatnonzero(self._mask(cand.dst, cand.score, f, banned))[:k]
            dst, score, reason = cand.dst[keep], cand.score[keep], cand.reason[keep]
            via = cand.via[keep] if cand.via is not None else None
        rows = dst.tolist()
        return self._neighbours(rows, round_scores(score), reason.tolist(), via.tolist() if via is not None else None)

    def _head(self, csr: RowReader, lo: int, hi: int) -> tuple[Neighbour, ...]:
        """Edges lo..hi of a CSR as they are stored (already ranked)."""
        if self._fast is not None:
            return self._fast.head(csr, lo, hi)  # type: ignore[arg-type, return-value]  # a C Rows, C records
        return self._neighbours(csr.dst(lo, hi), csr.rounded_scores(lo, hi), csr.reasons(lo, hi), csr.via(lo, hi))

    def _neighbours(
        self, rows: list[int], scores: list[float], reason_ids: list[int], vias: list[int] | None
    ) -> tuple[Neighbour, ...]:
        """Decode only the rows returned: ids, titles, categories, prices and reasons of these few. Field by
        field in list comprehensions, then the tuples in C (`map` of tuple.__new__ over `zip`): NamedTuple's
        own __new__ is a Python function, and a generator frame per row costs as much as the fields.
        The C reader does the same in one call (`serve.native`)."""
        if self._fast is not None:
            return self._fast.neighbours(rows, scores, reason_ids, vias)  # type: ignore[return-value]
        nodes, reasons, cats = self._a.nodes, self._a.reasons, self._cats
        ids, cat_of, price_of = nodes.ids, self._cat_of, self._price_of
        n = len(rows)
        prices = [price_of[t] for t in rows]
        return tuple(map(tuple.__new__, repeat(Neighbour, n), zip(
            ids.take(rows),  # type: ignore[attr-defined]
            nodes.titles.take(rows),  # type: ignore[attr-defined]
            [cats[cat_of[t]] for t in rows],
            [None if p != p else p for p in prices],  # NaN = no price
            scores,
            [reasons[r] for r in reason_ids],
            repeat(None, n) if vias is None else [ids[v] if v >= 0 else None for v in vias],
        )))

    def _records(self, record: type[_R], rows: list[int], columns: tuple[list[Any], ...]) -> list[_R]:
        """record(id, title, category, price, *(column[i] for column in columns)) per row (C when built)."""
        if self._fast is not None:
            return self._fast.records(record, rows, columns)  # type: ignore[return-value]
        cats, cat_of, price_of = self._cats, self._cat_of, self._price_of
        prices = [price_of[t] for t in rows]
        return list(map(tuple.__new__, repeat(record, len(rows)), zip(
            self._take_ids(rows), self._take_titles(rows), [cats[cat_of[t]] for t in rows],
            [None if p != p else p for p in prices], *columns,
        )))

    def _diversify(self, ranked: list[int], k: int) -> list[int]:
        """At most ceil(k/2) per category path (uncategorized products share one bucket); when the cap
        leaves fewer than k, the best skipped candidates fill the rest in score order."""
        cap = math.ceil(k / 2)
        cat_of = self._cat_of
        per_cat: dict[int, int] = {}
        chosen: list[int] = []
        skipped: list[int] = []
        for t in ranked:
            if len(chosen) >= k:
                break
            c = cat_of[t]
            if per_cat.get(c, 0) < cap:
                per_cat[c] = per_cat.get(c, 0) + 1
                chosen.append(t)
            else:
                skipped.append(t)
        if len(chosen) < k and skipped:
            filled = set(chosen) | set(skipped[: k - len(chosen)])
            chosen = [t for t in ranked if t in filled]
        return chosen

