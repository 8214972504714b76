"""A deterministic stand-in "LLM" for FakeOpenAIServer that answers the distiller's prompts by reading their
JSON data block: enrichment from title words, proposals from category keyword rules, verification scores
from token overlap. Good enough to exercise the pipeline end to end, not to be smart.

`make_responder(compromised=True)` simulates a model that obeys instructions injected into product text:
when a field says "ignore previous instructions" followed by a JSON object, it answers with that object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from distill.llm.prompts import REASON_MIN_SCORE, parse_data_block
from tests.fakes.openai_server import first_user_content

Responder = Callable[[dict[str, Any]], str]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"for", "and", "with", "the", "a", "of", "in", "to", "amp", "ndash", "x"}

# keyword in title/category -> (complement phrases, substitute phrases); {model} {brand} {type} are filled in.
_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("smartphone", "phone"),
     ("case for {model}", "screen protector for {model}", "usb-c charger", "power bank", "wireless earbuds"),
     ("smartphone", "{brand} smartphone")),
    (("mirrorless", "camera body", "camera"),
     ("memory card", "camera bag", "tripod", "battery charger for {brand}", "lens for {brand}"),
     ("mirrorless camera body",)),
    (("laptop", "ultrabook", "notebook"),
     ("laptop sleeve", "wireless mouse", "usb-c dock", "laptop stand", "laptop charger"),
     ("ultrabook laptop",)),
    (("espresso machine", "espresso"),
     ("coffee grinder", "espresso coffee beans", "milk jug", "tamper", "cleaning tablets"),
     ("espresso machine",)),
    (("tent",), ("sleeping bag", "camping mat", "tent repair kit", "camping lantern"), ("camping tent",)),
    (("monitor",), ("monitor mount", "hdmi cable", "keyboard", "webcam"), ("computer monitor",)),
    (("printer",), ("ink cartridge", "printer paper", "usb cable"), ("inkjet printer",)),
    (("headphones", "earbuds"), ("headphone case", "usb-c cable"), ("wireless headphones",)),
)

INJECTION = re.compile(r"ignore (all )?previous instructions", re.IGNORECASE)


def tokens(text: str | None) -> set[str]:
    return {t for t in _WORD.findall((text or "").lower()) if t not in _STOP and len(t) > 1}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _injected_json(payload: Any) -> str | None:
    """What a gullible model would output: a JSON object that follows an injection phrase, preferring one
    shaped like this prompt's answer (an attacker writes the format the model is asked for)."""
    expected = ("products" if "products" in payload else "source" if "source" in payload else "complements")
    found: list[dict[str, Any]] = []
    for text in _strings(payload):
        match = INJECTION.search(text)
        if match is None:
            continue
        start = text.find("{", match.end())
        while start != -1:
            try:
                obj, _ = json.JSONDecoder().raw_decode(text[start:])
                found.append(obj)
                break
            except ValueError:
                start = text.find("{", start + 1)
    for obj in found:
        if isinstance(obj, dict) and expected in obj:
            return json.dumps(obj)
    return json.dumps(found[0]) if found else None


def _leaf(product: dict[str, Any]) -> str:
    return str(product.get("category", "")).split(" > ")[-1].strip()


def _type_of(product: dict[str, Any]) -> str:
    leaf = _leaf(product).lower()
    if leaf.endswith("es") and leaf[:-2].endswith(("ss", "sh", "ch", "x")):
        return leaf[:-2]
    return leaf[:-1] if leaf.endswith("s") and not leaf.endswith("ss") else (leaf or "product")


def enrich_answer(payload: dict[str, Any]) -> dict[str, Any]:
    out = []
    for product in payload.get("products", []):
        title = str(product.get("title", ""))
        words = [w for w in _WORD.findall(title.lower()) if w not in _STOP]
        attributes = {"type": _type_of(product)}
        if product.get("brand"):
            attributes["brand"] = str(product["brand"]).lower()[:60]
        if " for " in title:
            attributes["compatible_with"] = title.split(" for ", 1)[1].split(",")[0].strip()[:60]
        size = re.search(r"\b(\d+(?:\.\d+)?\s?(?:gb|tb|mm|in|cm|l|ml|kg|g|mah|w))\b", title.lower())
        if size:
            attributes["size"] = size.group(1)
        phrases = [" ".join(words[:3]), attributes["type"], " ".join(words[-2:])]
        out.append({"id": product["id"], "attributes": attributes, "keyphrases": [p for p in phrases if p]})
    return {"products": out}


