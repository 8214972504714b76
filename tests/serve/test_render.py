"""serve.render joins pre-serialized fragments; the result must be the JSON a plain encoder gives for the
same NeighbourList (one product id = one product, as in an index), byte for byte, whatever the strings hold (quotes, backslashes, control characters,
non-ASCII, lone surrogates)."""

from __future__ import annotations

import json

import pytest

from serve.index import Neighbour, NeighbourList
from serve.render import Renderer

TRICKY = ['plain', 'quote " and \\ backslash', "tab\tnew\nline\x00\x1f", "é ü 中文 🙂", "\ud800 lone", "</script>", ""]


def _reference(result: NeighbourList, version: str) -> str:
    body = {
        "product_id": result.product_id, "kind": result.kind, "source": result.source, "version": version,
        "items": [
            {"product_id": n.product_id, "title": n.title, "category": list(n.category), "price": n.price,
             "score": n.score, "reasons": list(n.reasons), "via": n.via}
            for n in result.items
        ],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize("text", TRICKY)
def test_rendered_neighbours_are_what_a_json_encoder_gives(text: str) -> None:
    items = (
        Neighbour(f"id-{text}", f"title {text}", ("A", text), 12.5, 0.123456, (text, "second"), None),
        Neighbour(f"second {text}", text, (), None, 1.0, (), f"via {text}"),
        Neighbour(f"third {text}", "T", (text,), 0.0, 0.5, (text,), text),
        Neighbour(f"fourth {text}", "T", (), 1e-7, 1e-6, (), None),
        Neighbour(f"fifth {text}", "T", (), 1e22, 0.999999, (), None),
        Neighbour(f"sixth {text}", "T", (), 123456789.125, 0.0, (), None),
    )
    result = NeighbourList(f"src {text}", "complement", "direct", items)
    renderer = Renderer()
    for _ in range(2):  # the second time from the memoized fragments
        rendered = renderer.neighbours(result, f"v {text}")
        assert rendered == _reference(result, f"v {text}")
        json.loads(rendered)
