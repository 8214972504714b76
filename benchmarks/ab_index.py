"""Index lookups of this tree against another revision's `serve/`, in one process over the same mapped
files, calls interleaved one by one (old, new, new, old, ...) so background load on a shared machine hits
both alike. Prints p50/p99 of wall time and of the thread's CPU time per call, and their ratio; asserts
first that both answer the same on 200 random ids per case. Needs git; the revision must read this tree's
index format.

    python benchmarks/ab_index.py --against main                        # 1M products / 20M relations
    python benchmarks/ab_index.py --against 27bb6db --products 200000 --relations 4000000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def import_old_serve(revision: str, into: Path) -> Any:
    """`serve/` of `revision`, importable as the package `serve_old` (its own imports rewritten)."""
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", revision, "serve"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "serve").rename(into / "serve_old")
    for path in (into / "serve_old").glob("*.py"):
        text = re.sub(r"\b(from|import) serve(\.| import)", r"\1 serve_old\2", path.read_text(encoding="utf-8"))
        path.write_text(text, encoding="utf-8")
    sys.path.insert(1, str(into))
    import serve_old.index  # type: ignore[import-not-found]

    return serve_old.index.GraphIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="git revision whose serve/ is 'old'")
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--relations", type=int, default=20_000_000)
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per case and version")
    args = parser.parse_args()

    from benchmarks.synthetic import synthetic_columns
    from serve.index import GraphIndex

    scratch = Path(tempfile.mkdtemp(prefix="shelfgraph-ab-index-"))
    try:
        Old = import_old_serve(args.against, scratch)
        folder = GraphIndex.write_columns(*synthetic_columns(args.products, args.relations), scratch / "index")
        old, new = Old.open(folder), GraphIndex.open(folder)
        rng = random.Random(1)
        ids = [f"P{rng.randrange(args.products):07d}" for _ in range(args.calls * 5)]
        cases: dict[str, Callable[[Any, int], Any]] = {
            "complements k=10": lambda ix, i: ix.complements(ids[i], 10),
            "substitutes k=10": lambda ix, i: ix.substitutes(ids[i], 10),
            "filtered k=10": lambda ix, i: ix.complements(ids[i], 10, min_score=0.2, price_max=300.0, category="Group 3"),
            "cart of 5, k=10": lambda ix, i: ix.cart_addons(ids[5 * i : 5 * i + 5], 10),
        }
        print(f"old = {args.against}'s serve/, new = this tree; {args.products:,} products / {args.relations:,} "
              f"relations, {args.calls:,} interleaved calls per case; load average {os.getloadavg()[0]:.1f}")
        for name, call in cases.items():
            for i in range(200):
                assert call(old, i).items == call(new, i).items, f"{name}: answers differ for call {i}"
            for label, clock in (("wall", time.perf_counter_ns), ("thread CPU", time.thread_time_ns)):
                times: dict[str, list[int]] = {"old": [], "new": []}
                for i in range(args.calls):
                    order = (("old", old), ("new", new)) if i % 2 else (("new", new), ("old", old))
                    for tag, ix in order:
                        started = clock()
                        call(ix, i)
                        times[tag].append(clock() - started)
                p = {tag: sorted(t) for tag, t in times.items()}

                def q(tag: str, f: float) -> float:
                    return p[tag][int(f * (len(p[tag]) - 1))] / 1000

                print(f"{name:<17} {label:<10} old p50 {q('old', .5):7.1f} p99 {q('old', .99):8.1f} us | new p50 "
                      f"{q('new', .5):7.1f} p99 {q('new', .99):8.1f} us | old/new p50 {q('old', .5) / q('new', .5):.2f}x "
                      f"p99 {q('old', .99) / q('new', .99):.2f}x  (load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
