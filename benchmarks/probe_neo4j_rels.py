"""Client and server CPU of one relationship write, per way of sending it: 100k relationships between 20k
nodes in 20k-row batches, ends found by element id or by integer id(), parameters as one map per row or as
columns. Run on an empty scratch server (it deletes everything it made):

    python benchmarks/probe_neo4j_rels.py --server-pid $(cat tools/neo4j/run/neo4j.pid)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import neo4j

PROPS_ROWS = "{score: row.score, reasons: row.reasons, evidence: row.evidence, p: row.p}"
PROPS_COLS = "{score: $score[i], reasons: $reasons[i], evidence: $evidence[i], p: $p[i]}"
VARIANTS: dict[str, tuple[str, str, str]] = {
    # name: (end lookup function, parameter layout, query)
    "elementId, rows": ("elementId", "rows",
                        f"UNWIND $rows AS row MATCH (s) WHERE elementId(s) = row.s MATCH (t) WHERE elementId(t) = row.t "
                        f"CREATE (s)-[r:R {PROPS_ROWS}]->(t) RETURN count(r) AS n"),
    "elementId, columns": ("elementId", "cols",
                           f"UNWIND range(0, size($s) - 1) AS i MATCH (s) WHERE elementId(s) = $s[i] "
                           f"MATCH (t) WHERE elementId(t) = $t[i] CREATE (s)-[r:R {PROPS_COLS}]->(t) RETURN count(r) AS n"),
    "id(), rows": ("id", "rows",
                   f"UNWIND $rows AS row MATCH (s) WHERE id(s) = row.s MATCH (t) WHERE id(t) = row.t "
                   f"CREATE (s)-[r:R {PROPS_ROWS}]->(t) RETURN count(r) AS n"),
    "id(), columns": ("id", "cols",
                      f"UNWIND range(0, size($s) - 1) AS i MATCH (s) WHERE id(s) = $s[i] MATCH (t) WHERE id(t) = $t[i] "
                      f"CREATE (s)-[r:R {PROPS_COLS}]->(t) RETURN count(r) AS n"),
}


def server_cpu(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_variant(driver: neo4j.Driver, name: str, pairs: list[tuple[int, int]], ids: dict[str, list[Any]],
                batch: int, pid: int | None) -> tuple[float, float, float]:
    key, layout, query = VARIANTS[name]
    ends = ids[key]
    rng = random.Random(3)
    t0, c0, s0 = time.perf_counter(), time.process_time(), server_cpu(pid)
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        score = [round(rng.random(), 4) for _ in chunk]
        reasons = [["used together for the same task", "fits the same model"]] * len(chunk)
        evidence = [json.dumps({"llm_score": 0.8, "copurchase_count": k % 50, "query": "a shopper phrase"})
                    for k in range(len(chunk))]
        if layout == "rows":
            params: dict[str, Any] = {"rows": [
                {"s": ends[a], "t": ends[b], "score": sc, "reasons": re, "evidence": ev, "p": 0}
                for (a, b), sc, re, ev in zip(chunk, score, reasons, evidence, strict=True)]}
        else:
            params = {"s": [ends[a] for a, _ in chunk], "t": [ends[b] for _, b in chunk], "score": score,
                      "reasons": reasons, "evidence": evidence, "p": [0] * len(chunk)}
        with driver.session() as session:
            n = session.execute_write(lambda tx: tx.run(query, params).single()["n"])  # noqa: B023
        assert n == len(chunk), (name, n)
    return time.perf_counter() - t0, time.process_time() - c0, server_cpu(pid) - s0


def delete_relationships(driver: neo4j.Driver) -> None:
    while driver.execute_query("MATCH ()-[r:R]->() WITH r LIMIT 50000 DELETE r RETURN count(*) AS n").records[0]["n"]:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=20_000)
    parser.add_argument("--relations", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all variants; the first warms the JIT")
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args()
    uri = os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687")
    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", "shelfgraph"))
    rng = random.Random(7)
    pairs = [(rng.randrange(args.nodes), rng.randrange(args.nodes)) for _ in range(args.relations)]
    with neo4j.GraphDatabase.driver(uri, auth=auth, notifications_min_severity="OFF") as driver:
        assert driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"] == 0, "needs an empty server"
        try:
            records = driver.execute_query(
                "UNWIND range(0, $n - 1) AS k CREATE (p:ProbeNode {k: k}) RETURN elementId(p) AS e, id(p) AS i",
                n=args.nodes).records
            ids = {"elementId": [r["e"] for r in records], "id": [r["i"] for r in records]}
            for round_ in range(args.rounds):
                for name in VARIANTS:
                    wall, client, server = run_variant(driver, name, pairs, ids, args.batch, args.server_pid)
                    us = 1e6 / args.relations
                    print(f"round {round_} {name:20s} {args.relations / wall:8,.0f} rels/s  client {client * us:5.1f} "
                          f"us/rel  server {server * us:5.1f} us/rel  load {os.getloadavg()[0]:.1f}", flush=True)
                    delete_relationships(driver)
        finally:
            delete_relationships(driver)
            driver.execute_query("MATCH (p:ProbeNode) DETACH DELETE p")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
