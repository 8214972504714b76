"""The ranking stage at catalog scale: fit time, scoring time and peak memory of the learned complement
ranker on a synthetic 50k-product catalog with a basket log, each as a ratio to the candidate-generation
step of the same run (pool + features over every product, in the stage's blocks). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_rank.py --products 50000 --baskets 60000
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from distill.stages.rank.context import BehaviourStats, CatalogView
from distill.stages.rank.features import pair_features
from distill.stages.rank.model import fit_ranker
from distill.stages.rank.pool import build_pool
from distill.stages.rank.stage import SCORING_BLOCK, training_frame
from distill.stages.rank.training import TrainingSet
from graph_schema.models import Product

T = TypeVar("T")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measured(label: str, work: Callable[[], T]) -> tuple[T, float, float]:
    """Run `work`; return its result, wall seconds and peak RSS growth (MB, sampled every 5 ms)."""
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    print(f"  {label}: {seconds:.1f} s, peak +{peak[0] - base:.0f} MB", flush=True)
    return result, seconds, peak[0] - base


def synthetic(n_products: int, n_baskets: int, seed: int = 0) -> tuple[list[Product], pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    leaves = max(n_products // 100, 2)
    leaf = rng.integers(0, leaves, n_products)
    words = [f"w{i}" for i in range(5000)]
    products = [Product(id=f"p{i}", title=" ".join(rng.choice(words, 5)), brand=f"b{i % 700}",
                        category=(f"dept{leaf[i] % 20}", f"leaf{leaf[i]}"), price=float(rng.integers(1, 500)))
                for i in range(n_products)]
    vectors = rng.standard_normal((n_products, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    popularity = 1.0 / np.arange(1, n_products + 1) ** 0.8
    popularity /= popularity.sum()
    sizes = rng.integers(2, 10, n_baskets)
    items = rng.choice(n_products, size=int(sizes.sum()), p=popularity)
    basket = np.repeat(np.arange(n_baskets), sizes)
    baskets = pl.DataFrame({"basket_id": [f"o{b}" for b in basket], "product_id": [f"p{i}" for i in items]}).unique()
    return products, baskets, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--baskets", type=int, default=60_000)
    args = parser.parse_args()
    products, baskets, vectors = synthetic(args.products, args.baskets)
    print(f"synthetic catalog: {len(products)} products, {baskets['basket_id'].n_unique()} baskets, "
          f"{baskets.height} rows")
    catalog = CatalogView.build(products, vectors)
    everyone = np.arange(len(products), dtype=np.int32)

    full = BehaviourStats.build(baskets, catalog, max_basket_size=50)
    def label_frames() -> tuple[TrainingSet, dict[int, int]]:
        train, positives, _, _ = training_frame(catalog, baskets, max_basket_size=50)
        return train, positives

    (train, positives), label_s, label_mb = measured("label folds (5 x pool + features of labelled sources)",
                                                     label_frames)
    fit, fit_s, fit_mb = measured("fit (LightGBM LambdaRank, early stopping)",
                                  lambda: fit_ranker(train, positives, fit_baskets=int(0.8 * args.baskets)))
    del train
    timings = {"generate": 0.0, "score": 0.0}
    pairs_scored = [0]

    def generate_and_score() -> None:
        # as the rank stage does it: SCORING_BLOCK source products per pass
        for start in range(0, len(everyone), SCORING_BLOCK):
            t = time.perf_counter()
            pool, smoothed = build_pool(catalog, full, everyone[start:start + SCORING_BLOCK])
            frame = pair_features(pool, smoothed, catalog, full)
            timings["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            fit.ranker.score(frame)
            timings["score"] += time.perf_counter() - t
            pairs_scored[0] += frame.height

    _, _, loop_mb = measured("candidate generation + scoring of every product, in blocks", generate_and_score)
    gen_s, score_s = timings["generate"], timings["score"]
    print(f"  of which candidate generation {gen_s:.1f} s, scoring {score_s:.1f} s ({pairs_scored[0]} pairs)")
    print(f"ranker: {fit.reason}")
    print(f"ratios to candidate generation ({gen_s:.1f} s): label folds {label_s / gen_s:.2f}x, fit {fit_s / gen_s:.2f}x, "
          f"scoring {score_s / gen_s:.2f}x time; peak memory (MB over the start): label folds {label_mb:.0f}, "
          f"fit {fit_mb:.0f}, generation + scoring {loop_mb:.0f} (fit / generation {fit_mb / max(loop_mb, 1):.2f}x)")


if __name__ == "__main__":
    main()
