"""The HTTP API: one Blueprint of JSON endpoints, answered from the in-memory `GraphIndex` only (no
store, no Cypher, no model at request time). Query strings and bodies are validated here, at the seam;
anything malformed is a 400 with the error shape of `serve.errors`.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from werkzeug.datastructures import MultiDict

from serve.errors import ApiError, SourceUnavailable, error_response
from serve.index import CartResult, GraphIndex, NeighbourList, UnknownProduct
from serve.loader import IndexHolder
from serve.metrics import GraphGauges, Metrics
from serve.openapi import openapi_spec
from serve.render import renderer_for
from serve.settings import ServeSettings

bp = Blueprint("shelfgraph", __name__)

MAX_EXCLUDE = 500
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,9}\s*")
LOOKUP_PARAMS = frozenset({"k", "min_score", "category", "price_min", "price_max", "exclude"})

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

MAX_ID_LENGTH = 256
"""The longest catalog id (graph_schema.models.ProductId); a longer one cannot name a product."""
_Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
"""Taken verbatim: catalog ids never carry edge whitespace, so " cam1" is simply unknown."""


def _check_id(product_id: str) -> None:
    if len(product_id) > MAX_ID_LENGTH:
        raise ApiError(400, "invalid_parameter", f"product_id: at most {MAX_ID_LENGTH} characters, got {len(product_id)}",
                       {"parameter": "product_id", "max_length": MAX_ID_LENGTH})


@dataclass(frozen=True)
class ServeState:
    """What the blueprint needs, kept on the app (app.extensions["shelfgraph"])."""

    settings: ServeSettings
    holder: IndexHolder
    metrics: Metrics


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """Serialized with the C encoder straight into a Response: the hot path skips Flask's JSON provider."""
    return Response(_dumps(body), status=status, mimetype="application/json")


def state() -> ServeState:
    return current_app.extensions["shelfgraph"]  # type: ignore[no-any-return]


def _index() -> GraphIndex:
    index = state().holder.index
    if index is None:
        status = state().holder.status()
        raise ApiError(503, "not_ready", "no graph index loaded yet", {"reason": status.last_error})
    return index


# --- query-string parsing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LookupParams:
    k: int
    min_score: float
    category: str | None
    price_min: float | None
    price_max: float | None
    exclude: frozenset[str]


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{param}: {message}", {"parameter": param})


def _number(args: dict[str, str], name: str) -> float | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, f"not a number: {raw[:50]!r}") from None
    if not math.isfinite(value):
        raise _bad(name, "must be finite")
    if value < 0:
        raise _bad(name, "must not be negative")
    return value


def _check_k(k: int, settings: ServeSettings) -> None:
    if k < 1 or k > settings.max_k:
        raise _bad("k", f"must be between 1 and {settings.max_k}")


def _check_prices(price_min: float | None, price_max: float | None) -> None:
    if price_min is not None and price_max is not None and price_min > price_max:
        raise ApiError(400, "invalid_parameter", "price_min is greater than price_max", {"parameter": "price_min"})


def parse_lookup_params(query: MultiDict[str, str], settings: ServeSettings) -> LookupParams:
    if not query:
        return LookupParams(settings.default_k, 0.0, None, None, None, frozenset())
    # one pass into a plain dict: MultiDict.get raises (and builds) an exception per missing key
    args: dict[str, str] = {}
    repeated: list[str] = []
    for name, values in query.lists():
        if len(values) > 1:
            repeated.append(name)
        args[name] = values[0]
    unknown = sorted(set(args) - LOOKUP_PARAMS)
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown query parameters: {unknown}", {"unknown": unknown})
    if repeated:
        raise ApiError(400, "invalid_parameter", f"parameters given twice: {sorted(repeated)}",
                       {"repeated": sorted(repeated)})
    raw_k = args.get("k")
    k = settings.default_k
    if raw_k is not None:
        if not _INTEGER.fullmatch(raw_k):
            raise _bad("k", f"not an integer: {raw_k[:50]!r}")
        k = int(raw_k)
        _check_k(k, settings)
    min_score = _number(args, "min_score") or 0.0
    price_min, price_max = _number(args, "price_min"), _number(args, "price_max")
    _check_prices(price_min, price_max)
    category = args.get("category")
    if category is not None and not 1 <= len(category) <= 300:
        raise _bad("category", "must be 1 to 300 characters")
    exclude_raw = args.get("exclude")
    exclude = frozenset(p.strip() for p in exclude_raw.split(",") if p.strip()) if exclude_raw else frozenset()
    if len(exclude) > MAX_EXCLUDE:
        raise _bad("exclude", f"at most {MAX_EXCLUDE} ids")
    return LookupParams(k, min_score, category, price_min, price_max, exclude)


