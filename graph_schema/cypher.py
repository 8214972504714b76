"""Cypher text used by the Neo4j store. Constants only; values always travel as parameters.

Layout: versions live side by side in one database (Community has one). `:Product` nodes carry
`key` = version + KEY_SEPARATOR + id (unique); `:GraphVersion` holds each manifest and the version's table of
distinct provenances (relations carry an index into it, `r.p`); one `:CurrentGraph` node names the version
readers see, and is switched in a single transaction. One `:PublishLock` node is the publishers' lease.
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

PUBLISH_LOCK_NAME: Final[str] = "publish"
"""`name` of the singleton :PublishLock node: the lease one publisher holds while it writes and switches."""

REL_TYPES: Final[dict[RelationKind, str]] = {"complement": "COMPLEMENTS", "substitute": "SUBSTITUTES"}
"""Relationship type per relation kind. Types cannot be parameters, hence one write query per kind."""

# --- schema (idempotent) ------------------------------------------------------------------------------
SCHEMA_STATEMENTS: Final[tuple[str, ...]] = (
    "CREATE CONSTRAINT shelfgraph_product_key IF NOT EXISTS FOR (p:Product) REQUIRE p.key IS UNIQUE",
    "CREATE INDEX shelfgraph_product_version IF NOT EXISTS FOR (p:Product) ON (p.version)",
    "CREATE CONSTRAINT shelfgraph_version_id IF NOT EXISTS FOR (v:GraphVersion) REQUIRE v.version_id IS UNIQUE",
    "CREATE CONSTRAINT shelfgraph_current_name IF NOT EXISTS FOR (c:CurrentGraph) REQUIRE c.name IS UNIQUE",
    "CREATE CONSTRAINT shelfgraph_publish_lock IF NOT EXISTS FOR (l:PublishLock) REQUIRE l.name IS UNIQUE",
)
AWAIT_INDEXES: Final[str] = "CALL db.awaitIndexes(300)"

# --- version bookkeeping --------------------------------------------------------------------------------
GET_VERSION: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
RETURN v.version_id AS version_id, v.state AS state, v.digest AS digest, v.manifest AS manifest,
       v.product_rows AS product_rows, v.relation_rows AS relation_rows, v.provenance AS provenance,
       v.owner AS owner, timestamp() - coalesce(v.heartbeat_at, 0) AS heartbeat_age_ms
"""

BEGIN_VERSION: Final[str] = """
MERGE (v:GraphVersion {version_id: $version})
SET v.state = $state, v.manifest = $manifest, v.started_at = timestamp(), v.heartbeat_at = timestamp(),
    v.owner = $owner, v.product_rows = $product_rows, v.relation_rows = $relation_rows,
    v.provenance = $provenance
REMOVE v.digest
RETURN v.version_id AS version_id
"""
"""The digest is set when the version completes: a partial version is never resumed, only removed."""

TOUCH_VERSION: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
SET v.claim = $owner REMOVE v.claim
WITH v WHERE v.state = $writing AND v.owner = $owner
SET v.heartbeat_at = timestamp()
RETURN v.version_id AS version_id
"""
"""The writing publisher's heartbeat on its version: cleanup never removes a version written by a live publisher."""

ABANDON_VERSION: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
SET v.claim = $owner REMOVE v.claim
WITH v WHERE v.state = $writing AND v.owner = $owner
SET v.heartbeat_at = 0, v.owner = null
RETURN v.version_id AS version_id
"""
"""A publish that failed gives up its partial version, so the next publisher may remove it at once."""

# --- the publish lease -----------------------------------------------------------------------------------
# Every statement that decides on a lease or a version's owner first writes to that node (`SET x.claim = ...
# REMOVE x.claim`), which takes its write lock until commit, and only then reads `owner`/`expires_at`: concurrent
# statements serialize and none acts on a stale read (Neo4j's documented cure for lost updates).
READ_PUBLISH_LOCK: Final[str] = """
MATCH (l:PublishLock {name: $name})
RETURN l.owner AS owner, l.host AS host, l.boot_id AS boot_id, l.pid_ns AS pid_ns, l.pid AS pid,
       l.pid_start AS pid_start, l.version AS version, l.expires_at - timestamp() AS expires_in_ms,
       timestamp() - l.heartbeat_at AS heartbeat_age_ms
"""

CLAIM_PUBLISH_LOCK: Final[str] = """
MERGE (l:PublishLock {name: $name})
SET l.claim = $owner REMOVE l.claim
WITH l
WITH l, (l.owner IS NULL OR l.owner = $owner OR l.expires_at < timestamp() OR l.owner = $stale) AS free
FOREACH (_ IN CASE WHEN free THEN [1] ELSE [] END |
  SET l.owner = $owner, l.host = $host, l.boot_id = $boot_id, l.pid_ns = $pid_ns, l.pid = $pid,
      l.pid_start = $pid_start, l.version = $version, l.acquired_at = timestamp(), l.heartbeat_at = timestamp(),
      l.expires_at = timestamp() + $lease_ms)
RETURN free AS acquired, l.owner AS owner
"""
"""Takes the lease if it is free, expired, already ours, or held by `$stale` (an owner seen to be dead)."""

RENEW_PUBLISH_LOCK: Final[str] = """
MATCH (l:PublishLock {name: $name})
SET l.claim = $owner REMOVE l.claim
WITH l
WITH l, l.owner = $owner AS held
FOREACH (_ IN CASE WHEN held THEN [1] ELSE [] END |
  SET l.heartbeat_at = timestamp(), l.expires_at = timestamp() + $lease_ms)
