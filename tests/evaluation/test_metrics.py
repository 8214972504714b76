"""Every metric against small cases computed by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics import (
    content_words,
    hit_at_k,
    ndcg_at_k,
    outside_catalog_share,
    reason_quality,
    recall_at_k,
    score_rankings,
    shares_content_word,
    stem,
    top_k,
)
from graph_schema.models import Provenance, Relation

L2 = math.log2


def test_top_k_drops_query_and_repeats() -> None:
    assert top_k(["q", "a", "a", "b", "c"], 2, query="q") == ["a", "b"]
    with pytest.raises(ValueError):
        top_k(["a"], 0)


def test_hit_at_k() -> None:
    assert hit_at_k(["a", "b", "c"], {"c"}, 3) == 1.0
    assert hit_at_k(["a", "b", "c"], {"c"}, 2) == 0.0
    assert hit_at_k([], {"c"}, 10) == 0.0


def test_recall_at_k() -> None:
    assert recall_at_k(["a", "x", "b", "y"], {"a", "b", "c", "d"}, 3) == pytest.approx(2 / 4)
    assert recall_at_k(["a", "a", "a"], {"a", "b"}, 3) == pytest.approx(1 / 2)  # a repeat is not a second hit


def test_ndcg_at_k_hand_computed() -> None:
    # hits at ranks 2 and 3 of 3 relevant, k=3: DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3) + 1/log2(4)
    expected = (1 / L2(3) + 1 / L2(4)) / (1 + 1 / L2(3) + 1 / L2(4))
    assert ndcg_at_k(["x", "a", "b"], {"a", "b", "c"}, 3) == pytest.approx(expected)
    # one relevant item at rank 2: ideal DCG is over min(k, |relevant|) = 1 position
    assert ndcg_at_k(["x", "a"], {"a"}, 10) == pytest.approx(1 / L2(3))
    assert ndcg_at_k(["a", "x"], {"a"}, 10) == pytest.approx(1.0)
    # more relevant items than k: ideal is k hits
    assert ndcg_at_k(["a", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(1.0)


def test_metrics_refuse_queries_without_answers() -> None:
    for metric in (hit_at_k, recall_at_k, ndcg_at_k):
        with pytest.raises(ValueError):
            metric(["a"], set(), 10)


def test_score_rankings_means_coverage_and_catalog_coverage() -> None:
    queries = [("q1", {"a"}), ("q2", {"b", "c"}), ("q3", {"d"})]
    rankings = [["q1", "a", "x"], ["x", "c"], []]  # q1 lists itself first: dropped before cutting to k
    metrics, per_query = score_rankings(queries, rankings, k=2, catalog_size=10)
    assert [s.hit for s in per_query] == [1.0, 1.0, 0.0]
    assert metrics.hit == pytest.approx(2 / 3)
    assert metrics.recall == pytest.approx((1 + 0.5 + 0) / 3)
    # q1: hit at rank 1 -> 1; q2: hit at rank 2, ideal over 2 -> (1/log2 3) / (1 + 1/log2 3); q3: 0
    assert metrics.ndcg == pytest.approx((1 + (1 / L2(3)) / (1 + 1 / L2(3))) / 3)
    assert metrics.coverage == pytest.approx(2 / 3)
    assert metrics.unanswered == pytest.approx(1 / 3)
    # shown items: {a, x} from q1 and {x, c} from q2 -> 3 of 10
    assert metrics.catalog_coverage == pytest.approx(0.3)
    assert metrics.as_dict()["hit@2"] == pytest.approx(0.666667)


def test_score_rankings_checks_lengths() -> None:
    with pytest.raises(ValueError):
        score_rankings([("q", {"a"})], [], k=10, catalog_size=5)


def _rel(source: str, target: str) -> Relation:
    return Relation(source=source, target=target, kind="complement", score=0.5, reasons=("r",),
                    provenance=Provenance(run_id="t"))


def test_outside_catalog_share() -> None:
    relations = [_rel("a", "b"), _rel("a", "zz"), _rel("yy", "b"), _rel("b", "a")]
    assert outside_catalog_share(relations, {"a", "b"}) == pytest.approx(0.5)
    assert outside_catalog_share([], {"a"}) == 0.0


def test_stemming_and_content_words() -> None:
    assert stem("batteries") == "battery"
    assert stem("cables") == "cable"
    assert stem("charging") == "charg"
    assert content_words("The Batteries for a camera, 2 of them") == {"battery", "camera"}


def test_reason_quality_counts_hits_sharing_a_word() -> None:
    assert shares_content_word(["Spare battery for the camera"], "Batteries")
    assert not shares_content_word(["Bought together in 4 baskets"], "Storage Devices")
    quality = reason_quality([
        (("Spare battery for the camera",), "Batteries"),
        (("Bought together in 4 baskets",), "Storage Devices"),
        (("Often bought together", "Stores photos: memory card"), "photo storage"),
    ])
    assert (quality.hits, quality.overlapping) == (3, 2)
    assert quality.share == pytest.approx(2 / 3)
    assert reason_quality([]).share is None
