"""`shelfgraph doctor` against a real Neo4j: it reads the server version, the current graph version and
whether the store's constraints are in place."""

from __future__ import annotations

import os

import neo4j
import pytest

from distill.settings import DistillSettings
from graph_store.neo4j import Neo4jStore
from shelfgraph.doctor import check_neo4j, expected_constraints

pytestmark = pytest.mark.neo4j


def test_doctor_reads_version_and_constraints(clean_neo4j: neo4j.Driver) -> None:
    address = clean_neo4j.get_server_info().address
    settings = DistillSettings(
        store="neo4j", neo4j_uri=f"bolt://{address.host}:{address.port}",
        neo4j_user=os.environ.get("NEO4J_USER", "neo4j"),
        neo4j_password=os.environ.get("NEO4J_PASSWORD", "shelfgraph"),
    )
    Neo4jStore(clean_neo4j).ensure_schema()
    check = check_neo4j(settings)
    assert check.status == "ok", check
    assert "Neo4j Kernel 5." in check.detail
    assert "constraints in place" in check.detail
    # the store's uniqueness constraints, whatever others (the publish lease) join them
    assert {"shelfgraph_product_key", "shelfgraph_version_id", "shelfgraph_current_name"} <= set(expected_constraints())


def test_doctor_names_a_wrong_password(clean_neo4j: neo4j.Driver) -> None:
    address = clean_neo4j.get_server_info().address
    settings = DistillSettings(store="neo4j", neo4j_uri=f"bolt://{address.host}:{address.port}",
                               neo4j_password="certainly-wrong-password")
    check = check_neo4j(settings)
    assert check.status == "fail" and "authentication refused" in check.detail
