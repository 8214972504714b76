"""Cypher text used by the Neo4j store. Constants only; values always travel as parameters.

Layout: versions live side by side in one database (Community has one). `:Product` nodes carry
`key` = version + KEY_SEPARATOR + id (unique); `:GraphVersion` holds each manifest; one `:CurrentGraph`
node names the version readers see, and is switched in a single transaction.
"""

from __future__ import annotations

from typing import Final, Literal

from graph_schema.kinds import RelationKind

KEY_SEPARATOR: Final[str] = "\u001f"
"""Joins version and product id into the node key. Version ids are [A-Za-z0-9._-], so the key is unambiguous."""

CURRENT_NAME: Final[str] = "current"
"""`name` of the singleton :CurrentGraph node."""

VersionState = Literal["writing", "complete", "deleting"]
"""`writing` until every batch is in, `complete` once readable, `deleting` while cleanup removes it."""
STATE_WRITING: Final[VersionState] = "writing"
STATE_COMPLETE: Final[VersionState] = "complete"
STATE_DELETING: Final[VersionState] = "deleting"

REL_TYPES: Final[dict[RelationKind, str]] = {"complement": "COMPLEMENTS", "substitute": "SUBSTITUTES"}
"""Relationship type per relation kind. Types cannot be parameters, hence one write query per kind."""

# --- schema (idempotent) ------------------------------------------------------------------------------
SCHEMA_STATEMENTS: Final[tuple[str, ...]] = (
    "CREATE CONSTRAINT shelfgraph_product_key IF NOT EXISTS FOR (p:Product) REQUIRE p.key IS UNIQUE",
    "CREATE INDEX shelfgraph_product_version IF NOT EXISTS FOR (p:Product) ON (p.version)",
    "CREATE CONSTRAINT shelfgraph_version_id IF NOT EXISTS FOR (v:GraphVersion) REQUIRE v.version_id IS UNIQUE",
    "CREATE CONSTRAINT shelfgraph_current_name IF NOT EXISTS FOR (c:CurrentGraph) REQUIRE c.name IS UNIQUE",
)
AWAIT_INDEXES: Final[str] = "CALL db.awaitIndexes(300)"

# --- version bookkeeping --------------------------------------------------------------------------------
GET_VERSION: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
RETURN v.version_id AS version_id, v.state AS state, v.digest AS digest, v.manifest AS manifest,
       v.product_rows AS product_rows, v.relation_rows AS relation_rows
"""

BEGIN_VERSION: Final[str] = """
MERGE (v:GraphVersion {version_id: $version})
SET v.state = $state, v.digest = $digest, v.manifest = $manifest, v.started_at = timestamp(),
    v.product_rows = $product_rows, v.relation_rows = $relation_rows
RETURN v.version_id AS version_id
"""

GET_CURRENT: Final[str] = """
MATCH (c:CurrentGraph {name: $name})
RETURN c.version AS version
"""

COUNT_VERSION_PRODUCTS: Final[str] = """
MATCH (p:Product {version: $version})
RETURN count(p) AS n
"""

COUNT_VERSION_RELATIONS: Final[str] = """
MATCH (s:Product {version: $version})-[r:COMPLEMENTS|SUBSTITUTES]->()
RETURN type(r) AS type, count(r) AS n
"""

COMPLETE_AND_SWITCH: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
SET v.state = $complete, v.completed_at = timestamp()
MERGE (c:CurrentGraph {name: $name})
SET c.version = v.version_id, c.switched_at = timestamp()
RETURN c.version AS version
"""
"""Marks a fully written version complete and points readers at it, in one transaction."""

SWITCH_TO_COMPLETE: Final[str] = """
MATCH (v:GraphVersion {version_id: $version, state: $complete})
SET v.completed_at = timestamp()
MERGE (c:CurrentGraph {name: $name})
SET c.version = v.version_id, c.switched_at = timestamp()
RETURN c.version AS version
"""
"""Re-points readers at an already complete version (re-publish of identical content, or a rollback)."""

LIST_COMPLETE_VERSIONS: Final[str] = """
MATCH (v:GraphVersion {state: $complete})
RETURN v.version_id AS version_id, v.manifest AS manifest
ORDER BY v.completed_at, v.version_id
"""

