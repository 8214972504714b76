"""Publish throughput of the Neo4j store against a plain `UNWIND ... CREATE` of the same graph, measured in
the same run, per batch size and number of write sessions; then the load time of what was written.

    scripts/neo4j-local start
    python benchmarks/bench_neo4j_write.py                                # 20k products, 100k relations
    python benchmarks/bench_neo4j_write.py --relations 100000 1000000     # also 1M (minutes, ~3 GB client RAM)
    python benchmarks/bench_neo4j_write.py --server-pid $(cat tools/neo4j/run/neo4j.pid)   # + server CPU

The baseline creates the same products (indexed id) and the same relationships with the same properties,
from the same Product/Relation objects, with no versioning, no lease, no checks: what a hand-written loader
does. Both timings include turning the objects into parameter rows. Uses NEO4J_URI / NEO4J_USER /
NEO4J_PASSWORD (default: the local server). It refuses to run on a database that holds data unless --wipe is
given, and it empties the database when it is done.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import neo4j
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_store.neo4j import Neo4jStore, complements_query  # noqa: E402
from graph_schema.cypher import REL_TYPES, WIPE_BATCH  # noqa: E402
from graph_schema.models import Evidence, GraphVersion, Product, Provenance, Relation, catalog_fingerprint  # noqa: E402
from graph_schema.tables import product_row, relation_row  # noqa: E402

PLAIN_INDEX = "CREATE INDEX bench_plain_id IF NOT EXISTS FOR (p:PlainProduct) ON (p.id)"
PLAIN_NODES = """
UNWIND $rows AS row
CREATE (:PlainProduct {id: row.id, title: row.title, description: row.description, brand: row.brand,
                       category: row.category, price: row.price, attributes: row.attributes, enriched: row.enriched,
                       keyphrases: row.keyphrases, content_hash: row.content_hash})
"""
PLAIN_RELATIONS = {
    kind: f"""
UNWIND $rows AS row
MATCH (s:PlainProduct {{id: row.source}})
MATCH (t:PlainProduct {{id: row.target}})
CREATE (s)-[:{rel_type} {{score: row.score, reasons: row.reasons, evidence: row.evidence, run_id: row.run_id,
                          model: row.model, prompt_version: row.prompt_version, stage: row.stage}}]->(t)
