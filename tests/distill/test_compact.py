"""Sharing pydantic's per-instance set of given field names changes no value and no fields set, and the
column-wise candidate frame equals the row-wise one it replaced."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import BaseModel

from distill.candidates.model import (
    CANDIDATE_SCHEMA,
    Candidate,
    candidates_frame,
    candidates_from_frame,
    merge_candidates,
)
from distill.compact import share_fields_sets
from graph_schema.models import Evidence, Provenance, Relation


def _relation(source: str, count: int) -> Relation:
    return Relation(source=source, target="t", kind="complement", score=0.5, reasons=(f"bought together {count}",),
                    evidence=Evidence(copurchase_count=count, lift=1.5),
                    provenance=Provenance(run_id="r", stage="rank:copurchase"))


def test_relations_share_one_fields_set_and_keep_their_values() -> None:
    a, b = _relation("a", 1), _relation("b", 2)
    before = (set(a.model_fields_set), set(a.evidence.model_fields_set), a.model_dump())
    share_fields_sets(a), share_fields_sets(b)
    assert a.model_fields_set is b.model_fields_set
    assert a.evidence.model_fields_set is b.evidence.model_fields_set
    assert (a.model_fields_set, a.evidence.model_fields_set, a.model_dump()) == before
    assert a.model_dump(exclude_unset=True) == _relation("a", 1).model_dump(exclude_unset=True)
    other = _relation("c", 3).model_copy(update={"score": 0.7})
    share_fields_sets(other)
    copied = a.model_copy(update={"score": 0.9})
    assert copied.score == 0.9 and a.score == 0.5
    assert copied.model_fields_set is not a.model_fields_set and b.model_fields_set == before[0]


def test_a_model_that_is_not_frozen_is_refused() -> None:
    class Loose(BaseModel):
        x: int = 0

    with pytest.raises(TypeError, match="not frozen"):
        share_fields_sets(Loose(x=1))


def _row_wise(candidates: list[Candidate]) -> pl.DataFrame:
    rows = [dict(c.__dict__) for c in candidates]
    for row in rows:
        row["origins"] = list(row["origins"])
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)


def test_the_candidate_frame_is_the_row_wise_frame() -> None:
    found = [
        Candidate(source="a", target="b", kind="complement", origins=("copurchase",), copurchase_count=3, lift=2.0),
        Candidate(source="a", target="b", kind="complement", origins=("neighbour",), neighbour=0.4,
                  neighbour_count=2),
        Candidate(source="b", target="c", kind="substitute", origins=("similarity",), same_leaf=True,
                  text_similarity=0.8, query="usb cable", llm_score=0.9, llm_reason="fits", llm_model="m"),
    ]
    merged = merge_candidates(found)
    frame = candidates_frame(merged)
    assert frame.equals(_row_wise(merged))
    assert frame.height == 2 and frame["origins"].to_list()[0] == ["copurchase", "neighbour"]
    again = candidates_from_frame(frame)
    assert again == merged
    assert [c.model_fields_set for c in again] == [set(CANDIDATE_SCHEMA)] * 2


def test_a_candidate_proposed_once_is_kept_as_it_is_and_copies_are_merged() -> None:
    once = Candidate(source="a", target="c", kind="complement", origins=("category",), category_score=0.5)
    a = Candidate(source="a", target="b", kind="complement", origins=("copurchase",), copurchase_count=3)
    b = Candidate(source="a", target="b", kind="complement", origins=("neighbour",), copurchase_count=5,
                  query="cable")
    merged = merge_candidates([a, once, b])
    assert [c.key for c in merged] == [a.key, once.key]
    assert merged[1] is once
    assert merged[0].origins == ("copurchase", "neighbour") and merged[0].copurchase_count == 5
    assert merged[0].query == "cable" and a.origins == ("copurchase",) and a.copurchase_count == 3
