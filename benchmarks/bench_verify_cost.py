"""What the LLM stages cost per product: a full distillation of a catalog (BundleRec Electronics by default,
or its first --limit products) against the fake OpenAI server. Prints, per LLM stage, calls per product,
and for verify the pairs judged, pairs per call and output tokens per judged pair (the fake server counts
4 characters as a token, the same for both sides of a comparison).

`--baseline-tree DIR` runs the same measurement a second time with another checkout of the code first on
the path (e.g. `git archive main | tar -x -C /tmp/base`), on the same catalog, and prints both side by side
with the ratio new/baseline:

    PYTHONPATH=. python benchmarks/bench_verify_cost.py [--limit 800] [--baseline-tree /tmp/base]

The fake model's answers carry no meaning: these are cost figures, not quality figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data" / "bundlerec-electronics"
LLM_STAGES = ("enrich", "propose", "verify")


def measure(path: Path, limit: int | None, concurrency: int) -> dict[str, Any]:
    """One run; every import is done here, so the code under test is whatever is first on sys.path."""
    import polars as pl

    try:
        from distill.ingest.datasets import load_bundlerec
        from distill.run.pipeline import run_pipeline
    except ImportError:  # a baseline checkout from before the package layout of issue #11
        from distill.datasets import load_bundlerec  # type: ignore[no-redef]
        from distill.pipeline import run_pipeline  # type: ignore[no-redef]
    from distill.settings import DistillSettings
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.fakes.responders import HashingEncoder, catalog_responder

    data = load_bundlerec(path)
    products = sorted(data.catalog.products, key=lambda p: p.id)[:limit] if limit else list(data.catalog.products)
    ids = [p.id for p in products]
    interactions = data.interactions
    if limit:
        baskets = interactions.baskets.filter(pl.col("product_id").is_in(ids))
        interactions = dataclasses.replace(interactions, baskets=baskets)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(responder=catalog_responder) as server:
        settings = DistillSettings(data_dir=Path(tmp), llm_model="openai/fake-model", llm_api_base=server.base_url,
                                   llm_api_key="test", llm_concurrency=concurrency, llm_max_attempts=2)
        started = time.perf_counter()
        result = run_pipeline(products, interactions, settings, progress=False, encoder=HashingEncoder())
        seconds = time.perf_counter() - started
        server_calls = server.call_count
    stages = {s.stage: s for s in result.report.stages}
    out: dict[str, Any] = {"products": len(products), "seconds": round(seconds, 1), "server_calls": server_calls,
                           "relations": len(result.relations), "stages": {}}
    for name in LLM_STAGES:
        stage = stages.get(name)
        if stage is None:
            continue
        out["stages"][name] = {"calls": stage.llm.calls, "items_in": stage.items_in, "items_out": stage.items_out,
                               "input_tokens": stage.llm.input_tokens, "output_tokens": stage.llm.output_tokens,
                               "rejected": stage.rejected}
    served = [r for r in result.relations if r.kind == "complement"]
    out["served_complements_judged"] = sum(r.evidence.llm_score is not None for r in served)
    out["served_complements"] = len(served)
    return out


def derived(run: dict[str, Any]) -> dict[str, float]:
    n = run["products"]
    verify = run["stages"].get("verify", {})
    calls = verify.get("calls", 0)
    pairs = verify.get("items_in", 0)
    figures = {f"{name} calls/product": run["stages"][name]["calls"] / n for name in run["stages"]}
    figures["all LLM calls/product"] = run["server_calls"] / n
    figures["verify pairs/product"] = pairs / n
    figures["verify pairs/call"] = pairs / calls if calls else 0.0
    figures["verify output tokens/judged pair"] = verify.get("output_tokens", 0) / pairs if pairs else 0.0
    figures["verify input tokens/judged pair"] = verify.get("input_tokens", 0) / pairs if pairs else 0.0
    figures["verify output tokens/product"] = verify.get("output_tokens", 0) / n
    figures["served complements judged (share)"] = (run["served_complements_judged"] / run["served_complements"]
                                                    if run["served_complements"] else 0.0)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=DATA, help="BundleRec folder")
    parser.add_argument("--limit", type=int, default=None, help="only the first N products (by id) and their baskets")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="another checkout of the code to measure on the same catalog")
    parser.add_argument("--json", action="store_true", help="print one JSON object (used for the baseline run)")
    args = parser.parse_args()

    if args.json:
        print(json.dumps(measure(args.path, args.limit, args.concurrency)))
        return
    runs: dict[str, dict[str, Any]] = {}
    if args.baseline_tree is not None:
        command = [sys.executable, str(Path(__file__).resolve()), "--json", "--path", str(args.path.resolve()),
                   "--concurrency", str(args.concurrency), *(["--limit", str(args.limit)] if args.limit else [])]
        env = {**os.environ, "PYTHONPATH": str(args.baseline_tree.resolve())}
        done = subprocess.run(command, cwd=args.baseline_tree, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"baseline run failed:\n{done.stderr[-3000:]}")
        runs["baseline"] = json.loads(done.stdout.strip().splitlines()[-1])
    runs["this tree"] = measure(args.path, args.limit, args.concurrency)

    names = list(runs)
    print(f"catalog {args.path.name}: {runs[names[-1]]['products']} products, fake server, hashing encoder")
    for name, run in runs.items():
        print(f"  {name}: {run['seconds']} s, {run['server_calls']} calls, {run['relations']} relations, "
              f"verify {json.dumps(run['stages'].get('verify', {}))}")
    table = {name: derived(run) for name, run in runs.items()}
    print(f"{'figure':<36}" + "".join(f"{name:>12}" for name in names) + (f"{'ratio':>8}" if len(names) == 2 else ""))
    for figure in table[names[-1]]:
        values = [table[name].get(figure, 0.0) for name in names]
        ratio = f"{values[1] / values[0]:>8.2f}" if len(values) == 2 and values[0] else ("" if len(values) < 2 else f"{'-':>8}")
        print(f"{figure:<36}" + "".join(f"{v:>12.3f}" for v in values) + ratio)


if __name__ == "__main__":
    main()
