"""The OpenAPI 3.0 description of the HTTP API, written by hand next to the code it describes and
checked against the running app by schemathesis (tests/serve/test_openapi.py). Limits come from settings.
"""

from __future__ import annotations

from typing import Any

from serve.limits import DEFAULT_SEARCH_K, MAX_QUERY, MAX_SEARCH_K
from serve.settings import ServeSettings

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json_response(description, _ref("Error"))


_NULLABLE_NUMBER = {"type": "number", "nullable": True}
_NULLABLE_STRING = {"type": "string", "nullable": True}


def _schemas(settings: ServeSettings) -> dict[str, Any]:
    category = {"type": "array", "items": {"type": "string"}}
    reasons = {"type": "array", "items": {"type": "string"}}
    source = {"type": "string", "enum": ["direct", "via_substitutes", "via_category", "none"]}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"nullable": True},
                    },
                }
            },
        },
        "Product": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "title", "description", "brand", "category", "price", "attributes", "enriched",
                         "keyphrases", "counts", "version"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "description": _NULLABLE_STRING,
                "brand": _NULLABLE_STRING,
                "category": category,
                "price": _NULLABLE_NUMBER,
                "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
                "enriched": {"type": "object", "additionalProperties": {"type": "string"}},
                "keyphrases": {"type": "array", "items": {"type": "string"}},
                "counts": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["complement", "substitute"],
                    "properties": {"complement": {"type": "integer"}, "substitute": {"type": "integer"}},
                },
                "version": {"type": "string"},
            },
        },
        "Neighbour": {
            "type": "object",
            "additionalProperties": False,
            "required": ["product_id", "title", "category", "price", "score", "reasons", "via"],
            "properties": {
                "product_id": {"type": "string"},
                "title": {"type": "string"},
                "category": category,
                "price": _NULLABLE_NUMBER,
                "score": {"type": "number", "minimum": 0},
                "reasons": reasons,
                "via": {**_NULLABLE_STRING, "description": "substitute or same-category product that lent the edge"},
            },
        },
        "NeighbourList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["product_id", "kind", "source", "version", "items"],
            "properties": {
                "product_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["complement", "substitute"]},
                "source": source,
                "version": {"type": "string"},
                "items": {"type": "array", "items": _ref("Neighbour")},
            },
        },
        "CartRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cart"],
            "properties": {
                "cart": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": settings.max_cart_items,
                    "items": {"type": "string", "minLength": 1, "maxLength": 256},
                },
                "k": {"type": "integer", "minimum": 1, "maximum": settings.max_k, "nullable": True},
                "min_score": {"type": "number", "minimum": 0},
                "category": {"type": "string", "minLength": 1, "maxLength": 300, "nullable": True},
                "price_min": {"type": "number", "minimum": 0, "nullable": True},
                "price_max": {"type": "number", "minimum": 0, "nullable": True},
                "exclude": {
                    "type": "array",
                    "maxItems": 500,
                    "items": {"type": "string", "minLength": 1, "maxLength": 256},
                },
            },
        },
        "CartSuggestion": {
            "type": "object",
            "additionalProperties": False,
            "required": ["product_id", "title", "category", "price", "score", "goes_with"],
            "properties": {
                "product_id": {"type": "string"},
                "title": {"type": "string"},
                "category": category,
                "price": _NULLABLE_NUMBER,
                "score": {"type": "number", "minimum": 0, "description": "sum over the cart items it goes with"},
                "goes_with": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["product_id", "score", "reasons", "source", "via"],
                        "properties": {
                            "product_id": {"type": "string", "description": "the cart item"},
                            "score": {"type": "number", "minimum": 0},
                            "reasons": reasons,
                            "source": source,
                            "via": _NULLABLE_STRING,
                        },
                    },
                },
            },
        },
        "CartResponse": {
            "type": "object",
            "additionalProperties": False,
            "required": ["version", "cart", "unknown_ids", "items"],
            "properties": {
                "version": {"type": "string"},
                "cart": {"type": "array", "items": {"type": "string"}},
                "unknown_ids": {"type": "array", "items": {"type": "string"}},
                "items": {"type": "array", "items": _ref("CartSuggestion")},
            },
        },
        "SearchResult": {
            "type": "object",
            "additionalProperties": False,
            "required": ["query", "version", "total", "items"],
            "properties": {
                "query": {"type": "string"},
                "version": {"type": "string"},
                "total": {"type": "integer", "minimum": 0, "description": "products matched (items holds the best k)"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["product_id", "title", "category", "price", "match", "counts"],
                        "properties": {
                            "product_id": {"type": "string"},
                            "title": {"type": "string"},
                            "category": category,
                            "price": _NULLABLE_NUMBER,
                            "match": {"type": "string", "enum": ["id", "id_prefix", "title_prefix", "title"]},
                            "counts": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["complement", "substitute"],
                                "properties": {"complement": {"type": "integer"}, "substitute": {"type": "integer"}},
                            },
                        },
                    },
                },
            },
        },
        "Graph": {
            "type": "object",
            "additionalProperties": False,
            "required": ["version", "created_at", "products", "relations", "manifest", "dropped_edges",
                         "memory_bytes", "stale", "stale_since", "last_error"],
            "properties": {
                "version": {"type": "string"},
                "created_at": {**_NULLABLE_STRING, "format": "date-time"},
                "products": {"type": "integer"},
                "relations": {"type": "object", "additionalProperties": {"type": "integer"}},
                "manifest": {"type": "object"},
                "dropped_edges": {"type": "integer"},
                "memory_bytes": {"type": "integer"},
                "stale": {"type": "boolean"},
                "stale_since": {**_NULLABLE_STRING, "format": "date-time"},
                "last_error": _NULLABLE_STRING,
            },
        },
        "Ready": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ready", "version", "stale", "stale_since", "reason"],
            "properties": {
                "ready": {"type": "boolean"},
                "version": {"type": "string"},
                "stale": {"type": "boolean"},
                "stale_since": {**_NULLABLE_STRING, "format": "date-time"},
                "reason": _NULLABLE_STRING,
            },
        },
        "Reload": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reloaded", "version", "previous_version", "build_seconds"],
            "properties": {
                "reloaded": {"type": "boolean"},
                "version": _NULLABLE_STRING,
                "previous_version": _NULLABLE_STRING,
                "build_seconds": _NULLABLE_NUMBER,
            },
        },
    }


