"""The columnar prune keeps and refuses exactly what the object-by-object prune did (tests/distill/
prune_reference.py, the code it replaced): same relations in the same order, same rejections, over random
relation sets that hit every step (duplicates, thresholds, near duplicates, mirrors, both degree caps)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from distill.stages.prune import prune
from graph_schema.models import Evidence, Product, Provenance, Relation
from tests.distill import prune_reference

IDS = [f"p{i}" for i in range(7)]
PRODUCTS = {pid: Product(id=pid, title=f"item {pid}", category=("Root", "Leaf")) for pid in IDS[:6]}
"""p6 is not in the catalog: relations touching it are refused as unknown."""
REASONS = ("fits", "bought together in 3 orders", "matches 'case'", "similar: 0.91 text similarity")


@st.composite
def relations(draw: st.DrawFn) -> list[Relation]:
    found = []
    for _ in range(draw(st.integers(0, 40))):
        source, target = draw(st.sampled_from(IDS)), draw(st.sampled_from(IDS))
        score = draw(st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]))
        reasons = tuple(draw(st.lists(st.sampled_from(REASONS), min_size=1, max_size=4, unique=True)))
        evidence = Evidence(copurchase_count=draw(st.sampled_from([None, 0, 3])),
                            lift=draw(st.sampled_from([None, 1.7])), query=draw(st.sampled_from([None, "case"])))
        fields = dict(source=source, target=target, kind=draw(st.sampled_from(["complement", "substitute"])),
                      score=score, reasons=reasons, evidence=evidence,
                      provenance=Provenance(run_id="r1", stage=draw(st.sampled_from(["rank:text", "similarity"]))))
        # self loops cannot be built validated; the pipeline never makes one, prune still refuses them
        found.append(Relation.model_construct(**fields) if source == target else Relation(**fields))
    return found


@settings(max_examples=200, deadline=None)
@given(relations(), st.integers(0, 3), st.integers(0, 3), st.sampled_from([None, 0.3, 0.6]),
       st.sets(st.frozensets(st.sampled_from(IDS[:6]), min_size=2, max_size=2), max_size=3))
def test_columnar_prune_agrees_with_the_object_prune(
    given_relations: list[Relation], max_complements: int, max_substitutes: int, min_complement: float | None,
    near: set[frozenset[str]],
) -> None:
    args = dict(max_complements=max_complements, max_substitutes=max_substitutes, min_score=0.2,
                min_complement_score=min_complement, near_duplicates=near)
    expected = prune_reference.prune(given_relations, PRODUCTS, **args)  # type: ignore[arg-type]
    result = prune(given_relations, PRODUCTS, **args)  # type: ignore[arg-type]
    assert list(result.relations) == expected.relations
    assert Counter(result.rejections) == Counter(expected.rejections)
