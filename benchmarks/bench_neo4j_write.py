"""Write and load throughput of the Neo4j store on a synthetic graph, per UNWIND batch size.

    scripts/neo4j-local start
    python benchmarks/bench_neo4j_write.py --relations 100000

Uses NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD (default: the local server). It refuses to run on a database
that holds data unless --wipe is given, and it empties the database when it is done.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import neo4j
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.store.neo4j import Neo4jStore, complements_query  # noqa: E402
from graph_schema.cypher import WIPE_BATCH  # noqa: E402
from graph_schema.models import Evidence, GraphVersion, Product, Provenance, Relation, catalog_fingerprint  # noqa: E402


class _TimedStore(Neo4jStore):
    """Adds up the time spent in batch transactions, to tell database time from Python-side preparation."""

    db_seconds = 0.0

    def _write_batch(self, query: str, rows: list[dict[str, Any]], version: str) -> int:
        start = time.perf_counter()
        try:
            return super()._write_batch(query, rows, version)
        finally:
            self.db_seconds += time.perf_counter() - start


def synthetic_graph(n_products: int, n_relations: int, seed: int = 7) -> tuple[list[Product], list[Relation]]:
    rng = random.Random(seed)
    products = [
        Product(
            id=f"sku-{i:07d}",
            title=f"Synthetic product {i} with a realistic length title",
            description="A description of moderate length for a synthetic product. " * 2,
            brand=f"brand{i % 300}",
            category=("Root", f"Dept{i % 20}", f"Leaf{i % 400}"),
            price=round(rng.uniform(1, 500), 2),
            attributes={"colour": "black", "size": str(i % 10)},
            keyphrases=("kp a", "kp b"),
        )
        for i in range(n_products)
    ]
    relations: list[Relation] = []
    seen: set[tuple[int, int, str]] = set()
    while len(relations) < n_relations:
        s, t = rng.randrange(n_products), rng.randrange(n_products)
        kind = "complement" if rng.random() < 0.6 else "substitute"
        if s == t or (s, t, kind) in seen:
            continue
        seen.add((s, t, kind))
        relations.append(
            Relation(
                source=products[s].id,
                target=products[t].id,
                kind=kind,
                score=round(rng.random(), 4),
                reasons=("used together for the same task", "fits the same model"),
                evidence=Evidence(llm_score=0.8, copurchase_count=rng.randrange(50), query="a shopper phrase"),
                provenance=Provenance(run_id="bench", model="bench-model", prompt_version="v1", stage="verify"),
            )
        )
    return products, relations


def manifest_for(version: str, products: list[Product], relations: list[Relation]) -> GraphVersion:
    return GraphVersion(
        version_id=version,
        catalog_fingerprint=catalog_fingerprint(products),
        product_count=len(products),
        relation_counts={
            "complement": sum(r.kind == "complement" for r in relations),
            "substitute": sum(r.kind == "substitute" for r in relations),
        },
    )


def wipe(driver: neo4j.Driver) -> None:
    while driver.execute_query(WIPE_BATCH, limit=20_000).records[0]["deleted"]:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--relations", type=int, default=100_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--lookups", type=int, default=500, help="live complements_query calls to time")
    parser.add_argument("--wipe", action="store_true", help="allow running on a database that holds data")
    args = parser.parse_args(argv)
    console = Console()

    uri = os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687")
    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", "shelfgraph"))
    with neo4j.GraphDatabase.driver(uri, auth=auth) as driver:
        try:
            driver.verify_connectivity()
        except Exception as exc:  # no server: say how to get one
            console.print(f"[red]Neo4j at {uri} does not answer ({exc}); run scripts/neo4j-local start[/red]")
            return 2
        if driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"] and not args.wipe:
            console.print("[red]the database is not empty; pass --wipe to let the benchmark delete its data[/red]")
            return 2

        t0 = time.perf_counter()
        products, relations = synthetic_graph(args.products, args.relations)
        built_s = time.perf_counter() - t0
        console.print(f"built {len(products):,} products / {len(relations):,} relations in {built_s:.1f}s")

        table = Table(title=f"Neo4j store, {len(products):,} products, {len(relations):,} relations ({uri})")
        columns = ["batch", "publish s", "rels/s (publish)", "rows/s (db only)"]
        columns += [f"vs batch {args.batch_sizes[0]}", "load s", "rows/s (load)"]
        for column in columns:
            table.add_column(column, justify="right")
        baseline: float | None = None
        store: Neo4jStore | None = None
        for batch in args.batch_sizes:
            wipe(driver)
            store = _TimedStore(driver, batch_size=batch, keep=1, progress=False)
            store.ensure_schema()
            version = f"bench-b{batch}"
            start = time.perf_counter()
            store.publish(products, relations, manifest_for(version, products, relations))
            publish_s = time.perf_counter() - start
            start = time.perf_counter()
            graph = store.load()
            load_s = time.perf_counter() - start
            assert graph.edges.height == len(relations) and graph.nodes.height == len(products)
            rate = len(relations) / publish_s
            baseline = baseline or rate
            rows = len(products) + len(relations)
            table.add_row(
                f"{batch:,}", f"{publish_s:.2f}", f"{rate:,.0f}", f"{rows / store.db_seconds:,.0f}",
                f"{rate / baseline:.2f}x", f"{load_s:.2f}", f"{rows / load_s:,.0f}",
            )
        console.print(table)
        load1, _, _ = os.getloadavg()
        console.print(f"machine: {os.cpu_count()} CPUs, load average {load1:.1f} at the end (client and server share it)")

        if args.lookups and store is not None:
            sources = [r.source for r in relations if r.kind == "complement"][: args.lookups]
            complements_query(driver, sources[0], 10)  # warm the plan cache
            start = time.perf_counter()
            for pid in sources:
                complements_query(driver, pid, 10)
            per_call = (time.perf_counter() - start) / len(sources)
            console.print(f"live complements_query (k=10): {per_call * 1000:.2f} ms/call over {len(sources)} calls")
        wipe(driver)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
