"""Peak resident memory of a distill run (no model) on a synthetic catalog with one very large leaf category.

    python benchmarks/bench_memory.py                   # largest leaf 40,000 products, against a 2 GB goal
    python benchmarks/bench_memory.py --largest 4000    # quick look

The run happens in a child process (a fresh interpreter), so the figure is the run's own peak RSS
(`ru_maxrss` of the child, or with --scope distill the highest of its stages' peaks), not this script's, printed against a goal (--goal-mb, 2 GB; a figure, not a
pass/fail). With --scope distill it also prints each stage's own peak RSS (Linux: the high-water mark reset
at every stage end) and wall time. The same child reports its RSS before the run (imports + catalog in
memory), the baseline the run adds to. The dense group x pool matrices the candidate generators used to build
would alone need largest^2 x 4 bytes (printed for comparison).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_WORD = re.compile(r"\w+")
_NOUNS = ("case", "charger", "cable", "stand", "sleeve", "mount", "lens", "strap", "adapter", "dock", "filter",
          "battery", "screen protector", "holder", "bag", "grip")
_ADJECTIVES = ("slim", "rugged", "wireless", "magnetic", "compact", "premium", "classic", "travel", "pro", "mini")


class HashedBagEncoder:
    """A deterministic stand-in for the MiniLM encoder (same dimension, L2-normalized hashed bag of words):
    the benchmark measures the pipeline's memory, not the model's speed. Nothing is downloaded."""

    model_name = "bench-hashed-bow"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, texts: Any, *, batch_size: int = 64, progress: bool = False) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[row, int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16) % self.dim] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def synthetic_catalog(largest: int, other_leaves: int, other_size: int, baskets: int, seed: int) -> tuple[Any, Any]:
    """Products (leaf 0 holds `largest`, the other leaves `other_size` each) and baskets that pair leaf-0
    products with one product of a partner leaf, so leaf-category co-purchase is above chance."""
    import random

    import polars as pl

    from distill.ingest.catalog import InteractionReport, Interactions
    from graph_schema.models import Product

    rng = random.Random(seed)
    products = []
    leaves = [largest] + [other_size] * other_leaves
    for leaf, size in enumerate(leaves):
        for i in range(size):
            brand = f"brand{rng.randrange(200)}"
            title = (f"{brand} {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} model {rng.randrange(5000)} "
                     f"for device {rng.randrange(300)}")
            products.append(Product(id=f"L{leaf}-{i:06d}", title=title, brand=brand,
                                    category=("Root", f"Dept{leaf % 3}", f"Leaf{leaf}")))
    by_leaf: list[list[str]] = []
    offset = 0
    for size in leaves:
        by_leaf.append([p.id for p in products[offset:offset + size]])
        offset += size
    rows: list[tuple[str, str]] = []
    for b in range(baskets):
        basket = f"b{b}"
        rows.append((basket, rng.choice(by_leaf[0])))
        partner = 1 + (b % other_leaves) if other_leaves else 0
        for _ in range(rng.randint(1, 3)):
            rows.append((basket, rng.choice(by_leaf[partner])))
    frame = pl.DataFrame(rows, schema={"basket_id": pl.String, "product_id": pl.String}, orient="row").unique()
    report = InteractionReport(source="synthetic", rows_read=len(rows), kept=frame.height)
    return products, Interactions(baskets=frame, report=report)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hwm_mb(reset: bool = False) -> float | None:
    """Peak RSS since the last reset (Linux `VmHWM`; `reset` starts a new window): the peak of one stage, not
    of the run so far. None where /proc does not offer it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            peak = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
        if reset:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
                clear.write("5")
        return peak
    except (OSError, StopIteration, ValueError):
        return None


def _distill(products: Any, interactions: Any, dim: int) -> dict[str, Any]:
    """The whole pipeline without a model. Each stage's peak RSS is the high-water mark between the end of
    the stage before and its own end (work between two stages counts for the later one)."""
    from distill.run import state as runs
    from distill.run.pipeline import run_pipeline
    from distill.settings import DistillSettings

    peaks: dict[str, float | None] = {}
    done, skipped = runs.RunState.done, runs.RunState.skipped

    def record_done(state: Any, report: Any, *args: Any, **kwargs: Any) -> Any:
        peaks[report.stage] = _hwm_mb(reset=True)
        return done(state, report, *args, **kwargs)

    def record_skipped(state: Any, stage: str, *args: Any, **kwargs: Any) -> Any:
        peaks[stage] = _hwm_mb(reset=True)
        return skipped(state, stage, *args, **kwargs)

    runs.RunState.done, runs.RunState.skipped = record_done, record_skipped  # type: ignore[method-assign,assignment]
    _hwm_mb(reset=True)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        settings = DistillSettings(data_dir=Path(tmp), llm_model=None)
        result = run_pipeline(products, interactions, settings, progress=False,
                              encoder=HashedBagEncoder(dim))  # type: ignore[arg-type]
    peaks["(after the last stage)"] = _hwm_mb()
    # resetting the high-water mark also resets ru_maxrss, so the run's peak is the highest window's
    windows = [mb for mb in peaks.values() if mb is not None]
    return {"relations": len(result.relations), "stage_peak_mb": peaks,
            "peak_mb": max(windows) if len(windows) == len(peaks) else None,
            "stage_seconds": {s.stage: s.wall_seconds for s in result.report.stages}}