RETURN held
"""

RELEASE_PUBLISH_LOCK: Final[str] = """
MATCH (l:PublishLock {name: $name})
SET l.claim = $owner REMOVE l.claim
WITH l WHERE l.owner = $owner
DELETE l
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
MATCH (l:PublishLock {name: $lock})
SET l.claim = $owner REMOVE l.claim
WITH l WHERE l.owner = $owner
MATCH (v:GraphVersion {version_id: $version})
SET v.state = $complete, v.completed_at = timestamp(), v.digest = $digest
MERGE (c:CurrentGraph {name: $name})
SET c.version = v.version_id, c.switched_at = timestamp()
RETURN c.version AS version
"""
"""Marks a fully written version complete and points readers at it, in one transaction, only while this
publisher still holds the lease (no row back: the lease was lost and nothing changed)."""

SWITCH_TO_COMPLETE: Final[str] = """
MATCH (l:PublishLock {name: $lock})
SET l.claim = $owner REMOVE l.claim
WITH l WHERE l.owner = $owner
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
  AND NOT (v.state = $writing AND NOT coalesce(v.owner, '') IN $reclaim
           AND coalesce(v.heartbeat_at, 0) >= timestamp() - $lease_ms)
RETURN v.version_id AS version_id
"""
"""Versions to remove after a publish: complete ones beyond `keep`, and partial ones a crash left behind.
A `writing` version whose publisher's heartbeat is younger than the lease is never one of them, unless its
owner is in `$reclaim` (this publisher, or the lease holder it took over from because it was dead)."""

MARK_DELETING: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
SET v.claim = $owner REMOVE v.claim
WITH v
OPTIONAL MATCH (c:CurrentGraph {name: $name})
WITH v, c WHERE coalesce(c.version, '') <> v.version_id
  AND NOT (v.state = $writing AND NOT coalesce(v.owner, '') IN $reclaim
           AND coalesce(v.heartbeat_at, 0) >= timestamp() - $lease_ms)
SET v.state = $deleting
RETURN v.version_id AS version_id
"""
"""Readers stop trusting a version before its nodes go; never applies to the current version, nor to a version
another live publisher is writing (its heartbeat is younger than the lease)."""

DELETE_VERSION_RELATIONS_BATCH: Final[str] = """
MATCH (:Product {version: $version})-[r]->()
WITH r LIMIT $limit
DELETE r
RETURN count(*) AS deleted
"""
"""Relationships go first, in batches of their own: a DETACH DELETE of a batch of well-connected products
would otherwise hold all their relationships in one transaction (beyond the server's transaction memory)."""

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
# A version is new data, so its nodes and relationships are CREATEd, never MERGEd (a crashed partial version is
# removed, not resumed). Nodes come back with their element ids; relationships find their ends by element id
# (a direct seek, no index probe; integer `id()` seeks measured no cheaper and are deprecated). Null values in a CREATE map are simply not stored.
CREATE_PRODUCTS: Final[str] = """
UNWIND $rows AS row
CREATE (p:Product {key: row.key, version: $version, id: row.id, title: row.title, description: row.description,
                   brand: row.brand, category: row.category, price: row.price, attributes: row.attributes,
                   enriched: row.enriched, keyphrases: row.keyphrases, content_hash: row.content_hash})
RETURN count(p) AS written, collect([row.id, elementId(p)]) AS ids
"""

CREATE_RELATIONS: Final[dict[RelationKind, str]] = {
    kind: f"""
UNWIND range(0, size($s) - 1) AS i
MATCH (s) WHERE elementId(s) = $s[i]
MATCH (t) WHERE elementId(t) = $t[i]
CREATE (s)-[r:{rel_type} {{score: $score[i], reasons: $reasons[i], evidence: $evidence[i], p: $p[i]}}]->(t)
RETURN count(r) AS written
"""
    for kind, rel_type in REL_TYPES.items()
}
"""Parameters are columns: `$s`/`$t` the ends' element ids, `$score`, `$reasons`, `$evidence`, `$p` one entry
per relationship (cheaper to pack and unpack than one map per row). Four properties per relationship: provenance (run, model, prompt version, stage) is one small integer `p`
into the version's `provenance` table, since a version holds only a handful of distinct provenances."""

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
RETURN collect([s.id, t.id, type(r), r.score, r.reasons, r.evidence, r.p, r.run_id, r.model, r.prompt_version,
                r.stage]) AS rows
"""
"""Relations leaving one page of products: EDGE_SCHEMA's first six columns (`kind` holds the relationship type),
the provenance index into the version's table, then the four provenance properties that versions written
before the table carry (absent, hence null, on newer ones)."""

VERSION_STATE: Final[str] = """
MATCH (v:GraphVersion {version_id: $version})
RETURN v.state AS state
"""

COMPLEMENTS_TOP_K: Final[str] = """
MATCH (c:CurrentGraph {name: $name})
MATCH (v:GraphVersion {version_id: c.version})
MATCH (s:Product {key: c.version + $separator + $product_id})-[r:COMPLEMENTS]->(t:Product)
RETURN s.id AS source, t.id AS target, type(r) AS type, r.score AS score, r.reasons AS reasons,
       r.evidence AS evidence, r.p AS p, v.provenance AS provenance, r.run_id AS run_id, r.model AS model,
       r.prompt_version AS prompt_version, r.stage AS stage
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
