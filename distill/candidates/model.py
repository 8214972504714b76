"""The Candidate model: one (source, target, kind) that could be a complement or substitute, with every
observation that suggests it; its polars frame form (how stages write it to the run folder), and the merge
that unites the observations of several generators. No generator and no score lives here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import polars as pl
from pydantic import BaseModel, ConfigDict

from distill.compact import shared_names
from graph_schema.kinds import RelationKind

Origin = str
"""copurchase | neighbour | category | similarity | affinity | llm: which generator proposed a candidate."""


class Candidate(BaseModel):
    """One (source, target, kind) with every observation that suggests it. Absent observations stay None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    target: str
    kind: RelationKind
    origins: tuple[Origin, ...]
    same_leaf: bool = False
    near_duplicate: bool = False
    copurchase_count: int | None = None
    lift: float | None = None
    pmi: float | None = None
    npmi: float | None = None
    neighbour: float | None = None
    """Content-smoothed co-purchase in [0, 1]: products like the source were bought with the target."""
    neighbour_count: int | None = None
    category_a: str | None = None
    category_b: str | None = None
    category_count: int | None = None
    category_npmi: float | None = None
    category_lift: float | None = None
    category_score: float | None = None
    """P(target | source's category) relative to the source's best category candidate, in (0, 1]."""
    text_similarity: float | None = None
    retrieval_score: float | None = None
    query: str | None = None
    query_reason: str | None = None
    llm_score: float | None = None
    llm_reason: str | None = None
    llm_model: str | None = None
    """The model whose judgement llm_score is (a fallback model when the primary was unavailable)."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.target, self.kind)


CANDIDATE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "source": pl.String,
    "target": pl.String,
    "kind": pl.String,
    "origins": pl.List(pl.String),
    "same_leaf": pl.Boolean,
    "near_duplicate": pl.Boolean,
    "copurchase_count": pl.Int64,
    "lift": pl.Float64,
    "pmi": pl.Float64,
    "npmi": pl.Float64,
    "neighbour": pl.Float64,
    "neighbour_count": pl.Int64,
    "category_a": pl.String,
    "category_b": pl.String,
    "category_count": pl.Int64,
    "category_npmi": pl.Float64,
    "category_lift": pl.Float64,
    "category_score": pl.Float64,
    "text_similarity": pl.Float64,
    "retrieval_score": pl.Float64,
    "query": pl.String,
    "query_reason": pl.String,
    "llm_score": pl.Float64,
    "llm_reason": pl.String,
    "llm_model": pl.String,
}


def _construct(fields: dict[str, Any]) -> Candidate:
    """`Candidate.model_construct` sharing the set of given field names (see distill.compact): 2 KB of a 3 KB
    candidate when all 25 are given."""
    return Candidate.model_construct(shared_names(frozenset(fields)), **fields)


def candidates_frame(candidates: Iterable[Candidate]) -> pl.DataFrame:
    """Column by column: one Python list at a time (a dict per candidate took several times the memory). A
    CandidateTable is its frame already."""
    if isinstance(candidates, CandidateTable):
        return candidates.frame
    found = list(candidates)
    columns: list[pl.Series] = []
    for name, dtype in CANDIDATE_SCHEMA.items():
        values = [list(c.origins) for c in found] if name == "origins" else [getattr(c, name) for c in found]
        columns.append(pl.Series(name, values, dtype=dtype))
        del values
    return pl.DataFrame(columns)


def candidates_from_frame(frame: pl.DataFrame) -> list[Candidate]:
    """Read back a stage output this pipeline wrote (its own run folder; the schema is enforced by polars)."""
    return list(CandidateTable(frame))


def _from_row(row: dict[str, Any]) -> Candidate:
    row["origins"] = tuple(row["origins"] or ())
    return _construct(row)


ROW_CHUNK = 50_000
"""Rows turned into Candidate objects at a time while a table is read."""


@dataclass(frozen=True, eq=False)
class CandidateTable(Sequence[Candidate]):
    """A candidate pool as one CANDIDATE_SCHEMA frame (a 40k-product leaf has ~720k candidates: ~0.9 KB each
    as objects, a fraction as columns). A `Sequence[Candidate]` whose candidates are made when read, so code
    written for a list reads it unchanged and holds one at a time. Only this pipeline's own values fill it (its
    generators, its run folder), so, like `candidates_from_frame`, reading does not re-validate."""

    frame: pl.DataFrame

    def __post_init__(self) -> None:
        schema = dict(self.frame.schema)
        if list(schema) != list(CANDIDATE_SCHEMA) or any(schema[n] != t for n, t in CANDIDATE_SCHEMA.items()):
            raise ValueError(f"a candidate table needs the columns {CANDIDATE_SCHEMA}, got {schema}")

    @classmethod
    def of(cls, candidates: Iterable[Candidate]) -> CandidateTable:
        return cls(candidates_frame(candidates))

    @classmethod
    def from_columns(cls, *, source: Sequence[str], target: Sequence[str], **given: Any) -> CandidateTable:
        """Candidates from columns: `given` names Candidate fields, each a sequence (one value per candidate) or
        a scalar shared by all; fields not given take the Candidate's default."""
        n = len(source)
        defaults = {"same_leaf": False, "near_duplicate": False}
        columns = []
        for name, dtype in CANDIDATE_SCHEMA.items():
            value = {"source": source, "target": target}.get(name, given.pop(name, defaults.get(name)))
            if isinstance(value, (str, tuple, bool, int, float)) or value is None:
                value = [list(value) if isinstance(value, tuple) else value] * n
            columns.append(pl.Series(name, value, dtype=dtype))
        if given:
            raise ValueError(f"not Candidate fields: {sorted(given)}")
        return cls(pl.DataFrame(columns))

    @classmethod
    def concat(cls, parts: Iterable[Iterable[Candidate]]) -> CandidateTable:
        frames = [candidates_frame(part) for part in parts]
        return cls(pl.concat(frames, rechunk=True) if frames else pl.DataFrame(schema=CANDIDATE_SCHEMA))

    def __len__(self) -> int:
        return self.frame.height

    @overload
    def __getitem__(self, index: int) -> Candidate: ...
    @overload
    def __getitem__(self, index: slice) -> CandidateTable: ...
    def __getitem__(self, index: int | slice) -> Candidate | CandidateTable:
        if isinstance(index, slice):
            return CandidateTable(self.frame[index])
        height = self.frame.height
        if not -height <= index < height:
            raise IndexError(f"candidate {index} of a table of {height}")
        return _from_row(self.frame.row(index % height, named=True))

    def __iter__(self) -> Iterator[Candidate]:
        for part in self.frame.iter_slices(ROW_CHUNK):
            for row in part.iter_rows(named=True):
                yield _from_row(row)