LIST_DOOMED_VERSIONS: Final[str] = """
MATCH (v:GraphVersion)
OPTIONAL MATCH (c:CurrentGraph {name: $name})
WITH v, c
WHERE v.version_id <> coalesce(c.version, '') AND v.version_id <> $publishing
  AND (v.state <> $complete OR NOT v.version_id IN $keep)
RETURN v.version_id AS version_id
"""
"""Versions to remove after a publish: complete ones beyond `keep`, and partial ones a crash left behind."""

MARK_DELETING: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
OPTIONAL MATCH (c:CurrentGraph {name: $name})
WITH v, c WHERE coalesce(c.version, '') <> v.version_id
SET v.state = $deleting
RETURN v.version_id AS version_id
"""
"""Readers stop trusting a version before its nodes go; never applies to the current version."""

DELETE_VERSION_PRODUCTS_BATCH: Final[str] = """
MATCH (p:Product {version: $version})
WITH p LIMIT $limit
DETACH DELETE p
RETURN count(*) AS deleted
"""

DELETE_VERSION_NODE: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
DELETE v
"""

# --- writes (batched, UNWIND over parameter rows) ------------------------------------------------------
MERGE_PRODUCTS: Final[str] = """
UNWIND $rows AS row
MERGE (p:Product {key: row.key})
SET p.version = $version, p.id = row.id, p.title = row.title, p.description = row.description,
    p.brand = row.brand, p.category = row.category, p.price = row.price, p.attributes = row.attributes,
    p.enriched = row.enriched, p.keyphrases = row.keyphrases, p.content_hash = row.content_hash
RETURN count(p) AS written
"""
"""Properties are set one by one: `SET p += row` would make the planner add an Eager (it cannot rule out
that the map also writes `key`), which buffers the whole batch."""

MERGE_RELATIONS: Final[dict[RelationKind, str]] = {
    kind: f"""
UNWIND $rows AS row
MATCH (s:Product {{key: row.source_key}})
MATCH (t:Product {{key: row.target_key}})
MERGE (s)-[r:{rel_type}]->(t)
SET r.score = row.score, r.reasons = row.reasons, r.evidence = row.evidence, r.run_id = row.run_id,
    r.model = row.model, r.prompt_version = row.prompt_version, r.stage = row.stage
RETURN count(r) AS written
"""
    for kind, rel_type in REL_TYPES.items()
}

# --- reads ------------------------------------------------------------------------------------------------
LOAD_PRODUCT_IDS: Final[str] = """
MATCH (p:Product {version: $version})
RETURN collect(p.id) AS ids
"""

LOAD_PRODUCTS_PAGE: Final[str] = """
UNWIND $keys AS key
MATCH (p:Product {key: key})
RETURN collect([p.id, p.title, p.description, p.brand, p.category, p.price, p.attributes, p.enriched,
                p.keyphrases, p.content_hash]) AS rows
"""
"""One page of products in NODE_SCHEMA column order. One record holding a list decodes several times
faster in the Python driver than one record per row; pages keep the server's memory bounded."""

LOAD_RELATIONS_PAGE: Final[str] = """
UNWIND $keys AS key
MATCH (s:Product {key: key})-[r:COMPLEMENTS|SUBSTITUTES]->(t:Product)
RETURN collect([s.id, t.id, type(r), r.score, r.reasons, r.evidence, r.run_id, r.model, r.prompt_version,
                r.stage]) AS rows
"""
"""Relations leaving one page of products, in EDGE_SCHEMA column order (`kind` holds the relationship type)."""

VERSION_STATE: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
RETURN v.state AS state
"""

COMPLEMENTS_TOP_K: Final[str] = """
MATCH (c:CurrentGraph {name: $name})
MATCH (s:Product {key: c.version + $separator + $product_id})-[r:COMPLEMENTS]->(t:Product)
RETURN s.id AS source, t.id AS target, type(r) AS type, r.score AS score, r.reasons AS reasons,
       r.evidence AS evidence, r.run_id AS run_id, r.model AS model, r.prompt_version AS prompt_version,
       r.stage AS stage
ORDER BY r.score DESC, t.id
LIMIT $k
"""
"""Live per-request lookup: top-k complements of one product in the current version."""

# --- tests and benchmarks only -------------------------------------------------------------------------------
WIPE_BATCH: Final[str] = """
MATCH (n)
WITH n LIMIT $limit
DETACH DELETE n
RETURN count(*) AS deleted
"""
"""Deletes up to $limit nodes of ANY kind. Only for tests and benchmarks against a scratch database."""
