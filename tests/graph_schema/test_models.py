"""The contract models: round-trips through JSON and table rows, and refusal of bad values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from graph_schema.models import (
    Evidence,
    GraphVersion,
    LLMUsage,
    Product,
    Provenance,
    Relation,
    RunReport,
    StageReport,
    catalog_fingerprint,
)
from graph_schema.tables import (
    edges_frame,
    nodes_frame,
    product_from_row,
    product_row,
    relation_from_row,
    relation_row,
)

PROV = Provenance(run_id="run-1", model="test-model", prompt_version="verify-v1", stage="verify")


def relation(**overrides: object) -> Relation:
    fields: dict[str, object] = {
        "source": "P-01", "target": "P-03", "kind": "complement", "score": 0.8,
        "reasons": ("a case protects the phone",), "provenance": PROV,
    }
    fields.update(overrides)
    return Relation(**fields)


def test_product_round_trips_through_json_and_table_row(tiny_catalog: list[Product]) -> None:
    for product in tiny_catalog:
        assert Product.model_validate_json(product.model_dump_json()) == product
        assert product_from_row(product_row(product)) == product
    frame = nodes_frame(tiny_catalog)
    assert frame.height == 20
    assert [product_from_row(r) for r in frame.iter_rows(named=True)] == tiny_catalog


def test_product_content_hash_tracks_distillation_fields() -> None:
    base = Product(id="A", title="Tent", category=("Outdoor", "Tents"))
    assert len(base.content_hash) == 32
    assert Product(id="B", title="Tent", category=("Outdoor", "Tents")).content_hash == base.content_hash
    assert Product(id="A", title="Tent 2P", category=("Outdoor", "Tents")).content_hash != base.content_hash
    assert Product(id="A", title="Tent", price=10.0, category=("Outdoor", "Tents")).content_hash == base.content_hash
    assert base.leaf_category == "Tents"


def test_catalog_fingerprint_ignores_order(tiny_catalog: list[Product]) -> None:
    assert catalog_fingerprint(tiny_catalog) == catalog_fingerprint(list(reversed(tiny_catalog)))
    assert catalog_fingerprint(tiny_catalog) != catalog_fingerprint(tiny_catalog[:-1])


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "", "title": "x"},
        {"id": "   ", "title": "x"},
        {"id": "a", "title": ""},
        {"id": "a", "title": "x", "price": -1.0},
        {"id": "a", "title": "x", "price": float("nan")},
        {"id": "a", "title": "x", "colour": "red"},
    ],
    ids=["empty-id", "blank-id", "empty-title", "negative-price", "nan-price", "unknown-field"],
)
def test_product_rejects_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Product(**fields)


def test_relation_round_trips_through_json_and_table_row() -> None:
    original = relation(evidence=Evidence(llm_score=0.9, copurchase_count=3, lift=2.5, query="phone case"))
    assert Relation.model_validate_json(original.model_dump_json()) == original
    assert relation_from_row(relation_row(original)) == original
    frame = edges_frame([original, relation(target="P-04", kind="substitute", score=0.4)])
    assert frame["kind"].to_list() == ["complement", "substitute"]
    assert relation_from_row(frame.row(0, named=True)) == original


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"score": 1.5}, "less than or equal to 1"),
        ({"score": -0.1}, "greater than or equal to 0"),
        ({"score": float("nan")}, "finite"),
        ({"target": "P-01"}, "self-loop"),
        ({"reasons": ()}, "at least 1"),
        ({"reasons": ("  ",)}, "at least 1 character"),
        ({"kind": "accessory"}, "complement"),
        ({"confidence": 0.3}, "Extra inputs are not permitted"),
    ],
    ids=["score-high", "score-negative", "score-nan", "self-loop", "no-reasons", "blank-reason", "bad-kind",
         "unknown-field"],
)
def test_relation_rejects_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        relation(**overrides)


def test_evidence_refuses_out_of_range_similarity() -> None:
    with pytest.raises(ValidationError):
        Evidence(text_similarity=1.5)
    with pytest.raises(ValidationError):
        Evidence(copurchase_count=-1)


@pytest.mark.parametrize(
    "bad",
    [
        "", "../etc", "v 1", ".hidden", "v1/2",
        "vé",
    ],
)
def test_graph_version_refuses_unsafe_ids(bad: str) -> None:
    with pytest.raises(ValidationError, match="version id"):
        GraphVersion(version_id=bad, catalog_fingerprint="f", product_count=0, relation_counts={})


def test_graph_version_round_trips_with_run_report() -> None:
    report = RunReport(run_id="run-1", stages=[
        StageReport(stage="enrich", items_in=3, items_out=2, rejected=1, rejection_reasons={"invalid_json": 1},
                    llm=LLMUsage(calls=2, input_tokens=100, output_tokens=50, cost_usd=0.01)),
        StageReport(stage="verify", llm=LLMUsage(calls=1, cached_calls=1, cost_usd=0.02)),
    ])
    version = GraphVersion(
        version_id="2026-11-23T10-00-00_run-1", catalog_fingerprint="abc", product_count=20,
        relation_counts={"complement": 5, "substitute": 2}, models=["m"], run_report=report,
    )
    again = GraphVersion.model_validate_json(version.model_dump_json())
    assert again == version
    assert again.run_report is not None
    assert again.run_report.llm.calls == 3
    assert again.run_report.llm.cost_usd == pytest.approx(0.03)
    with pytest.raises(ValidationError):
        GraphVersion(version_id="v1", catalog_fingerprint="f", product_count=0, relation_counts={"bundle": 1})
