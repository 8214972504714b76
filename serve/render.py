"""JSON rendering of neighbour lists, the hot response: each product's summary and each reason list is
serialized once per index and reused, so a request joins ready-made fragments instead of building dicts
and encoding them again. Output is the same JSON `serve.openapi` documents for NeighbourList.
"""

from __future__ import annotations

import json
import threading
from weakref import WeakKeyDictionary

from serve.index import GraphIndex, Neighbour, NeighbourList

MAX_MEMO = 250_000
"""Fragments kept per index (~150 bytes each): hot products stay cached, memory stays bounded."""
MAX_RESPONSES = 50_000
"""Whole lookup responses kept per index (~2 KB each at k=10, so <= ~100 MB per worker). Storefront traffic
is skewed to hot products; a full cache is emptied at once (cheaper than LRU bookkeeping per request)."""
ResponseKey = tuple[str, str, bytes]
"""(kind, product id, raw query string): the whole input of a lookup."""
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class Renderer:
    """Memo of JSON fragments for one index version (grows to at most its products and reason lists)."""

    def __init__(self) -> None:
        self._products: dict[str, str] = {}
        self._reasons: dict[tuple[str, ...], str] = {}
        self._responses: dict[ResponseKey, str] = {}

    def cached(self, key: ResponseKey) -> str | None:
        """A response rendered before for exactly this lookup on this index version."""
        return self._responses.get(key)

    def remember(self, key: ResponseKey, body: str) -> None:
        if len(self._responses) >= MAX_RESPONSES:
            self._responses.clear()
        self._responses[key] = body

    def _item(self, n: Neighbour) -> str:
        head = self._products.get(n.product_id)
        if head is None:
            head = (
                f'{{"product_id":{_dumps(n.product_id)},"title":{_dumps(n.title)},'
                f'"category":{_dumps(n.category)},"price":{_dumps(n.price)},"score":'
            )
            if len(self._products) < MAX_MEMO:
                self._products[n.product_id] = head
        reasons = self._reasons.get(n.reasons)
        if reasons is None:
            reasons = _dumps(n.reasons)
            if len(self._reasons) < MAX_MEMO:
                self._reasons[n.reasons] = reasons
        via = "null" if n.via is None else _dumps(n.via)
        return f'{head}{n.score!r},"reasons":{reasons},"via":{via}}}'

    def neighbours(self, result: NeighbourList, version: str) -> str:
        items = ",".join([self._item(n) for n in result.items])
        return (
            f'{{"product_id":{_dumps(result.product_id)},"kind":"{result.kind}","source":"{result.source}",'
            f'"version":{_dumps(version)},"items":[{items}]}}'
        )


_renderers: WeakKeyDictionary[GraphIndex, Renderer] = WeakKeyDictionary()
_lock = threading.Lock()


def renderer_for(index: GraphIndex) -> Renderer:
    """One renderer per index: dropped with the index when a reload replaces it."""
    found = _renderers.get(index)
    if found is None:
        with _lock:
            found = _renderers.setdefault(index, Renderer())
    return found
