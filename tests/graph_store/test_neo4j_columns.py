"""The Neo4j writer's column building, without a server: relation tuples, the content digest and its older
formats."""

from __future__ import annotations

from graph_schema.relation_table import RelationTable
from graph_schema.tables import product_row, relation_row
from graph_store.neo4j.writer import (
    _DIGEST_FORMAT, _digest, _digest_v2, _legacy_digest, _provenance_table, _relation_tuples, _stored_digest_of,
)
from tests.integration.test_neo4j_store import make_graph


def test_relation_tuples_are_relation_rows_in_schema_order_for_lists_and_tables() -> None:
    _, relations, _ = make_graph("v1", n_products=12)
    expected = [tuple(relation_row(r).values()) for r in relations]
    assert _relation_tuples(relations) == expected
    assert _relation_tuples(RelationTable.from_relations(relations)) == expected


def test_digest_depends_on_content_not_on_order_or_container() -> None:
    products, relations, _ = make_graph("v1", n_products=12)
    rows = [product_row(p) for p in products]
    digest = _digest(rows, _relation_tuples(relations))
    assert digest.startswith(_DIGEST_FORMAT)
    assert _digest(rows[::-1], _relation_tuples(relations[::-1])) == digest
    assert _digest(rows, _relation_tuples(RelationTable.from_relations(relations))) == digest
    changed = _relation_tuples(relations)
    changed[0] = (*changed[0][:3], 0.123, *changed[0][4:])
    assert _digest(rows, changed) != digest


def test_a_stored_digest_of_an_older_format_is_recomputed_in_that_format() -> None:
    products, relations, _ = make_graph("v1", n_products=12)
    rows = [product_row(p) for p in products]
    relation_rows = [relation_row(r) for r in relations]
    tuples = _relation_tuples(relations)
    v2 = _digest_v2(rows, relation_rows)
    legacy = _legacy_digest(rows, relation_rows)
    assert _stored_digest_of(v2, rows, tuples) == v2
    assert _stored_digest_of(legacy, rows, tuples) == legacy
    assert _stored_digest_of(_digest(rows, tuples), rows, tuples) == _digest(rows, tuples)


def test_provenance_table_indexes_each_relation() -> None:
    _, relations, _ = make_graph("v1", n_products=6)
    _, other, _ = make_graph("v2", n_products=6)
    tuples = _relation_tuples(relations[:3] + other[:2] + relations[3:4])
    table, positions = _provenance_table(tuples)
    assert table == [["v1", "m", "pv1", "verify"], ["v2", "m", "pv1", "verify"]]
    assert positions == [0, 0, 0, 1, 1, 0]
