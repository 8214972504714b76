"""Cypher text used by the Neo4j store. Constants only; values always travel as parameters."""
