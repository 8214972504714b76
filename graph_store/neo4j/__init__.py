"""The Neo4j graph store (`Neo4jStore`), its publisher identity (`Publisher`), and the live Cypher complements
lookup (`complements_query`). Parts: session, reader, lease, writer, store."""

from graph_store.neo4j.lease import Publisher
from graph_store.neo4j.reader import complements_query
from graph_store.neo4j.store import Neo4jStore

__all__ = ["Neo4jStore", "Publisher", "complements_query"]
