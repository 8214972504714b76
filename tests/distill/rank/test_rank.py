"""The learned ranking stage: the label split never leaks, the model learns what no single evidence knows,
a catalog without interactions still gets an ordering, and the nightly quality gate refuses a worse graph."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from distill.errors import QualityGateFailed
from distill.stages.rank import stage as stage_module
from distill.stages.rank.context import BehaviourStats, CatalogView
from distill.stages.rank.gate import quality_gate
from distill.stages.rank.labels import FOLDS, label_groups, split_baskets
from distill.stages.rank.stage import LLMEvidence, rank_complements
from graph_schema.models import Product, Provenance, Relation

BRANDS = [f"brand{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(60)]
LEAVES = [f"shelf{i}" for i in range(8)]


def two_feature_catalog(seed: int = 0) -> tuple[list[Product], pl.DataFrame]:
    """60 brands x 8 shelves. A shopper buys one product with the SAME brand on the NEXT shelf (i -> i+1).
    Most pairs are seen at most once, so their own co-purchase says little; same brand alone leaves 7
    candidates, the shelf pair alone 59; only both together find the partner."""
    rng = random.Random(seed)
    products = [Product(id=f"{b}-{leaf}", title=f"{b} {leaf} item", brand=b, category=("Shop", leaf))
                for b in BRANDS for leaf in LEAVES]
    rows: list[tuple[str, str]] = []
    for n in range(600):
        b = rng.choice(BRANDS)
        i = rng.randrange(len(LEAVES))
        basket = f"o{n}"
        rows += [(basket, f"{b}-{LEAVES[i]}"), (basket, f"{b}-{LEAVES[(i + 1) % len(LEAVES)]}")]
        noise = rng.choice(products).id
        if rng.random() < 0.3 and noise not in {r[1] for r in rows[-2:]}:
            rows.append((basket, noise))
    return products, pl.DataFrame(rows, schema={"basket_id": pl.String, "product_id": pl.String}, orient="row")


def _rank(products: list[Product], baskets: pl.DataFrame | None, **extra: object) -> stage_module.RankResult:
    return rank_complements(products, baskets, None, [p.id for p in products], llm=LLMEvidence.empty(),
                            max_complements=10, max_basket_size=50, near_duplicates=set(), run_id="r", model=None,
                            prompt_version=None, **extra)  # type: ignore[arg-type]


def test_folds_partition_the_baskets_and_label_groups_come_only_from_labels() -> None:
    _, baskets = two_feature_catalog()
    seen: set[str] = set()
    for fold in range(FOLDS):
        split = split_baskets(baskets, fold)
        features, labels = set(split.features["basket_id"]), set(split.labels["basket_id"])
        assert not features & labels
        assert features | labels == set(baskets["basket_id"])
        assert not labels & seen  # every basket labels in exactly one fold
        seen |= labels
    assert seen == set(baskets["basket_id"])


def test_a_pair_seen_only_in_the_label_part_never_feeds_a_behaviour_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    products, baskets = two_feature_catalog()
    # A pair that occurs in exactly one basket: wherever that basket labels, the pair must be absent from
    # the behaviour statistics built for that fold.
    lonely = ("o-lonely", products[0].id), ("o-lonely", products[-1].id)
    baskets = pl.concat([baskets, pl.DataFrame(list(lonely), schema=baskets.schema, orient="row")])
    built: list[tuple[set[str], BehaviourStats, CatalogView]] = []
    groups_seen: list[set[str]] = []
    real_build, real_groups = BehaviourStats.build, stage_module.label_groups

    def spy_build(frame: pl.DataFrame, catalog: CatalogView, *, max_basket_size: int) -> BehaviourStats:
        stats = real_build(frame, catalog, max_basket_size=max_basket_size)
        built.append((set(frame["basket_id"].to_list()), stats, catalog))
        return stats

    def spy_groups(labels: pl.DataFrame, *args: object, **kwargs: object) -> tuple[pl.DataFrame, pl.DataFrame]:
        groups_seen.append(set(labels["basket_id"].to_list()))
        return real_groups(labels, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stage_module.BehaviourStats, "build", staticmethod(spy_build))
    monkeypatch.setattr(stage_module, "label_groups", spy_groups)
    _rank(products, baskets)
    fold_builds = built[:FOLDS]
    assert len(groups_seen) == FOLDS
    for (feature_ids, stats, catalog), label_ids in zip(fold_builds, groups_seen, strict=True):
        assert not feature_ids & label_ids
        a, b = catalog.row[products[0].id], catalog.row[products[-1].id]
        pair = stats.pairs.filter((pl.col("s") == a) & (pl.col("t") == b))
        if "o-lonely" in label_ids:
            assert pair.height == 0
        else:
            assert pair.height == 1
    # the scoring pass afterwards sees every basket
    assert built[FOLDS][0] == set(baskets["basket_id"].to_list())


def test_the_ranker_learns_what_needs_two_features_together() -> None:
    products, baskets = two_feature_catalog()
    result = _rank(products, baskets)
    summary = result.summary
    assert summary.kind == "lambdarank", summary.reason
    learned = summary.validation["learned ranker"]["ndcg"]
    singles = {n: v["ndcg"] for n, v in summary.validation.items() if n != "learned ranker"}
    assert learned > max(singles.values()) + 0.15, summary.validation
    lists: dict[str, list[str]] = {}
    for relation in result.relations:
        lists.setdefault(relation.source, []).append(relation.target)
    right = sum(1 for p in products
                if f"{p.brand}-{LEAVES[(LEAVES.index(p.category[-1]) + 1) % len(LEAVES)]}" in lists.get(p.id, [])[:3])
    # The partner on the next shelf is among the first three complements for most products (chance: 3 in 479).
    assert right >= 0.5 * len(products), right
    assert all(0.0 <= r.score <= 1.0 for r in result.relations)


def test_the_same_log_in_another_row_order_gives_the_same_graph() -> None:
    """Ties (popularity, co-purchase counts) are broken by product, never by row order, so a rerun of the same
    night publishes the same complements with the same scores."""
    products, baskets = two_feature_catalog()
    first = _rank(products, baskets)
    shuffled = _rank(products, baskets.sample(fraction=1.0, shuffle=True, seed=7))
    assert first.model_text == shuffled.model_text
    assert [(r.source, r.target, r.score) for r in first.relations] == \
        [(r.source, r.target, r.score) for r in shuffled.relations]


def test_without_interactions_the_ordering_is_model_free_and_reported() -> None:
    products, _ = two_feature_catalog()
    result = _rank(products, None)
    assert result.summary.kind == "ordering"
    assert "no interactions" in result.summary.reason
    assert result.model_text is None
    assert len({r.source for r in result.relations}) == len(products)


def test_the_pipeline_without_interactions_still_publishes(tmp_path: Path) -> None:
    from distill.run.pipeline import publish, run_pipeline
    from distill.settings import DistillSettings
    from graph_store.embedded import EmbeddedStore
    from tests.fakes.responders import HashingEncoder, sample_subset

    products, _ = sample_subset(("Phones",), limit=28)
    settings = DistillSettings(data_dir=tmp_path)
    result = run_pipeline(products, None, settings, progress=False, encoder=HashingEncoder())
    assert result.report.ranker is not None and result.report.ranker.kind == "ordering"
    assert any(r.kind == "complement" for r in result.relations)
    version = publish(result, EmbeddedStore(settings.embedded_store_dir))
    assert version.ranker is not None and "no interactions" in version.ranker.reason


def _relation(source: str, target: str, score: float) -> Relation:
    return Relation(source=source, target=target, kind="complement", score=score, reasons=("r",),
                    provenance=Provenance(run_id="r"))


def test_the_quality_gate_refuses_a_clearly_worse_version() -> None:
    products, baskets = two_feature_catalog()
    good = _rank(products, baskets).relations
    rng = random.Random(1)
    ids = [p.id for p in products]
    worse = [_relation(pid, t, 0.5) for pid in ids for t in rng.sample([i for i in ids if i != pid], 10)]
    refused = quality_gate(worse, good, baskets, max_drop=0.1)
    assert not refused.passed and "refused" in refused.reason
    assert refused.new_ndcg < refused.current_ndcg
    assert quality_gate(good, good, baskets, max_drop=0.1).passed
    assert quality_gate(worse, good, None, max_drop=0.1).passed  # nothing to judge by


def test_nightly_does_not_publish_a_refused_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.run import nightly as nightly_module
    from distill.ingest.catalog import Interactions, InteractionReport
    from distill.run.pipeline import DistillResult
    from distill.settings import DistillSettings
    from graph_store.embedded import EmbeddedStore
    from tests.fakes.responders import HashingEncoder

    products, baskets = two_feature_catalog()
    interactions = Interactions(baskets=baskets, report=InteractionReport(source="test", rows_read=baskets.height,
                                                                          kept=baskets.height))
    settings = DistillSettings(data_dir=tmp_path)
    store = EmbeddedStore(settings.embedded_store_dir)
    first = nightly_module.nightly(products, interactions, settings, store, progress=False, encoder=HashingEncoder())
    assert first.published
    current = store.current_version()
    changed = [p.model_copy(update={"title": p.title + " v2", "content_hash": ""}) if i < 3 else p
               for i, p in enumerate(products)]
    changed = [Product.model_validate(p.model_dump(exclude={"content_hash"})) for p in changed]
    real = nightly_module.run_pipeline

    def sabotaged(*args: object, **kwargs: object) -> DistillResult:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        rng = random.Random(2)
        ids = [p.id for p in products]
        bad = [_relation(pid, t, 0.5) for pid in ids for t in rng.sample([i for i in ids if i != pid], 10)]
        return DistillResult(result.run_id, result.products, bad, result.rejections, result.report, result.run_dir,
                             result.catalog_fingerprint)

    monkeypatch.setattr(nightly_module, "run_pipeline", sabotaged)
    with pytest.raises(QualityGateFailed, match="refused"):
        nightly_module.nightly(changed, interactions, settings, store, progress=False, encoder=HashingEncoder())
    assert store.current_version() == current
