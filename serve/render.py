"""JSON rendering of neighbour lists, the hot response: each product's summary and each reason list is
serialized once per index and reused, so a request joins ready-made fragments instead of building dicts
and encoding them again. Output is the same JSON `serve.openapi` documents for NeighbourList.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from weakref import WeakKeyDictionary

from serve.index import GraphIndex, Neighbour, NeighbourList

MAX_MEMO = 250_000
"""Fragments kept per index (~150 bytes each): hot products stay cached, memory stays bounded."""
RESPONSE_CACHE_BYTES = 64 * 1024 * 1024
"""Budget of the whole-response cache per index (per worker process): bodies, keys and bookkeeping."""
_ENTRY_OVERHEAD = 240
"""Bytes per cached response beyond its body and id: the key tuple, the OrderedDict node and slot."""
ResponseKey = tuple[str, str, Hashable]
"""(kind, product id, parsed lookup parameters): the whole input of a lookup, so `k=3&min_score=0.1` and
`min_score=0.1&k=3` (or `k=03`) share one rendering. The API also files each validated raw query string as
an alias (kind, id, bytes) of the same body, to skip parsing on a hit; aliases are LRU entries like the
others and are charged the full body size, so the byte bound holds whatever the mix."""
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_string: Callable[[str], str] = json.encoder.encode_basestring
"""What `_dumps` does with a str (ensure_ascii=False), minus JSONEncoder.encode's Python-level dispatch."""


def _number(value: float | None) -> str:
    """`_dumps` of a price: float repr, null for None (and its ValueError for a non-finite number)."""
    if value is None:
        return "null"
    return float.__repr__(value) if type(value) is float and math.isfinite(value) else _dumps(value)


def _strings(values: tuple[str, ...]) -> str:
    """`_dumps` of a tuple of strings (a category path, a reason list), byte for byte."""
    return "[" + ",".join(map(_string, values)) + "]"


def _entry_bytes(key: ResponseKey, body: str) -> int:
    params = key[2]
    if isinstance(params, bytes):
        return sys.getsizeof(body) + sys.getsizeof(key[1]) + sys.getsizeof(params) + _ENTRY_OVERHEAD
    extra = sum(sys.getsizeof(v) for v in getattr(params, "__dict__", {}).values() if isinstance(v, str))
    exclude = getattr(params, "exclude", ())
    extra += sum(sys.getsizeof(v) + 16 for v in exclude) + (sys.getsizeof(exclude) if exclude else 0)
    return sys.getsizeof(body) + sys.getsizeof(key[1]) + extra + _ENTRY_OVERHEAD


class Renderer:
    """Memo of JSON fragments for one index version (grows to at most its products and reason lists), and
    an LRU cache of whole responses bounded in bytes: a flood of distinct parameters evicts the coldest
    entries one by one, never the hot ones all at once."""

    def __init__(self, max_response_bytes: int = RESPONSE_CACHE_BYTES) -> None:
        self._products: dict[str, str] = {}
        self._reasons: dict[tuple[str, ...], str] = {}
        self._responses: OrderedDict[ResponseKey, tuple[str, int]] = OrderedDict()
        self._budget = max_response_bytes
        self._bytes = 0
        self._lock = threading.Lock()  # gthread workers share one renderer between threads

    @property
    def response_bytes(self) -> int:
        """Accounted size of the cached responses (always <= the budget)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._responses)

    def keys(self) -> list[ResponseKey]:
        """Cached keys, coldest first."""
        with self._lock:
            return list(self._responses)

    def cached(self, key: ResponseKey) -> str | None:
        """A response rendered before for exactly this lookup on this index version."""
        with self._lock:
            found = self._responses.get(key)
            if found is None:
                return None
            self._responses.move_to_end(key)
            return found[0]

    def remember(self, key: ResponseKey, body: str) -> None:
        size = _entry_bytes(key, body)
        if size > self._budget // 8:
            return  # one huge answer (k = max_k, long reasons) must not push out many hot ones
        with self._lock:
            old = self._responses.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            while self._responses and self._bytes + size > self._budget:
                _, (_, freed) = self._responses.popitem(last=False)
                self._bytes -= freed
            self._responses[key] = (body, size)
            self._bytes += size

    def _item(self, n: Neighbour) -> str:
        head = self._products.get(n.product_id)
        if head is None:
            head = (
                f'{{"product_id":{_string(n.product_id)},"title":{_string(n.title)},'
                f'"category":{_strings(n.category)},"price":{_number(n.price)},"score":'
            )
            if len(self._products) < MAX_MEMO:
                self._products[n.product_id] = head
        reasons = self._reasons.get(n.reasons)
        if reasons is None:
            reasons = _strings(n.reasons)
            if len(self._reasons) < MAX_MEMO:
                self._reasons[n.reasons] = reasons
        via = "null" if n.via is None else _string(n.via)
        return f'{head}{n.score!r},"reasons":{reasons},"via":{via}}}'

    def neighbours(self, result: NeighbourList, version: str) -> str:
        items = ",".join([self._item(n) for n in result.items])
        return (
            f'{{"product_id":{_string(result.product_id)},"kind":"{result.kind}","source":"{result.source}",'
            f'"version":{_string(version)},"items":[{items}]}}'
        )


_renderers: WeakKeyDictionary[GraphIndex, Renderer] = WeakKeyDictionary()
_lock = threading.Lock()


def renderer_for(index: GraphIndex, max_response_bytes: int | None = None) -> Renderer:
    """One renderer per index: dropped with the index when a reload replaces it."""
    found = _renderers.get(index)
    if found is None:
        with _lock:
            found = _renderers.setdefault(index, Renderer(max_response_bytes or RESPONSE_CACHE_BYTES))
    return found
