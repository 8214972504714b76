"""The contract every part of shelfgraph speaks: products, relations, graph versions, run reports.

Pure data: pydantic models, relation kinds, table layouts and Cypher text. No I/O happens here, so the
distiller and the server both import it cheaply.
"""

from graph_schema.kinds import RELATION_KINDS, RelationKind
from graph_schema.models import (
    Evidence,
    GraphVersion,
    LLMUsage,
    Product,
    Provenance,
    Rejection,
    Relation,
    RunReport,
    StageReport,
    content_hash,
)

__all__ = [
    "RELATION_KINDS",
    "Evidence",
    "GraphVersion",
    "LLMUsage",
    "Product",
    "Provenance",
    "Rejection",
    "Relation",
    "RelationKind",
    "RunReport",
    "StageReport",
    "content_hash",
]