def _generators(products: Any, interactions: Any, dim: int) -> dict[str, Any]:
    """Only the two generators that used to build dense group x pool matrices, over the whole catalog, with
    the behaviour view and embeddings the pipeline would give them."""
    import numpy as np

    from distill.candidates import generators as cand
    from distill.run.table import CATEGORY_FANOUT, CATEGORY_PER_CATEGORY, SUBSTITUTE_MIN_SIMILARITY

    vectors = HashedBagEncoder(dim).encode([p.title for p in products])
    table = cand.EmbeddingTable(ids=tuple(p.id for p in products), vectors=np.ascontiguousarray(vectors))
    view = cand.build_behaviour(interactions.baskets, products)
    members = cand.leaf_members(products)
    leaf = {p.id: p.leaf_category for p in products}
    ready = _rss_mb()
    found = cand.similarity_candidates(products, table, members=members, per_product=15,
                                       min_similarity=SUBSTITUTE_MIN_SIMILARITY)
    found += cand.category_candidates(products, view, table, members=members, min_support=2,
                                      categories=CATEGORY_FANOUT, per_category=CATEGORY_PER_CATEGORY, leaf=leaf)
    return {"candidates": len(found), "rss_inputs_ready_mb": round(ready)}


def child(args: argparse.Namespace) -> int:
    """Runs in the child process: build the catalog, run the chosen scope, print one JSON line of figures."""
    products, interactions = synthetic_catalog(args.largest, args.other_leaves, args.other_size, args.baskets,
                                               args.seed)
    before = _rss_mb()
    started = time.perf_counter()
    figures = (_distill if args.scope == "distill" else _generators)(products, interactions, args.dim)
    figures.update({"products": len(products), "baskets": interactions.baskets["basket_id"].n_unique(),
                    "seconds": time.perf_counter() - started, "rss_before_mb": before})
    print(json.dumps(figures))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--largest", type=int, default=40_000, help="products in the largest leaf category")
    parser.add_argument("--other-leaves", type=int, default=4)
    parser.add_argument("--other-size", type=int, default=2_000)
    parser.add_argument("--baskets", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension (MiniLM-L6: 384)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--goal-mb", type=float, default=2048, help="the peak RSS the figures are read against")
    parser.add_argument("--scope", choices=("distill", "generators"), default="distill",
                        help="the whole pipeline, or only similarity_candidates + category_candidates")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    command = [sys.executable, __file__, "--child", "--largest", str(args.largest), "--other-leaves",
               str(args.other_leaves), "--other-size", str(args.other_size), "--baskets", str(args.baskets),
               "--dim", str(args.dim), "--seed", str(args.seed), "--scope", args.scope]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
        return 2
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    peak = figures.get("peak_mb") or resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    dense = args.largest**2 * 4 / 2**20
    what = "distill (no model)" if args.scope == "distill" else "similarity + category candidates"
    print(f"{what} of {figures['products']:,} products (largest leaf {args.largest:,}), "
          f"{figures['baskets']:,} baskets, dim {args.dim}: "
          + (f"{figures['relations']:,} relations" if "relations" in figures else f"{figures['candidates']:,} candidates")
          + f" in {figures['seconds']:.0f} s")
    if "stage_peak_mb" in figures:
        seconds = figures["stage_seconds"]
        print(f"{'stage':<24}{'peak RSS MB':>12}{'of goal':>9}{'wall s':>9}")
        for stage, mb in figures["stage_peak_mb"].items():
            share = f"{mb / args.goal_mb:.0%}" if mb is not None else "?"
            wall = f"{seconds[stage]:.1f}" if stage in seconds else ""
            print(f"{stage:<24}{mb if mb is None else round(mb):>12}{share:>9}{wall:>9}")
    if "rss_inputs_ready_mb" in figures:
        print(f"rss_inputs_ready_mb: {figures['rss_inputs_ready_mb']}")
    print(f"peak RSS of the whole run {peak:,.0f} MB = {peak / args.goal_mb:.2f} x the {args.goal_mb:,.0f} MB goal "
          f"({'under' if peak <= args.goal_mb else 'OVER'}; before the run: {figures['rss_before_mb']:,.0f} MB)")
    print(f"one dense float32 {args.largest:,} x {args.largest:,} matrix alone: {dense:,.0f} MB "
          f"(float64 softmax: {2 * dense:,.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
