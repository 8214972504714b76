"""Relation kinds and their symmetry rules."""

from typing import Final, Literal, get_args

RelationKind = Literal["complement", "substitute"]
"""`complement`: bought together for one use (phone -> case). Directed: a tripod complements a camera,
the reverse may be weaker. `substitute`: bought instead of one another (two comparable cases). Symmetric."""

RELATION_KINDS: Final[tuple[RelationKind, ...]] = get_args(RelationKind)
SYMMETRIC_KINDS: Final[frozenset[RelationKind]] = frozenset({"substitute"})


def is_symmetric(kind: RelationKind) -> bool:
    return kind in SYMMETRIC_KINDS
