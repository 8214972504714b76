"""Resuming a run: stage outputs are reused only when the inputs that shaped them are unchanged. Changed
interactions or output-shaping settings re-run the stages they feed (and everything after), without error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from distill.ingest.catalog import InteractionReport, Interactions
from distill.run.pipeline import run_pipeline
from distill.run.state import RunInfo, interactions_fingerprint, stale_stages
from distill.settings import DistillSettings
from graph_schema.models import Product
from tests.fakes.responders import HashingEncoder, sample_subset


@pytest.fixture(scope="module")
def catalog() -> tuple[list[Product], Interactions]:
    return sample_subset(("Phones",), limit=28)


def _baskets(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"basket_id": pl.String, "product_id": pl.String}, orient="row")


def test_interactions_fingerprint_ignores_row_order_and_sees_any_change() -> None:
    rows = [("o1", "A"), ("o1", "B"), ("o2", "A")]
    same = interactions_fingerprint(_baskets(rows))
    assert same == interactions_fingerprint(_baskets(rows[::-1]))
    assert same != interactions_fingerprint(_baskets([*rows[:2], ("o2", "B")]))
    # Concatenation cannot collide: ("o1","AB") is not ("o1A","B").
    assert interactions_fingerprint(_baskets([("o1", "AB")])) != interactions_fingerprint(_baskets([("o1A", "B")]))
    assert interactions_fingerprint(None) is None


def test_stale_stages_name_the_first_stage_each_change_feeds() -> None:
    base = RunInfo(run_id="r", catalog_fingerprint="c", product_count=1, interactions_fingerprint="i",
                   settings={"enrich_batch_size": 8, "use_behaviour": True, "use_text_similarity": True,
                             "min_copurchase_support": 2, "max_complements": 10, "max_substitutes": 10,
                             "verify_batch_size": 10, "use_learned_ranker": True, "min_score": 0.2,
                             "min_complement_score": 0.0})
    assert stale_stages(base, base) == {}
    changed = base.model_copy(update={"interactions_fingerprint": "j",
                                      "settings": {**base.settings, "min_score": 0.5, "max_substitutes": 3}})
    stale = stale_stages(base, changed)
    assert set(stale) == {"behaviour", "similarity", "prune"}
    assert "min_score changed (0.2 -> 0.5)" in stale["prune"]
    # A run.json from before the fingerprints were kept: nothing it stored is trusted.
    legacy = base.model_copy(update={"interactions_fingerprint": None, "settings": {}})
    assert "behaviour" in stale_stages(legacy, base) and "enrich" in stale_stages(legacy, base)


def _run(products: list[Product], interactions: Interactions, tmp_path: Path, **settings: object):  # type: ignore[no-untyped-def]
    return run_pipeline(products, interactions, DistillSettings(data_dir=tmp_path, **settings),  # type: ignore[arg-type]
                        run_id="fixed", progress=False, encoder=HashingEncoder())


def _mtime(result, stage: str) -> int:  # type: ignore[no-untyped-def]
    return (result.run_dir / f"{stage}.parquet").stat().st_mtime_ns


def test_changed_interactions_rerun_behaviour_and_everything_after(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    first = _run(products, interactions, tmp_path)
    # A new order log: every basket of the old one plus many baskets pairing the first two products.
    a = products[0].id
    b = next(p.id for p in products if p.leaf_category != products[0].leaf_category)  # a complement pair
    extra = _baskets([(f"new{i}", pid) for i in range(50) for pid in (a, b)])
    more = Interactions(pl.concat([interactions.baskets, extra]), InteractionReport(source="more"))
    enrich_written = _mtime(first, "enrich")
    second = _run(products, more, tmp_path)
    assert _mtime(second, "enrich") == enrich_written  # not fed by interactions: reused
    assert any("re-ran from behaviour: the interactions changed" in note for note in second.report.notes)
    before = {(r.source, r.target): r.evidence.copurchase_count for r in first.relations}
    after = {(r.source, r.target): r.evidence.copurchase_count for r in second.relations}
    assert (after.get((a, b)) or 0) >= 50 > (before.get((a, b)) or 0)


def test_changed_caps_rerun_and_are_respected(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    first = _run(products, interactions, tmp_path, max_complements=6, max_substitutes=4)
    per_source = Counter((r.source, r.kind) for r in first.relations)
    assert max(per_source.values()) > 2, "the test needs a source with more than 2 relations of a kind"
    behaviour_written = _mtime(first, "behaviour")
    capped = _run(products, interactions, tmp_path, max_complements=6, max_substitutes=2, min_score=0.3)
    assert _mtime(capped, "behaviour") == behaviour_written  # max_substitutes feeds similarity onwards only
    assert all(n <= 2 for (_, kind), n in Counter((r.source, r.kind) for r in capped.relations).items()
               if kind == "substitute")
    # min_score floors substitutes; complements are calibrated probabilities with their own floor
    assert all(r.score >= 0.3 for r in capped.relations if r.kind == "substitute")
    tighter = _run(products, interactions, tmp_path, max_complements=2, max_substitutes=2, min_score=0.3)
    assert all(n <= 2 for n in Counter((r.source, r.kind) for r in tighter.relations).values())
