"""The split is stable across processes, close to 80/20, and the distiller never sees held-out sessions."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from distill.ingest.catalog import Interactions
from distill.ingest.datasets import load_bundlerec
from distill.evidence.retrieval import CatalogRetriever
from distill.run.pipeline import run_pipeline
from distill.settings import DistillSettings
from evaluation.groundtruth import bundlerec_eval_data
from evaluation.run import evaluate
from evaluation.split import is_test, partition, split_ids, unit_hash
from tests.evaluation import write_tiny_bundlerec

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_unit_hash_is_uniform_in_unit_interval_and_seeded() -> None:
    values = [unit_hash(str(i), 0) for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55
    assert [unit_hash(str(i), 1) for i in range(50)] != values[:50]


def test_split_is_80_20_within_tolerance() -> None:
    split = split_ids((f"session-{i}" for i in range(10_000)), seed=0)
    assert split.size == 10_000
    assert not split.train & split.test
    # Binomial(10000, 0.2): sd = 40, so +-200 is five standard deviations.
    assert 1_800 <= len(split.test) <= 2_200
    other = split_ids((f"session-{i}" for i in range(10_000)), seed=1)
    assert other.test != split.test


def test_split_is_stable_across_processes() -> None:
    """Built-in hash() changes with PYTHONHASHSEED; the split must not."""
    ids = [f"s{i}" for i in range(300)]
    here = sorted(split_ids(ids, seed=3).test)
    code = ("import sys; from evaluation.split import split_ids; "
            "print(','.join(sorted(split_ids([f's{i}' for i in range(300)], seed=3).test)))")
    for hash_seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT), "PATH": ""},
        )
        assert out.stdout.strip().split(",") == here


def test_partition_refuses_unknown_ids() -> None:
    split = split_ids(["a", "b", "c"], seed=0)
    frame = pl.DataFrame({"basket_id": ["a", "b", "zz"], "product_id": ["1", "2", "3"]})
    with pytest.raises(ValueError, match="not in the split"):
        partition(frame, "basket_id", split)
    train, test = partition(frame.head(2), "basket_id", split)
    assert train.height + test.height == 2
    assert all(not is_test(b) for b in train["basket_id"])


def _pairs(baskets: pl.DataFrame) -> set[frozenset[str]]:
    out: set[frozenset[str]] = set()
    for _, items in baskets.group_by("basket_id"):
        out.update(frozenset(p) for p in itertools.combinations(sorted(set(items["product_id"])), 2))
    return out


def test_distillation_sees_only_training_sessions(tmp_path: Path) -> None:
    folder = write_tiny_bundlerec(tmp_path / "bundlerec")
    raw = load_bundlerec(folder)
    data = bundlerec_eval_data(raw, seed=0)
    test_sessions = data.split.test
    assert test_sessions, "the tiny dataset must hold test sessions for this test to mean anything"
    assert raw.interactions is not None
    baskets = raw.interactions.baskets
    test_only_pairs = _pairs(baskets.filter(pl.col("basket_id").is_in(list(test_sessions)))) - _pairs(
        baskets.filter(~pl.col("basket_id").is_in(list(test_sessions)))
    )
    assert test_only_pairs, "canary needs pairs that co-occur only in held-out sessions"

    seen: list[Interactions | None] = []

    def spy(products, interactions, settings, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(interactions)
        return run_pipeline(products, interactions, settings, **kwargs)

    retriever = CatalogRetriever.build(list(raw.catalog.products), None)
    settings = DistillSettings(data_dir=tmp_path / "data", use_text_similarity=False)
    evaluate("bundlerec", folder, settings=settings, ablations=True, progress=False, run_pipeline=spy,
             retriever=retriever)
    assert len(seen) == 4  # full + no behaviour + no text similarity + no learned ranker
    for interactions in seen:
        assert interactions is not None
        given = interactions.baskets
        assert not set(given["basket_id"].to_list()) & test_sessions
        assert not _pairs(given) & test_only_pairs  # canary: no held-out co-occurrence reached the pipeline
        # and nothing was lost on the training side
        assert set(given["basket_id"].to_list()) == set(baskets["basket_id"].to_list()) - test_sessions