class CartRequest(BaseModel):
    """Body of POST /v1/recommendations."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cart: list[_Id] = Field(min_length=1)
    k: int | None = None
    min_score: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    category: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    price_min: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    price_max: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    exclude: list[_Id] = Field(default_factory=list, max_length=MAX_EXCLUDE)


# --- serialization ---------------------------------------------------------------------------------------
def _cart_json(result: CartResult, version: str) -> dict[str, Any]:
    return {
        "version": version,
        "cart": list(result.cart),
        "unknown_ids": list(result.unknown),
        "items": [
            {
                "product_id": s.product_id,
                "title": s.title,
                "category": list(s.category),
                "price": s.price,
                "score": round(s.score, 6),
                "goes_with": [
                    {
                        "product_id": c.cart_item,
                        "score": round(c.score, 6),
                        "reasons": list(c.reasons),
                        "source": c.source,
                        "via": c.via,
                    }
                    for c in s.goes_with
                ],
            }
            for s in result.items
        ],
    }


# --- /v1 -------------------------------------------------------------------------------------------------
@bp.get("/v1/products/<path:product_id>")
def get_product(product_id: str) -> Response:
    _check_id(product_id)
    index = _index()
    try:
        p = index.product(product_id)
    except UnknownProduct:
        raise ApiError(404, "unknown_product", "unknown product id", {"product_id": product_id}) from None
    return jsonify(
        {
            "id": p.id,
            "title": p.title,
            "description": p.description,
            "brand": p.brand,
            "category": list(p.category),
            "price": p.price,
            "attributes": p.attributes,
            "enriched": p.enriched,
            "keyphrases": list(p.keyphrases),
            "counts": {"complement": p.complement_count, "substitute": p.substitute_count},
            "version": index.version,
        }
    )


def _lookup(product_id: str, kind: str) -> Response:
    _check_id(product_id)
    s = state()
    index = s.holder.index
    if index is None:
        index = _index()  # raises the 503
    # The index is immutable, so a lookup's answer is a function of (version, kind, id, parameters):
    # hot products are answered from the per-version cache, which a reload drops with the old index.
    # Answers are keyed on the parsed parameters, so spellings of one lookup share one rendering; a query
    # string seen before (and so already validated) is an alias that skips parsing on the hot path.
    renderer = renderer_for(index)
    alias = (kind, product_id, request.query_string)
    cached = renderer.cached(alias)
    if cached is not None:
        return Response(cached, status=200, mimetype="application/json")
    params = parse_lookup_params(request.args, s.settings)
    key = (kind, product_id, params)
    cached = renderer.cached(key)
    if cached is not None:
        renderer.remember(alias, cached)
        return Response(cached, status=200, mimetype="application/json")
    method = index.complements if kind == "complement" else index.substitutes
    try:
        result = method(
            product_id,
            params.k,
            min_score=params.min_score,
            category=params.category,
            price_min=params.price_min,
            price_max=params.price_max,
            exclude=params.exclude,
        )
    except UnknownProduct:
        raise ApiError(404, "unknown_product", "unknown product id", {"product_id": product_id}) from None
    body = renderer.neighbours(result, index.version)
    renderer.remember(key, body)
    renderer.remember(alias, body)
    return Response(body, status=200, mimetype="application/json")


@bp.get("/v1/products/<path:product_id>/complements")
def get_complements(product_id: str) -> Response:
    return _lookup(product_id, "complement")


@bp.get("/v1/products/<path:product_id>/substitutes")
def get_substitutes(product_id: str) -> Response:
    return _lookup(product_id, "substitute")


@bp.post("/v1/recommendations")
def post_recommendations() -> Response:
    settings = state().settings
    if request.args:
        raise ApiError(400, "invalid_parameter", "this endpoint takes no query parameters", None)
    try:
        body = CartRequest.model_validate_json(request.get_data(cache=False) or b"")
    except ValidationError as exc:
        details = exc.errors(include_url=False, include_input=False, include_context=False)
        raise ApiError(400, "invalid_body", "request body is not a valid cart request", details) from None
    if len(body.cart) > settings.max_cart_items:
        raise ApiError(
            400, "cart_too_large", f"at most {settings.max_cart_items} cart items", {"max": settings.max_cart_items}
        )
    k = body.k if body.k is not None else settings.default_k
    _check_k(k, settings)
    _check_prices(body.price_min, body.price_max)
    index = _index()
    result = index.cart_addons(
        body.cart,
        k,
        min_score=body.min_score,
        category=body.category,
        price_min=body.price_min,
        price_max=body.price_max,
        exclude=frozenset(body.exclude),
    )
    if not result.cart:
        raise ApiError(404, "unknown_product", "no cart item is a known product", {"unknown_ids": list(result.unknown)})
    return json_response(_cart_json(result, index.version))


@bp.get("/v1/graph")
def get_graph() -> Response:
    index = _index()
    status = state().holder.status()
    meta = index.meta
    return jsonify(
        {
            "version": index.version,
            "created_at": meta.created_at.isoformat() if meta.created_at else None,
            "products": index.product_count,
            "relations": index.relation_counts(),
            "manifest": {"product_count": meta.manifest_product_count, "relation_counts": meta.manifest_relation_counts},
            "dropped_edges": meta.dropped_edges,
            "memory_bytes": index.memory_bytes(),
            "stale": status.stale,
            "stale_since": status.stale_since.isoformat() if status.stale_since else None,
            "last_error": status.last_error,
        }
    )


# --- operations ------------------------------------------------------------------------------------------
@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """503 while no index is loaded; 200 once one is, with "stale": true while the source is failing
    (the index still answers correctly for its version, so taking the pod out of rotation would only
    turn a stale answer into no answer)."""
    status = state().holder.status()
    if status.version is None:
        return error_response(503, "not_ready", "no graph index loaded yet", {"reason": status.last_error})
    return jsonify(
        {
            "ready": True,
            "version": status.version,
            "stale": status.stale,
            "stale_since": status.stale_since.isoformat() if status.stale_since else None,
            "reason": status.last_error,
        }
    )


def _gauges() -> GraphGauges:
    s = state()
    index = s.holder.index
    if index is None:
        return GraphGauges(None, 0, {}, 0, s.holder.status().stale)
    return GraphGauges(
        index.version, index.product_count, {str(k): v for k, v in index.relation_counts().items()}, index.memory_bytes(), s.holder.status().stale
    )


@bp.get("/metrics")
def metrics() -> Response:
    body = state().metrics.render(_gauges)
    return Response(body, mimetype="text/plain", content_type="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_spec(state().settings))


@bp.post("/admin/reload")
def admin_reload() -> Response:
    s = state()
    token = s.settings.admin_token
    if token is None:
        raise ApiError(404, "not_found", "the requested URL was not found on the server", None)
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        response = error_response(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    try:
        outcome = s.holder.reload_if_changed()
    except SourceUnavailable as exc:
        raise ApiError(503, "source_unavailable", str(exc), {"serving": s.holder.status().version}) from exc
    return jsonify(
        {
            "reloaded": outcome.reloaded,
            "version": outcome.version,
            "previous_version": outcome.previous_version,
            "build_seconds": outcome.build_seconds,
        }
    )