"""
    for kind, rel_type in REL_TYPES.items()
}


class _TimedStore(Neo4jStore):
    """Adds up the time spent in batch transactions, to tell database time from Python-side preparation."""

    db_seconds = 0.0
    _lock = threading.Lock()

    def _write_batch(self, query: str, params: dict[str, Any], version: str) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return super()._write_batch(query, params, version)
        finally:
            with self._lock:  # batches run on several sessions
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


WIPE_RELATIONSHIPS = "MATCH ()-[r]->() WITH r LIMIT $limit DELETE r RETURN count(*) AS deleted"


def wipe(driver: neo4j.Driver) -> None:
    # Relationships first: DETACH DELETE of 20k nodes with 1M relationships exceeds the transaction memory.
    while driver.execute_query(WIPE_RELATIONSHIPS, limit=50_000).records[0]["deleted"]:
        pass
    while driver.execute_query(WIPE_BATCH, limit=20_000).records[0]["deleted"]:
        pass


def plain_create(driver: neo4j.Driver, products: list[Product], relations: list[Relation], batch: int) -> float:
    """The baseline: seconds to UNWIND ... CREATE the nodes and relationships, one session, no versioning."""
    def run(query: str, rows: list[dict[str, Any]]) -> None:
        with driver.session() as session:
            session.execute_write(lambda tx: tx.run(query, rows=rows).consume())

    start = time.perf_counter()
    product_rows = [product_row(p) for p in products]
    relation_rows = [relation_row(r) for r in relations]
    for i in range(0, len(product_rows), batch):
        run(PLAIN_NODES, product_rows[i : i + batch])
    for kind, query in PLAIN_RELATIONS.items():
        of_kind = [row for row in relation_rows if row["kind"] == kind]
        for i in range(0, len(of_kind), batch):
            run(query, of_kind[i : i + batch])
    return time.perf_counter() - start


class _CpuMeter:
    """Wall time, this process's CPU time and (given its pid, on this machine) the server's CPU time of a block.
    CPU seconds hardly depend on how loaded the machine is, wall seconds do: on a shared machine they tell
    where the time would go on a quiet one."""

    def __init__(self, server_pid: int | None) -> None:
        self._pid = server_pid
        self.wall = self.client = 0.0
        self.server: float | None = None

    def _server_cpu(self) -> float | None:
        if self._pid is None:
            return None
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def __enter__(self) -> _CpuMeter:
        self._t, self._c, self._s = time.perf_counter(), time.process_time(), self._server_cpu()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._t
        self.client = time.process_time() - self._c
        end = self._server_cpu()
        self.server = None if end is None or self._s is None else end - self._s


def publish_store(
    driver: neo4j.Driver, products: list[Product], relations: list[Relation], batch: int, parallel: int
) -> _TimedStore:
    store = _TimedStore(driver, batch_size=batch, keep=1, progress=False, parallel=parallel)
    store.publish(products, relations, manifest_for(f"bench-b{batch}-s{parallel}", products, relations))
    return store


def warm_up(driver: neo4j.Driver, products: list[Product], relations: list[Relation], batch: int) -> None:
    """Both loaders once, untimed: a fresh server's JIT has compiled neither write path yet, and whichever ran
    first would pay for it (the first 100k relationships cost a cold server 3-5x the CPU of later ones)."""
    wipe(driver)
    plain_create(driver, products, relations, batch)
    wipe(driver)
    publish_store(driver, products, relations, batch, 1)
    wipe(driver)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--relations", type=int, nargs="+", default=[100_000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2], help="write sessions of the store")
    parser.add_argument("--warmup", type=int, default=100_000,
                        help="relations loaded once by both loaders before timing (0: none)")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="pid of a server on this machine, to report its CPU time "
                             "(scripts/neo4j-local: $(cat tools/neo4j/run/neo4j.pid))")
    parser.add_argument("--lookups", type=int, default=200, help="live complements_query calls to time")
    parser.add_argument("--wipe", action="store_true", help="allow running on a database that holds data")
    args = parser.parse_args(argv)
    console = Console(width=140)

    uri = os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687")
    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", "shelfgraph"))
    with neo4j.GraphDatabase.driver(uri, auth=auth, notifications_min_severity="OFF") as driver:
        try:
            driver.verify_connectivity()
        except Exception as exc:  # no server: say how to get one
            console.print(f"[red]Neo4j at {uri} does not answer ({exc}); run scripts/neo4j-local start[/red]")
            return 2
        if driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"] and not args.wipe:
            console.print("[red]the database is not empty; pass --wipe to let the benchmark delete its data[/red]")
            return 2
        driver.execute_query(PLAIN_INDEX)
        Neo4jStore(driver).ensure_schema()
        driver.execute_query("CALL db.awaitIndexes(300)")
        if args.warmup:
            start = time.perf_counter()
            warm_up(driver, *synthetic_graph(args.products, args.warmup, seed=11), args.batch_sizes[0])
            warm_s = time.perf_counter() - start
            console.print(f"warm-up: {args.warmup:,} relations through both loaders in {warm_s:.1f}s")

        for n_relations in args.relations:
            t0 = time.perf_counter()
            products, relations = synthetic_graph(args.products, n_relations)
            console.print(f"built {len(products):,} products / {len(relations):,} relations in "
                          f"{time.perf_counter() - t0:.1f}s")
            table = Table(title=f"Neo4j publish, {len(products):,} products, {len(relations):,} relations ({uri})")
            for column in ("loader", "batch", "sessions", "seconds", "rels/s", "vs plain", "client CPU s",
                           "server CPU s", "db s (sum)", "load s"):
                table.add_column(column, justify="right")
            store: Neo4jStore | None = None
            for batch in args.batch_sizes:
                wipe(driver)
                with _CpuMeter(args.server_pid) as plain:
                    plain_create(driver, products, relations, batch)
                plain_rate = len(relations) / plain.wall
                server = "-" if plain.server is None else f"{plain.server:.1f}"
                table.add_row("plain CREATE", f"{batch:,}", "1", f"{plain.wall:.2f}", f"{plain_rate:,.0f}", "1.00x",
                              f"{plain.client:.1f}", server, "", "")
                for parallel in args.parallel:
                    wipe(driver)
                    with _CpuMeter(args.server_pid) as run:
                        store = publish_store(driver, products, relations, batch, parallel)
                    start = time.perf_counter()
                    graph = store.load()
                    load_s = time.perf_counter() - start
                    assert graph.edges.height == len(relations) and graph.nodes.height == len(products)
                    rate = len(relations) / run.wall
                    server = "-" if run.server is None else f"{run.server:.1f}"
                    table.add_row("store", f"{batch:,}", str(parallel), f"{run.wall:.2f}", f"{rate:,.0f}",
                                  f"{rate / plain_rate:.2f}x", f"{run.client:.1f}", server,
                                  f"{store.db_seconds:.1f}", f"{load_s:.2f}")
            console.print(table)
            load1, load5, _ = os.getloadavg()
            console.print(f"machine: {os.cpu_count()} CPUs, load average {load1:.1f} / {load5:.1f} (1 / 5 min) at "
                          "the end (client and server share it)")
            if args.lookups and store is not None:
                sources = [r.source for r in relations if r.kind == "complement"][: args.lookups]
                complements_query(driver, sources[0], 10)  # warm the plan cache
                start = time.perf_counter()
                for pid in sources:
                    complements_query(driver, pid, 10)
                per_call = (time.perf_counter() - start) / len(sources)
                console.print(f"live complements_query (k=10): {per_call * 1000:.2f} ms/call over {len(sources)} calls")
        wipe(driver)
        driver.execute_query("DROP INDEX bench_plain_id IF EXISTS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