def propose_answer(payload: dict[str, Any]) -> dict[str, Any]:
    product = payload.get("product", {})
    title = str(product.get("title", ""))
    text = f"{title} {product.get('category', '')}".lower()
    words = title.split()
    fill = {
        "model": " ".join(words[:2]) if words else "it",
        "brand": str(product.get("brand") or (words[0] if words else "")),
        "type": _type_of(product),
    }
    for keywords, complements, substitutes in _RULES:
        if any(k in text for k in keywords):
            break
    else:
        complements = ("accessories for {type}", "{type} case")
        substitutes = ("{type}",)
    return {
        "complements": [{"query": c.format(**fill), "reason": f"goes with a {fill['type']}"} for c in complements],
        "substitutes": [{"query": s.format(**fill), "reason": f"another {fill['type']}"} for s in substitutes],
    }


def verify_answer(payload: dict[str, Any]) -> dict[str, Any]:
    """The compact verify answer (verify-v3): ids and two-decimal scores per kind, a reason only for a score of
    at least REASON_MIN_SCORE, as the prompt asks."""
    source = payload.get("source", {})
    a = tokens(source.get("title")) | tokens(source.get("brand"))
    out: dict[str, Any] = {"source": source["id"]}
    for key in ("complements", "substitutes"):
        judged = []
        for candidate in payload.get(key, []):
            b = tokens(candidate.get("title")) | tokens(candidate.get("brand"))
            overlap = len(a & b) / max(len(a | b), 1)
            same_leaf = _leaf(source) == _leaf(candidate) and _leaf(source) != ""
            if key == "substitutes":
                score = min(1.0, 0.3 * same_leaf + 0.2 + 0.7 * overlap)
            else:
                score = min(1.0, (0.15 if same_leaf else 0.45) + 0.8 * overlap)
            item: dict[str, Any] = {"id": candidate["id"], "score": round(score, 2)}
            if item["score"] >= REASON_MIN_SCORE:
                shared = ", ".join(sorted(a & b)[:3])
                item["reason"] = f"shares {shared}" if shared else ("same shelf" if same_leaf else "different but related use")
            judged.append(item)
        if judged:
            out[key] = judged
    return out


def answer(payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and "products" in payload:
        return enrich_answer(payload)
    if isinstance(payload, dict) and "source" in payload:
        return verify_answer(payload)
    if isinstance(payload, dict) and "product" in payload:
        return propose_answer(payload)
    raise ValueError(f"the fake responder does not know this prompt: {str(payload)[:200]}")


def make_responder(*, compromised: bool = False) -> Responder:
    def respond(body: dict[str, Any]) -> str:
        payload = parse_data_block(first_user_content(body))
        if compromised:
            injected = _injected_json(payload)
            if injected is not None:
                return injected
        return json.dumps(answer(payload))

    return respond


catalog_responder: Responder = make_responder()
compromised_responder: Responder = make_responder(compromised=True)


class HashingEncoder:
    """A fast deterministic stand-in for distill.evidence.embed.TextEncoder: L2-normalized hashed bag of words.
    Keeps pipeline tests to seconds; the real MiniLM encoder has its own tests."""

    model_name = "hashing-bow-256"
    dim = 256

    def encode(self, texts: Any, *, batch_size: int = 64, progress: bool = False) -> Any:
        import hashlib

        import numpy as np

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def sample_subset(top_categories: tuple[str, ...], limit: int | None = None) -> tuple[list[Any], Any]:
    """Products of the bundled sample catalog under the given second-level categories (e.g. "Phones"), and
    the sample orders restricted to them: a small real-looking catalog for pipeline tests."""
    from pathlib import Path

    import polars as pl

    from distill.ingest.catalog import read_catalog, read_interactions

    sample = Path(__file__).resolve().parents[2] / "shelfgraph" / "sample"
    catalog = read_catalog(sample / "catalog.csv")
    products = [p for p in catalog.products if len(p.category) > 1 and p.category[1] in top_categories]
    products = products[:limit] if limit is not None else products
    ids = {p.id for p in products}
    interactions = read_interactions(sample / "orders.csv", known_ids=ids)
    assert interactions.baskets.filter(pl.col("product_id").is_in(list(ids))).height > 0
    return products, interactions
