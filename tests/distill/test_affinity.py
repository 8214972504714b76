"""Complements by textual affinity: cross-shelf text neighbours, scored without the behaviour term and
discounted below pairs the order log supports."""

from __future__ import annotations

import numpy as np

from distill.candidates.generators import EmbeddingTable, affinity_candidates
from distill.candidates.model import Candidate
from distill.stages.scoring import AFFINITY_FACTOR, BEHAVIOUR_SOURCES, final_score
from graph_schema.models import Product


def _unit(*values: float) -> list[float]:
    vector = np.array(values, dtype=np.float32)
    return list(vector / np.linalg.norm(vector))


def _catalog() -> tuple[list[Product], EmbeddingTable]:
    products = [
        Product(id="cam", title="Nikon D7100 camera", category=("Photo", "Cameras")),
        Product(id="cam2", title="Nikon D7200 camera", category=("Photo", "Cameras")),
        Product(id="bat", title="EN-EL15 battery for Nikon D7100", category=("Photo", "Batteries")),
        Product(id="mug", title="Coffee mug", category=("Kitchen", "Mugs")),
    ]
    vectors = np.array(
        [_unit(1, 0.1, 0), _unit(1, 0.12, 0), _unit(0.8, 0.6, 0), _unit(0, 0, 1)], dtype=np.float32
    )
    return products, EmbeddingTable(ids=tuple(p.id for p in products), vectors=vectors)


def test_affinity_keeps_only_other_shelves_above_the_threshold() -> None:
    products, table = _catalog()
    leaf = {p.id: p.leaf_category for p in products}
    found = affinity_candidates(products[:1], table, leaf=leaf, per_product=5, min_similarity=0.5)
    assert [(c.source, c.target, c.kind) for c in found] == [("cam", "bat", "complement")]
    assert found[0].origins == ("affinity",) and not found[0].same_leaf
    assert found[0].text_similarity is not None and found[0].text_similarity > 0.5
    # same shelf (cam2) is a substitute, not a complement; the mug is below the threshold
    assert not affinity_candidates(products[3:], table, leaf=leaf, per_product=5, min_similarity=0.5)


def test_affinity_only_pairs_are_scored_without_behaviour_and_below_ordered_pairs() -> None:
    available = frozenset({"similarity", "retrieval"} | BEHAVIOUR_SOURCES)
    affinity = Candidate(source="cam", target="bat", kind="complement", origins=("affinity",), text_similarity=0.8)
    # the same pair without the affinity origin would be scored as "never bought together": near zero
    unobserved = affinity.model_copy(update={"origins": ("similarity",)})
    ordered = affinity.model_copy(update={"origins": ("affinity", "copurchase"), "copurchase_count": 5, "lift": 8.0})
    assert final_score(affinity, available) > final_score(unobserved, available)
    assert final_score(ordered, available) > final_score(affinity, available)
    without_behaviour = frozenset({"similarity", "retrieval"})
    assert final_score(affinity, available) == final_score(
        affinity.model_copy(update={"origins": ("similarity",)}), without_behaviour
    ) * AFFINITY_FACTOR
