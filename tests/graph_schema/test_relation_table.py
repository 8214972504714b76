"""RelationTable and RejectedRelations: relations as rows read back as the same validated models, and a
table that breaks the relation contract is refused when it is built."""

from __future__ import annotations

import polars as pl
import pytest

from graph_schema.models import Evidence, Provenance, Relation
from graph_schema.relation_table import RejectedRelations, RelationTable, relation_table
from graph_schema.tables import EDGE_SCHEMA, edges_frame, relation_row

RELATIONS = [
    Relation(source="phone", target=f"case{i}", kind="complement" if i % 3 else "substitute", score=i / 10,
             reasons=("fits", f"bought together in {i} orders"), evidence=Evidence(copurchase_count=i, lift=1.5),
             provenance=Provenance(run_id="r1", stage="rank:text"))
    for i in range(1, 8)
]


def test_rows_read_back_as_the_same_relations_in_chunks() -> None:
    table = RelationTable.from_relations(iter(RELATIONS), chunk=3)
    assert len(table) == 7 and list(table) == RELATIONS
    assert table[0] == RELATIONS[0] and table[-1] == RELATIONS[-1] and list(table[2:4]) == RELATIONS[2:4]
    assert table.counts() == {"complement": 5, "substitute": 2}
    assert edges_frame(table) is table.frame and relation_table(table) is table
    with pytest.raises(IndexError):
        table[7]


def test_empty_and_concatenated_tables() -> None:
    assert len(RelationTable.empty()) == 0 and list(RelationTable.from_relations([])) == []
    both = RelationTable.concat([RelationTable.from_relations(RELATIONS[:2]), RelationTable.from_relations(RELATIONS[2:])])
    assert list(both) == RELATIONS


@pytest.mark.parametrize("change", [
    {"target": "phone"},  # a self loop
    {"score": 1.5},
    {"kind": "accessory"},
    {"reasons": []},
    {"reasons": ["a", "b", "c", "d", "e", "f"]},
    {"run_id": None},
])
def test_rows_that_are_not_relations_are_refused(change: dict[str, object]) -> None:
    row = relation_row(RELATIONS[0]) | change
    with pytest.raises(ValueError, match="not valid relations"):
        RelationTable(pl.DataFrame([row], schema=EDGE_SCHEMA))


def test_a_frame_of_another_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the columns"):
        RelationTable(edges_frame(RELATIONS).drop("evidence"))
    with pytest.raises(ValueError, match="needs the columns"):
        RelationTable(edges_frame(RELATIONS).with_columns(pl.col("score").cast(pl.Float32)))


def test_rejected_relations_read_as_rejections_with_the_relation_as_raw() -> None:
    frame = edges_frame(RELATIONS[:2]).with_columns(reason=pl.lit("over_degree_cap"),
                                                    detail=pl.Series(["phone already has 2 substitutes", None]))
    first, second = RejectedRelations("prune", frame)
    assert first.item == "phone->case1 (complement): phone already has 2 substitutes" and first.stage == "prune"
    assert second.item == "phone->case2 (complement)" and second.reason == "over_degree_cap"
    assert Relation.model_validate_json(first.raw or "") == RELATIONS[0]
    assert RejectedRelations("prune", frame).reason_counts() == {"over_degree_cap": 2}
