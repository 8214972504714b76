"""Pruning: every rejection reason, duplicate merging, substitute symmetry and symmetric degree caps,
near-duplicate detection."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from distill.stages.prune import (
    PRUNE_STAGE,
    find_near_duplicates,
    near_duplicate_groups,
    normalized_title,
    prune,
)
from graph_schema.kinds import RelationKind
from graph_schema.models import Product, Provenance, Relation


def _p(pid: str, title: str, leaf: str = "Cases", brand: str | None = "Shellwise") -> Product:
    return Product(id=pid, title=title, category=("Electronics", leaf), brand=brand)


PRODUCTS = {
    p.id: p
    for p in [
        _p("phone", "Novaphone N12", "Smartphones", "Novaphone"),
        _p("phone2", "Kestrel K7", "Smartphones", "Kestrel"),
        _p("phone3", "Orbit O5", "Smartphones", "Orbit"),
        _p("case", "Silicone Case for Novaphone N12"),
        _p("case-dup", "Silicone case for NOVAPHONE N12!"),
        _p("case2", "Rugged Case for Novaphone N12", brand="ArmorLeaf"),
        _p("glass", "Screen Protector for Novaphone N12", "Screen Protectors", "ClearGuard"),
        _p("charger", "20W USB-C Charger", "Chargers", "Ampero"),
        _p("cable", "USB-C Cable", "Cables", "Ampero"),
    ]
}
RUN = Provenance(run_id="r1", stage="test")


def rel(source: str, target: str, kind: RelationKind = "complement", score: float = 0.8,
        reasons: tuple[str, ...] = ("fits",)) -> Relation:
    return Relation(source=source, target=target, kind=kind, score=score, reasons=reasons, provenance=RUN)


def run(relations: list[Relation], **kw: object) -> tuple[set[tuple[str, str, str]], Counter[str]]:
    args: dict[str, object] = {"max_complements": 10, "max_substitutes": 10, "min_score": 0.2} | kw
    result = prune(relations, PRODUCTS, **args)  # type: ignore[arg-type]
    assert all(r.stage == PRUNE_STAGE and r.raw for r in result.rejections)
    return {r.key for r in result.relations}, Counter(r.reason for r in result.rejections)


def test_valid_relations_pass_unchanged() -> None:
    relations = [rel("phone", "case"), rel("phone", "glass", score=0.5)]
    result = prune(relations, PRODUCTS, max_complements=10, max_substitutes=10, min_score=0.2)
    assert list(result.rejections) == []
    assert list(result.relations) == relations


def test_self_loop_is_rejected() -> None:
    loop = Relation.model_construct(source="phone", target="phone", kind="complement", score=0.9,
                                    reasons=("x",), provenance=RUN)  # bypasses the model's own check
    kept, reasons = run([loop, rel("phone", "case")])
    assert kept == {("phone", "case", "complement")} and reasons == Counter(self_loop=1)


def test_unknown_source_and_target_are_rejected() -> None:
    kept, reasons = run([rel("ghost", "case"), rel("phone", "ghost"), rel("phone", "case")])
    assert kept == {("phone", "case", "complement")}
    assert reasons == Counter(unknown_source=1, unknown_target=1)


def test_below_threshold() -> None:
    kept, reasons = run([rel("phone", "case", score=0.19), rel("phone", "glass", score=0.2)])
    assert kept == {("phone", "glass", "complement")} and reasons == Counter(below_threshold=1)


def test_duplicates_merge_max_score_and_union_of_reasons() -> None:
    copies = [
        rel("phone", "case", score=0.5, reasons=("protects the phone",)),
        rel("phone", "case", score=0.9, reasons=("bought together", "fits N12")),
        rel("phone", "case", score=0.7, reasons=("fits N12", "same brand family", "extra reason")),
    ]
    result = prune(copies, PRODUCTS, max_complements=10, max_substitutes=10, min_score=0.2)
    [merged] = result.relations
    assert merged.score == 0.9
    assert merged.reasons == ("bought together", "fits N12", "same brand family")  # best first, <= 3
    assert [r.reason for r in result.rejections] == ["duplicate", "duplicate"]


def test_near_duplicates_are_never_complements_but_may_be_substitutes() -> None:
    near = {frozenset(("case", "case-dup"))}
    kept, reasons = run(
        [rel("case", "case-dup"), rel("case-dup", "case"), rel("case", "case-dup", "substitute")],
        near_duplicates=near,
    )
    assert kept == {("case", "case-dup", "substitute"), ("case-dup", "case", "substitute")}
    assert reasons == Counter(near_duplicate_complement=2)


def test_substitutes_are_made_symmetric_with_same_score_and_reasons() -> None:
    result = prune([rel("case", "case2", "substitute", 0.6, ("both N12 cases",))], PRODUCTS,
                   max_complements=10, max_substitutes=10, min_score=0.2)
    by_key = {r.key: r for r in result.relations}
    back = by_key[("case2", "case", "substitute")]
    assert back.score == 0.6 and back.reasons == ("both N12 cases",)
    # An existing reverse edge is kept as it is, not overwritten by the mirror.
    result = prune([rel("case", "case2", "substitute", 0.6), rel("case2", "case", "substitute", 0.4)], PRODUCTS,
                   max_complements=10, max_substitutes=10, min_score=0.2)
    assert {r.key: r.score for r in result.relations}[("case2", "case", "substitute")] == 0.4
    # Complements stay directed.
    kept, _ = run([rel("phone", "case")])
    assert ("case", "phone", "complement") not in kept


def test_complement_cap_keeps_best_per_source() -> None:
    kept, reasons = run(
        [rel("phone", "case", score=0.9), rel("phone", "glass", score=0.7), rel("phone", "charger", score=0.8)],
        max_complements=2,
    )
    assert kept == {("phone", "case", "complement"), ("phone", "charger", "complement")}
    assert reasons == Counter(over_degree_cap=1)


def test_substitute_cap_keeps_symmetry() -> None:
    # Cap 1. Pairs best first: phone~phone2 (0.9) kept both ways; phone~phone3 (0.8) dropped both ways as
    # phone is full; phone2~phone3 (0.5) dropped both ways as phone2 is full, although phone3 has room.
    relations = [
        rel("phone", "phone2", "substitute", 0.9),
        rel("phone", "phone3", "substitute", 0.8),
        rel("phone3", "phone2", "substitute", 0.5),
    ]
    result = prune(relations, PRODUCTS, max_complements=10, max_substitutes=1, min_score=0.2)
    keys = {r.key for r in result.relations}
    assert keys == {("phone", "phone2", "substitute"), ("phone2", "phone", "substitute")}
    assert Counter(r.reason for r in result.rejections) == Counter(over_degree_cap=4)
    for s, t, k in keys:
        assert (t, s, k) in keys
    degree = Counter(s for s, _, _ in keys)
    assert max(degree.values()) <= 1


def test_rejected_relation_is_recoverable_from_raw() -> None:
    original = rel("phone", "case", score=0.1, reasons=("weak",))
    result = prune([original], PRODUCTS, max_complements=10, max_substitutes=10, min_score=0.2)
    [rejection] = result.rejections
    assert Relation.model_validate_json(rejection.raw or "") == original
    assert "phone->case" in rejection.item


def test_normalized_title_equality_finds_duplicates_without_embeddings() -> None:
    products = list(PRODUCTS.values())
    assert normalized_title("Silicone case for NOVAPHONE N12!") == "silicone case for novaphone n12"
    assert find_near_duplicates(products, None) == {frozenset(("case", "case-dup"))}


def test_embedding_near_duplicates_need_same_leaf_and_brand() -> None:
    products = [PRODUCTS["case"], PRODUCTS["case2"], PRODUCTS["glass"], PRODUCTS["charger"]]
    same = np.array([1.0, 0.0], dtype=np.float32)
    vectors = np.stack([same, same, same, np.array([0.0, 1.0], dtype=np.float32)])
    # case/case2: same leaf, different brands -> not duplicates; case/glass: different leaf -> not.
    assert find_near_duplicates(products, vectors) == set()
    unbranded = [_p("a", "Clear case A", brand=None), _p("b", "Clear case (A)", brand="Shellwise"), PRODUCTS["glass"]]
    assert find_near_duplicates(unbranded, vectors[:3]) == {frozenset(("a", "b"))}
    with pytest.raises(ValueError, match="n_products"):
        find_near_duplicates(products, vectors[:2])


def test_near_duplicates_with_a_real_retriever() -> None:
    from distill.evidence.embed import default_encoder
    from distill.evidence.retrieval import CatalogRetriever

    products = list(PRODUCTS.values()) + [_p("case-3", "Silicone Case for Novaphone N12 (Black)")]
    retriever = CatalogRetriever.build(products, default_encoder())
    pairs = find_near_duplicates(products, retriever, threshold=0.95)
    assert frozenset(("case", "case-dup")) in pairs
    assert frozenset(("case", "case2")) not in pairs  # another brand's case is a substitute, not a duplicate
    assert all(a in PRODUCTS or a == "case-3" for pair in pairs for a in pair)


def test_near_duplicate_groups_are_connected_components() -> None:
    groups = near_duplicate_groups([frozenset(("a", "b")), frozenset(("b", "c")), frozenset(("x", "y"))])
    assert groups == [{"a", "b", "c"}, {"x", "y"}]
