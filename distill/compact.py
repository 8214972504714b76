"""Memory of the many small frozen pydantic models one run holds at once (hundreds of thousands of candidates
and relations on a large catalog): pydantic keeps in every instance a set of the field names given when it was
built, 0.7-2 KB, often more than the values. Instances given the same names can share one equal set.
Values, validation and `model_fields_set` are unchanged. No I/O.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_SETS: dict[frozenset[str], set[str]] = {}


def shared_names(names: frozenset[str]) -> set[str]:
    """One set per combination of names, for `model_construct(_fields_set=...)`. Never changed in place:
    frozen models refuse assignment, and pydantic copies the set before `model_copy(update=...)` adds to it."""
    found = _SETS.get(names)
    if found is None:
        found = _SETS.setdefault(names, set(names))
    return found


def share_fields_sets(model: M) -> M:
    """`model` (frozen, validated) with its fields set, and those of the models it holds, replaced by the
    shared equal set. Returns the same instance."""
    if not model.model_config.get("frozen"):
        raise TypeError(f"{type(model).__name__} is not frozen: its fields set may change in place")
    object.__setattr__(model, "__pydantic_fields_set__", shared_names(frozenset(model.__pydantic_fields_set__)))
    for value in model.__dict__.values():
        if isinstance(value, BaseModel) and value.model_config.get("frozen"):
            share_fields_sets(value)
    return model
