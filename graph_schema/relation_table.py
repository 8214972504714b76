"""`RelationTable`: many relations as one edges table (the `graph_schema.tables` layout) instead of one pydantic
object each. A distill run of a large catalog holds about a million relations between its rank and prune
stages; as objects they took ~1.1 KB each, as columns a fraction. Still the typed contract: the frame's schema
and the relation invariants are checked when the table is built, and reading it yields validated `Relation`s
one at a time. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, overload

import polars as pl

from graph_schema.kinds import RELATION_KINDS, RelationKind
from graph_schema.models import Evidence, Provenance, Rejection, Relation
from graph_schema.tables import EDGE_SCHEMA, EdgeRows, edges_frame, relation_from_row

CHUNK: Final = 50_000
"""Relations turned into rows (or rows into relations) at a time: bounds the objects alive at once, and is
large enough that the per-chunk frame overhead does not count."""
MAX_REASONS: Final = 5
"""As `Relation.reasons` (1 to 5 reasons)."""


@dataclass(frozen=True, eq=False)
class RelationTable(EdgeRows):
    """Relations in the EDGE_SCHEMA layout. A `Sequence[Relation]`: indexing and iterating build each
    `Relation` (validated) when it is read, so code written for a list of relations reads a table unchanged
    and holds one relation at a time."""

    frame: pl.DataFrame

    def __post_init__(self) -> None:
        schema = dict(self.frame.schema)
        if list(schema) != list(EDGE_SCHEMA) or any(schema[n] != t for n, t in EDGE_SCHEMA.items()):
            raise ValueError(f"a relation table needs the columns {EDGE_SCHEMA}, got {schema}")
        bad = self.frame.filter(
            pl.col("source").is_null() | pl.col("target").is_null() | (pl.col("source") == pl.col("target"))
            | ~pl.col("kind").is_in(list(RELATION_KINDS)) | pl.col("kind").is_null()
            | pl.col("score").is_null() | ~pl.col("score").is_between(0.0, 1.0) | pl.col("score").is_nan()
            | pl.col("reasons").is_null() | ~pl.col("reasons").list.len().is_between(1, MAX_REASONS)
            | pl.col("run_id").is_null()
        )
        if bad.height:
            raise ValueError(f"{bad.height} rows are not valid relations, e.g. {bad.row(0, named=True)}")

    @classmethod
    def from_relations(cls, relations: Iterable[Relation], *, chunk: int = CHUNK) -> RelationTable:
        """Rows of `relations` (any iterable: a generator is read `chunk` at a time, never all at once)."""
        parts: list[pl.DataFrame] = []
        batch: list[Relation] = []
        for relation in relations:
            batch.append(relation)
            if len(batch) >= chunk:
                parts.append(edges_frame(batch))
                batch = []
        if batch or not parts:
            parts.append(edges_frame(batch))
        return cls(pl.concat(parts, rechunk=True) if len(parts) > 1 else parts[0])

    @classmethod
    def empty(cls) -> RelationTable:
        return cls(pl.DataFrame(schema=EDGE_SCHEMA))

    @classmethod
    def concat(cls, tables: Iterable[RelationTable]) -> RelationTable:
        frames = [t.frame for t in tables]
        return cls(pl.concat(frames, rechunk=True)) if frames else cls.empty()

    def __len__(self) -> int:
        return self.frame.height

    @overload
    def __getitem__(self, index: int) -> Relation: ...
    @overload
    def __getitem__(self, index: slice) -> RelationTable: ...
    def __getitem__(self, index: int | slice) -> Relation | RelationTable:
        if isinstance(index, slice):
            return RelationTable(self.frame[index])
        height = self.frame.height
        if not -height <= index < height:
            raise IndexError(f"relation {index} of a table of {height}")
        return relation_from_row(self.frame.row(index % height, named=True))

    def __iter__(self) -> Iterator[Relation]:
        for part in self.frame.iter_slices(CHUNK):
            for row in part.iter_rows(named=True):
                yield relation_from_row(row)

    def counts(self) -> dict[RelationKind, int]:
        """Relations per kind (every kind present, 0 when none)."""
        found = dict(self.frame.group_by("kind").len().iter_rows())
        return {kind: int(found.get(kind, 0)) for kind in RELATION_KINDS}

    def to_list(self) -> list[Relation]:
        return list(self)


def relation_table(relations: Sequence[Relation] | RelationTable) -> RelationTable:
    """`relations` as a table (the same table when it is one)."""
    return relations if isinstance(relations, RelationTable) else RelationTable.from_relations(relations)


REJECTED_SCHEMA: Final = {**EDGE_SCHEMA, "reason": pl.String, "detail": pl.String}
"""A refused relation's row: the relation's columns, why it was refused, and a detail for its item text."""


def unchecked_relation(row: Mapping[str, Any]) -> Relation:
    """The relation of an edges row without `Relation`'s own checks: a refused relation may break them (a
    self loop is refused for being one), and is kept as it was."""
    return Relation.model_construct(
        source=row["source"], target=row["target"], kind=row["kind"], score=row["score"],
        reasons=tuple(row["reasons"] or ()), evidence=Evidence.model_validate_json(row.get("evidence") or "{}"),
        provenance=Provenance(run_id=row["run_id"], model=row.get("model"), prompt_version=row.get("prompt_version"),
                              stage=row.get("stage")),
    )


@dataclass(frozen=True, eq=False)
class RejectedRelations(Sequence[Rejection]):
    """Relations one stage refused, as rows (REJECTED_SCHEMA). A `Sequence[Rejection]`: each is built when
    read, item `source->target (kind)[: detail]` and the whole relation as JSON in `raw` (so it can be
    inspected or restored), which as text alone was most of a rejection's memory."""

    stage: str
    frame: pl.DataFrame

    def __post_init__(self) -> None:
        schema = dict(self.frame.schema)
        if list(schema) != list(REJECTED_SCHEMA) or any(schema[n] != t for n, t in REJECTED_SCHEMA.items()):
            raise ValueError(f"a rejected-relations table needs the columns {REJECTED_SCHEMA}, got {schema}")
        if self.frame["reason"].null_count():
            raise ValueError("every rejected relation needs a reason")

    @classmethod
    def concat(cls, stage: str, frames: Iterable[pl.DataFrame]) -> RejectedRelations:
        parts = [f.select(list(REJECTED_SCHEMA)) for f in frames]
        return cls(stage, pl.concat(parts, rechunk=True) if parts else pl.DataFrame(schema=REJECTED_SCHEMA))

    def __len__(self) -> int:
        return self.frame.height

    @overload
    def __getitem__(self, index: int) -> Rejection: ...
    @overload
    def __getitem__(self, index: slice) -> RejectedRelations: ...
    def __getitem__(self, index: int | slice) -> Rejection | RejectedRelations:
        if isinstance(index, slice):
            return RejectedRelations(self.stage, self.frame[index])
        height = self.frame.height
        if not -height <= index < height:
            raise IndexError(f"rejection {index} of a table of {height}")
        return self._rejection(self.frame.row(index % height, named=True))

    def __iter__(self) -> Iterator[Rejection]:
        for part in self.frame.iter_slices(CHUNK):
            for row in part.iter_rows(named=True):
                yield self._rejection(row)

    def reason_counts(self) -> dict[str, int]:
        """Rejections per reason, in order of first appearance."""
        return dict(self.frame.group_by("reason", maintain_order=True).len().iter_rows())

    def _rejection(self, row: Mapping[str, Any]) -> Rejection:
        item = f"{row['source']}->{row['target']} ({row['kind']})"
        return Rejection(stage=self.stage, item=item if row["detail"] is None else f"{item}: {row['detail']}",
                         reason=row["reason"], raw=unchecked_relation(row).model_dump_json())