def _lookup_parameters(settings: ServeSettings) -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return [
        {"$ref": "#/components/parameters/ProductId"},
        query("k", {"type": "integer", "minimum": 1, "maximum": settings.max_k, "default": settings.default_k},
              "how many results"),
        query("min_score", {"type": "number", "minimum": 0}, "drop results scored below"),
        query("category", {"type": "string", "minLength": 1, "maxLength": 300},
              "keep results with this name at any level of their category path"),
        query("price_min", {"type": "number", "minimum": 0}, "keep results priced at least this (unpriced dropped)"),
        query("price_max", {"type": "number", "minimum": 0}, "keep results priced at most this (unpriced dropped)"),
        query("exclude", {"type": "string"}, "comma-separated product ids to leave out (at most 500)"),
    ]


_COMMON = {
    "500": _error("internal error (never caused by bad input)"),
    "503": _error("no graph index loaded yet"),
}


def openapi_spec(settings: ServeSettings) -> dict[str, Any]:
    lookup_responses = {
        "200": _json_response("ranked neighbours", _ref("NeighbourList")),
        "400": _error("invalid query parameter, or a product id longer than 256 characters"),
        "404": _error("unknown product id"),
        **_COMMON,
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "shelfgraph",
            "version": "1",
            "description": "Complements and substitutes from a distilled product graph, answered from memory.",
        },
        "paths": {
            "/v1/products/{product_id}": {
                "get": {
                    "operationId": "getProduct",
                    "summary": "A product with its LLM-enriched attributes and keyphrases",
                    "parameters": [{"$ref": "#/components/parameters/ProductId"}],
                    "responses": {
                        "200": _json_response("the product", _ref("Product")),
                        "400": _error("product id longer than any catalog id (256 characters)"),
                        "404": _error("unknown product id"),
                        **_COMMON,
                    },
                }
            },
            "/v1/products/{product_id}/complements": {
                "get": {
                    "operationId": "getComplements",
                    "summary": "Top-k complements (own edges, else via substitutes, else via category)",
                    "parameters": _lookup_parameters(settings),
                    "responses": lookup_responses,
                }
            },
            "/v1/products/{product_id}/substitutes": {
                "get": {
                    "operationId": "getSubstitutes",
                    "summary": "Top-k substitutes",
                    "parameters": _lookup_parameters(settings),
                    "responses": lookup_responses,
                }
            },
            "/v1/recommendations": {
                "post": {
                    "operationId": "recommendForCart",
                    "summary": "Add-ons for a cart: complements of its items, without the items and their substitutes",
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("CartRequest")}}},
                    "responses": {
                        "200": _json_response("suggestions, each naming the cart items it goes with",
                                              _ref("CartResponse")),
                        "400": _error("malformed JSON, unknown field, bad value or oversized cart"),
                        "404": _error("no cart item is a known product"),
                        "413": _error("request body too large"),
                        **_COMMON,
                    },
                }
            },
            "/v1/search": {
                "get": {
                    "operationId": "searchProducts",
                    "summary": "Products by id or title words (the exact id first, then id prefixes, then titles)",
                    "parameters": [
                        {"name": "q", "in": "query", "required": True,
                         "schema": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY},
                         "description": "an id, an id prefix or words of a title (case-insensitive)"},
                        {"name": "k", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_K,
                                    "default": DEFAULT_SEARCH_K},
                         "description": "how many results"},
                    ],
                    "responses": {
                        "200": _json_response("matching products, best first", _ref("SearchResult")),
                        "400": _error("missing or invalid query parameter"),
                        **_COMMON,
                    },
                }
            },
            "/explore": {
                "get": {
                    "operationId": "explore",
                    "summary": "The graph explorer page (HTML; it calls the /v1 endpoints)",
                    "responses": {
                        "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                        "500": _COMMON["500"],
                    },
                }
            },
            "/v1/graph": {
                "get": {
                    "operationId": "getGraph",
                    "summary": "The graph version served and its size",
                    "responses": {"200": _json_response("graph facts", _ref("Graph")), **_COMMON},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "responses": {
                        "200": _json_response(
                            "alive",
                            {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                        ),
                        "500": _COMMON["500"],
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: 503 until an index is loaded; 200 with stale=true while the source fails",
                    "responses": {"200": _json_response("serving", _ref("Ready")), **_COMMON},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of this worker process",
                    "responses": {
                        "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "500": _COMMON["500"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json_response("OpenAPI 3.0 document", {"type": "object"}), "500": _COMMON["500"]},
                }
            },
            "/admin/reload": {
                "post": {
                    "operationId": "adminReload",
                    "summary": "Load the store's current version now (only when an admin token is configured)",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _json_response("reload outcome", _ref("Reload")),
                        "401": _error("missing or wrong bearer token"),
                        "404": _error("admin endpoint disabled (no token configured)"),
                        "500": _COMMON["500"],
                        "503": _error("the graph source is unavailable; the last index keeps serving"),
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(settings),
            "parameters": {
                "ProductId": {
                    "name": "product_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    "description": "catalog product id",
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
