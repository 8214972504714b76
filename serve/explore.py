"""The graph explorer: one static HTML page (`/explore`, vanilla JS, no build step, nothing from a CDN) that
a merchandiser uses to check what the nightly job produced, and `/v1/search`, the product search it needs.

The page only calls the public /v1 JSON API. Search scans the in-memory index (ids and titles of the
version served), never the store; its lowered titles are built once per index and dropped with it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from weakref import WeakKeyDictionary

import polars as pl
from flask import Blueprint, Response, request

from serve.api import json_response, state
from serve.errors import ApiError
from serve.index import GraphIndex
from serve.limits import DEFAULT_SEARCH_K, MAX_QUERY, MAX_SEARCH_K

bp = Blueprint("explore", __name__)

PAGE: Final = Path(__file__).with_name("static") / "explore.html"
SEARCH_PARAMS: Final = frozenset({"q", "k"})
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,9}\s*")
Match = Literal["id", "id_prefix", "title_prefix", "title"]
_MATCHES: Final[tuple[Match, ...]] = ("id", "id_prefix", "title_prefix", "title")
"""Best first: the exact id, an id prefix, a title starting with the query, a title holding every word."""


def _page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy: only the page's own inline script (by hash) may run and
    it may only talk to this server, so a product title can never load or run anything."""
    html = PAGE.read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    )
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode("utf-8"), policy


_PAGE_BODY, _PAGE_POLICY = _page()


@bp.get("/explore")
def explore() -> Response:
    response = Response(_PAGE_BODY, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _PAGE_POLICY
    response.headers["Cache-Control"] = "no-cache"
    return response


# --- search ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchHit:
    product_id: str
    match: Match


class TitleSearch:
    """Case-insensitive search over one index's ids and titles (vectorized: one polars pass per query)."""

    def __init__(self, index: GraphIndex) -> None:
        nodes = index.nodes
        self._ids = nodes.ids
        self._frame = pl.DataFrame(
            {"id": pl.Series(nodes.ids, dtype=pl.String), "title": pl.Series(nodes.titles, dtype=pl.String)}
        ).select(
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
            pl.col("id").str.to_lowercase().alias("id"),
            pl.col("title").str.to_lowercase().alias("title"),
        )

    def search(self, query: str, k: int) -> tuple[list[SearchHit], int]:
        """Up to k hits, best first (ties in id order), and how many products matched in all."""
        text = " ".join(query.split()).lower()
        if not text:
            return [], 0
        words = text.split()
        every_word = pl.all_horizontal([pl.col("title").str.contains(w, literal=True) for w in words])
        rank = (
            pl.when(pl.col("id") == text).then(0)
            .when(pl.col("id").str.starts_with(text)).then(1)
            .when(pl.col("title").str.starts_with(text)).then(2)
            .when(every_word).then(3)
            .otherwise(None)
        )
        found = self._frame.select("row", rank.alias("rank")).drop_nulls("rank")
        best = found.sort(["rank", "row"]).head(k)
        hits = [SearchHit(self._ids[row], _MATCHES[r]) for row, r in best.iter_rows()]
        return hits, found.height


_searches: WeakKeyDictionary[GraphIndex, TitleSearch] = WeakKeyDictionary()
_lock = threading.Lock()


def search_for(index: GraphIndex) -> TitleSearch:
    """One search table per index, built on first use and dropped with the index on reload."""
    found = _searches.get(index)
    if found is None:
        with _lock:
            found = _searches.get(index)
            if found is None:
                found = _searches[index] = TitleSearch(index)
    return found


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{param}: {message}", {"parameter": param})


def parse_search_params() -> tuple[str, int]:
    args: dict[str, str] = {}
    repeated: list[str] = []
    for name, values in request.args.lists():
        if len(values) > 1:
            repeated.append(name)
        args[name] = values[0]
    unknown = sorted(set(args) - SEARCH_PARAMS)
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown query parameters: {unknown}", {"unknown": unknown})
    if repeated:
        raise ApiError(400, "invalid_parameter", f"parameters given twice: {sorted(repeated)}",
                       {"repeated": sorted(repeated)})
    query = args.get("q")
    if query is None or query == "":
        raise _bad("q", "required: an id or words of a title")
    if len(query) > MAX_QUERY:
        raise _bad("q", f"at most {MAX_QUERY} characters")
    k = DEFAULT_SEARCH_K
    raw_k = args.get("k")
    if raw_k is not None:
        if not _INTEGER.fullmatch(raw_k):
            raise _bad("k", f"not an integer: {raw_k[:50]!r}")
        k = int(raw_k)
        if not 1 <= k <= MAX_SEARCH_K:
            raise _bad("k", f"must be between 1 and {MAX_SEARCH_K}")
    return query, k


@bp.get("/v1/search")
def search() -> Response:
    query, k = parse_search_params()
    holder = state().holder
    index = holder.index
    if index is None:
        raise ApiError(503, "not_ready", "no graph index loaded yet", {"reason": holder.status().last_error})
    hits, total = search_for(index).search(query, k)
    items: list[dict[str, Any]] = []
    for hit in hits:
        product = index.product(hit.product_id)
        items.append({
            "product_id": product.id,
            "title": product.title,
            "category": list(product.category),
            "price": product.price,
            "match": hit.match,
            "counts": {"complement": product.complement_count, "substitute": product.substitute_count},
        })
    return json_response({"query": query, "version": index.version, "total": total, "items": items})
