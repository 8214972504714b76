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
SET p += row.props, p.version = $version
RETURN count(p) AS written
"""

MERGE_RELATIONS: Final[dict[RelationKind, str]] = {
    kind: f"""
UNWIND $rows AS row
MATCH (s:Product {{key: row.source_key}})
MATCH (t:Product {{key: row.target_key}})
MERGE (s)-[r:{rel_type}]->(t)
SET r += row.props
RETURN count(r) AS written
"""
    for kind, rel_type in REL_TYPES.items()
}

# --- reads ------------------------------------------------------------------------------------------------
LOAD_PRODUCTS: Final[str] = """
MATCH (p:Product {version: $version})
RETURN p.id AS id, p.title AS title, p.description AS description, p.brand AS brand,
       p.category AS category, p.price AS price, p.attributes AS attributes, p.enriched AS enriched,
       p.keyphrases AS keyphrases, p.content_hash AS content_hash
"""

LOAD_RELATIONS: Final[str] = """
MATCH (s:Product {version: $version})-[r:COMPLEMENTS|SUBSTITUTES]->(t:Product)
RETURN s.id AS source, t.id AS target, type(r) AS type, r.score AS score, r.reasons AS reasons,
       r.evidence AS evidence, r.run_id AS run_id, r.model AS model, r.prompt_version AS prompt_version,
       r.stage AS stage
"""

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