_MAX_FIELDS = ("copurchase_count", "lift", "pmi", "npmi", "neighbour", "neighbour_count", "category_count",
               "category_npmi", "category_lift", "category_score", "text_similarity", "retrieval_score", "llm_score")


def merge_candidates(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per (source, target, kind): origins united, each observation its strongest value, the
    first proposal phrase kept. Order: first appearance. A candidate proposed once is returned as it is (frozen;
    no copy of it is made)."""
    first: dict[tuple[str, str, str], Candidate] = {}
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for cand in candidates:
        key = cand.key
        if key not in first:
            first[key] = cand
            continue
        current = merged.get(key)
        if current is None:
            current = merged[key] = dict(first[key].__dict__)
        current["origins"] = tuple(dict.fromkeys((*current["origins"], *cand.origins)))
        for name in _MAX_FIELDS:
            new = getattr(cand, name)
            old = current[name]
            if new is not None and (old is None or new > old):
                current[name] = new
        for name in ("query", "query_reason", "llm_reason", "llm_model", "category_a", "category_b"):
            if current[name] is None and getattr(cand, name) is not None:
                current[name] = getattr(cand, name)
        current["near_duplicate"] = bool(current["near_duplicate"]) or cand.near_duplicate
    return [_construct(merged[key]) if key in merged else cand for key, cand in first.items()]


def restrict_to(candidates: Iterable[Candidate], known: Collection[str]) -> list[Candidate]:
    return [c for c in candidates if c.source in known and c.target in known and c.source != c.target]


_KEY = ["source", "target", "kind"]


def merge_table(parts: Iterable[Iterable[Candidate]], known: Collection[str]) -> CandidateTable:
    """`merge_candidates(restrict_to(...))` over columns: the same candidates in the same order (first
    appearance of each key). Keys proposed once pass as rows; the others, far fewer, are merged as Candidates
    by `merge_candidates` itself."""
    ids = pl.Series(list(known), dtype=pl.String).implode()
    frame = (CandidateTable.concat(parts).frame
             .filter(pl.col("source").is_in(ids) & pl.col("target").is_in(ids) & (pl.col("source") != pl.col("target")))
             .with_row_index("_i"))
    copies = pl.len().over(_KEY) > 1
    many = frame.filter(copies)
    if not many.height:
        return CandidateTable(frame.drop("_i"))
    first = many.group_by(_KEY, maintain_order=True).agg(pl.col("_i").first())["_i"]
    merged = candidates_frame(merge_candidates(CandidateTable(many.drop("_i")))).with_columns(_i=first)
    return CandidateTable(pl.concat([frame.filter(~copies), merged.select(frame.columns)]).sort("_i").drop("_i"))
