"""HTTP load benchmark: GET /v1/products/{id}/complements from a published graph (EmbeddedStore, mapped
index, the production entry point `serve.wsgi:app`) under granian and under gunicorn, against a
hello-world Flask app under the same two servers with the same settings. Request ids cycle over every
product (each wrk thread from its own offset), so no cache holds the answer set. Prints throughput,
p50/p99, errors and the four ratios; optionally (--neo4j) the same lookup as a live Cypher query per
request. Only 127.0.0.1. Needs `wrk` (apt-get install -y wrk); falls back to locust.

    python benchmarks/bench_http.py                                   # 20k products, 1 worker, 3 rounds x 5 s
    python benchmarks/bench_http.py --products 20000 --workers 1 --connections 8 --duration 5 --rounds 3
    NEO4J_URI=bolt://127.0.0.1:7687 python benchmarks/bench_http.py --neo4j  # a SCRATCH database

With --neo4j and no NEO4J_URI a private Neo4j is started with scripts/neo4j-local on port 7688 (own run
dir) when Java and Maven are present, and stopped afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

ENV_PRODUCTS = "SHELFGRAPH_BENCH_PRODUCTS"
ENV_RELATIONS = "SHELFGRAPH_BENCH_RELATIONS"
ENV_NEO4J = "SHELFGRAPH_BENCH_NEO4J"  # uri|user|password for the cypher app


# --- the three apps (gunicorn factories: "benchmarks.bench_http:make_index_app()") ----------------------
def make_index_app() -> Any:
    from benchmarks.synthetic import synthetic_columns
    from serve import create_app
    from serve.index import GraphIndex
    from serve.settings import ServeSettings

    columns = synthetic_columns(int(os.environ[ENV_PRODUCTS]), int(os.environ[ENV_RELATIONS]))
    return create_app(ServeSettings(reload_interval_s=0), index=GraphIndex.from_columns(*columns))


def make_hello_app() -> Any:
    from flask import Flask, jsonify

    app = Flask("hello")

    @app.get("/hello")
    def hello() -> Any:
        return jsonify({"hello": "world"})

    return app


HELLO = make_hello_app()


def make_cypher_app() -> Any:
    """The same lookup answered live: one parameterized Cypher query per request."""
    import neo4j
    from flask import Flask, jsonify

    from graph_schema.cypher import COMPLEMENTS_TOP_K, CURRENT_NAME, KEY_SEPARATOR

    uri, user, password = os.environ[ENV_NEO4J].split("|", 2)
    driver = neo4j.GraphDatabase.driver(uri, auth=(user, password), notifications_min_severity="OFF")
    app = Flask("cypher")

    @app.get("/v1/products/<path:product_id>/complements")
    def complements(product_id: str) -> Any:
        records, _, _ = driver.execute_query(
            COMPLEMENTS_TOP_K, name=CURRENT_NAME, separator=KEY_SEPARATOR, product_id=product_id, k=10,
            routing_=neo4j.RoutingControl.READ,
        )
        return jsonify({"product_id": product_id, "items": [
            {"product_id": r["target"], "score": r["score"], "reasons": r["reasons"]} for r in records]})

    return app


# --- running servers and load ----------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LOG_DIR = Path(tempfile.gettempdir()) / "shelfgraph-bench-http"


def _start(label: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # a file, not a pipe: a pipe nobody reads fills up and blocks the workers' logging
    LOG_DIR.mkdir(exist_ok=True)
    log = (LOG_DIR / f"{label}.log").open("wb")
    return subprocess.Popen(argv, cwd=REPO_ROOT, env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=log, stderr=subprocess.STDOUT)


def start_hello(server: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The hello-world app under exactly the argv serve.server builds for shelfgraph (same settings)."""
    from serve.server import server_argv
    from serve.settings import ServeSettings

    port = free_port()
    settings = ServeSettings(server=server, port=port, workers=workers)  # type: ignore[arg-type]
    argv = server_argv(settings, "benchmarks.bench_http:HELLO")
    return _start(f"hello-{server}", argv, {}), f"http://127.0.0.1:{port}"


def start_shelfgraph(server: str, workers: int, graph_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`serve.wsgi:app` as `shelfgraph serve` runs it: settings through the environment, mapped index."""
    from serve.server import server_argv, server_env
    from serve.settings import ServeSettings

    port = free_port()
    settings = ServeSettings(server=server, port=port, workers=workers, graph_dir=graph_dir,  # type: ignore[arg-type]
                             reload_interval_s=0)
    metrics = Path(tempfile.mkdtemp(prefix=f"shelfgraph-bench-metrics-{server}-"))
    return _start(f"shelfgraph-{server}", server_argv(settings), server_env(settings, metrics)), f"http://127.0.0.1:{port}"


def start_gunicorn(factory: str, workers: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--access-logfile", "/dev/null", "--timeout", "600", f"benchmarks.bench_http:{factory}"]
    return _start(factory.split("(")[0], argv, env), f"http://127.0.0.1:{port}"


def publish_embedded(root: Path, n_products: int, n_relations: int) -> str:
    """A synthetic graph published to an EmbeddedStore the way distill publishes one."""
    from graph_store.embedded import EmbeddedStore

    products, relations, manifest = synthetic_graph(n_products, n_relations)
    store = EmbeddedStore(root)
    started = time.perf_counter()
    store.publish(products, relations, manifest)
    print(f"embedded: published {len(products):,} products / {len(relations):,} relations "
          f"in {time.perf_counter() - started:.1f}s")
    return manifest.version_id


def synthetic_graph(n_products: int, n_relations: int) -> tuple[list[Any], list[Any], Any]:
    from benchmarks.synthetic import synthetic_columns
    from graph_schema.models import GraphVersion, Product, Provenance, Relation

    meta, nodes, edges = synthetic_columns(n_products, n_relations)
    categories = nodes.categories
    products = [
        Product(id=pid, title=title, category=categories[c], price=None if p != p else round(p, 2))
        for pid, title, c, p in zip(nodes.ids, nodes.titles, nodes.category_id.tolist(), nodes.price.tolist())
    ]
    prov = Provenance(run_id="bench")
    relations, seen = [], set()
    for s, d, k, sc, r in zip(edges.src.tolist(), edges.dst.tolist(), edges.kind.tolist(),
                              edges.score.tolist(), edges.reason_id.tolist()):
        key = (s, d, k) if k == 0 else (min(s, d), max(s, d), k)
        if key in seen:
            continue  # the store refuses duplicate keys; the index keeps the best of them
        seen.add(key)
        # model_construct: the arrays are valid by construction, and validating 1M models takes minutes
        relations.append(Relation.model_construct(
            source=nodes.ids[s], target=nodes.ids[d], kind="complement" if k == 0 else "substitute",
            score=round(min(sc, 1.0), 6), reasons=edges.reasons[r], provenance=prov))
    manifest = GraphVersion(version_id=f"bench-{n_products}-{n_relations}", catalog_fingerprint="bench",
                            product_count=len(products), relation_counts={"complement": 0, "substitute": 0})
    return products, relations, manifest


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited; its log is in {LOG_DIR}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up after {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


LUA = """
-- every thread walks all product ids in order from its own starting point
local threads = {}
function setup(thread)
  thread:set("offset", #threads * %(stride)d)
  table.insert(threads, thread)
end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", string.format("/v1/products/P%%07d/complements?k=10", (offset + i) %% %(n)d))
end
"""


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(name: str, base: str, path: str | None, lua: Path | None, duration: int, connections: int,
            threads: int) -> Result:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if lua is not None:
        argv += ["-s", str(lua)]
    out = subprocess.run(argv + [base + (path or "")], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+([\d.]+)(us|ms|s|m)\b", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s|m)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    n_errors = int(errors.group(1)) if errors else 0
    if socket_errors:
        n_errors += sum(int(g) for g in socket_errors.groups())
    return Result(name, rps, _ms(*p50.groups()), _ms(*p99.groups()), n_errors)  # type: ignore[union-attr]


LOCUSTFILE = """
import random
from locust import FastHttpUser, task
class U(FastHttpUser):
    @task
    def hit(self):
        path = %(path)r
        if path is None:
            path = "/v1/products/P%%07d/complements?k=10" %% random.randint(0, %(last)d)
        self.client.get(path, name="x")
"""


def run_locust(name: str, base: str, path: str | None, last: int, duration: int, connections: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        locustfile = Path(tmp) / "locustfile.py"
        locustfile.write_text(LOCUSTFILE % {"path": path, "last": last})
        prefix = Path(tmp) / "stats"
        subprocess.run([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(connections),
                        "-r", str(connections), "-t", f"{duration}s", "-H", base, "--csv", str(prefix),
                        "--only-summary"], capture_output=True, check=True)
        with open(f"{prefix}_stats.csv") as handle:
            row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return Result(name, float(row["Requests/s"]), float(row["50%"]), float(row["99%"]), int(row["Failure Count"]))


# --- Neo4j ------------------------------------------------------------------------------------------------
def neo4j_target(args: argparse.Namespace) -> tuple[str, str, str, bool] | None:
    """(uri, user, password, started_here) or None when no Neo4j can be used."""
    if args.no_neo4j:
        return None
    if os.environ.get("NEO4J_URI"):
        return os.environ["NEO4J_URI"], os.environ.get("NEO4J_USER", "neo4j"), os.environ.get(
            "NEO4J_PASSWORD", "shelfgraph"), False
    if not (shutil.which("java") and shutil.which("mvn")):
        print("neo4j: skipped (no NEO4J_URI, and no java/mvn for scripts/neo4j-local)")
        return None
    env = {**os.environ, "NEO4J_BOLT_PORT": str(args.neo4j_port), "NEO4J_RUN_DIR": args.neo4j_run_dir,
           "NEO4J_HEAP_MAX": "1g", "NEO4J_PAGECACHE": "512m", "PYTHON": sys.executable}
    started = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "neo4j-local"), "start"], env=env,
                             capture_output=True, text=True)
    if started.returncode != 0:
        print(f"neo4j: skipped (private instance did not start: {started.stderr.strip()[-300:]})")
        return None
    return f"bolt://127.0.0.1:{args.neo4j_port}", "neo4j", "shelfgraph", True


def stop_private_neo4j(args: argparse.Namespace) -> None:
    """`neo4j-local stop`; if its lock is held (the JVM can inherit the lock file descriptor), signal the
    JVM this script started, by the pid in its own run dir."""
    env = {**os.environ, "NEO4J_BOLT_PORT": str(args.neo4j_port), "NEO4J_RUN_DIR": args.neo4j_run_dir}
    try:
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "neo4j-local"), "stop"], env=env, capture_output=True,
                       timeout=30, check=True)
        return
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        pass
    pidfile = Path(args.neo4j_run_dir) / "neo4j.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
        print(f"neo4j: private instance (pid {pid}) did not stop; stop it with: kill {pid}")


def publish_to_neo4j(uri: str, user: str, password: str, n_products: int, n_relations: int) -> str:
    import neo4j

    from benchmarks.synthetic import synthetic_columns
    from graph_store.neo4j import Neo4jStore
    from graph_schema.models import GraphVersion, Product, Provenance, Relation

    meta, nodes, edges = synthetic_columns(n_products, n_relations)
    version = f"bench-{n_products}-{n_relations}"
    driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
    try:
        store = Neo4jStore(driver, progress=True)
        if store.current_version() == version:
            return version
        # model_construct: the arrays are valid by construction, and validating 1M models takes minutes
        products = [Product(id=pid, title=title) for pid, title in zip(nodes.ids, nodes.titles)]
        prov = Provenance(run_id="bench")
        relations, seen = [], set()
        for s, d, k, sc, r in zip(edges.src.tolist(), edges.dst.tolist(), edges.kind.tolist(),
                                  edges.score.tolist(), edges.reason_id.tolist()):
            key = (s, d, k) if k == 0 else (min(s, d), max(s, d), k)
            if key in seen:
                continue  # the store refuses duplicate keys; the index keeps the best of them
            seen.add(key)
            relations.append(Relation.model_construct(
                source=nodes.ids[s], target=nodes.ids[d], kind="complement" if k == 0 else "substitute",
                score=min(sc, 1.0), reasons=edges.reasons[r], provenance=prov))
        manifest = GraphVersion(version_id=version, catalog_fingerprint="bench", product_count=len(products),
                                relation_counts={"complement": 0, "substitute": 0})
        started = time.perf_counter()
        store.publish(products, relations, manifest)
        print(f"neo4j: published {len(products):,} products / {len(relations):,} relations "
              f"in {time.perf_counter() - started:.0f}s")
        return version
    finally:
        driver.close()


# --- CPU per request, in process (no server, no load generator) -------------------------------------------
def cpu_per_request(products: int, relations: int, rounds: int = 5, n: int = 2000) -> None:
    """CPU time (process_time) per WSGI call, hello-world vs a random-id complements lookup, alternating.
    Steadier than throughput on a shared machine: other processes' load does not count against us."""
    import io
    import random
    import statistics

    os.environ.setdefault(ENV_PRODUCTS, str(products))
    os.environ.setdefault(ENV_RELATIONS, str(relations))
    apps = {"hello-world flask": make_hello_app(), "shelfgraph index": make_index_app()}
    rng = random.Random(1)
    paths = {"hello-world flask": ["/hello"],
             "shelfgraph index": [f"/v1/products/P{rng.randrange(products):07d}/complements?k=10" for _ in range(997)]}

    def environ(path: str) -> dict[str, Any]:
        route, _, query = path.partition("?")
        return {"REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
                "wsgi.multiprocess": True, "wsgi.run_once": False}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            started = time.process_time()
            for i in range(n):
                b"".join(app(environ(paths[name][i % len(paths[name])]), start_response))
            samples[name].append((time.process_time() - started) / n * 1e6)
    hello, ours = (statistics.median(samples[name]) for name in apps)
    print(f"CPU per request, in process (median of {rounds} x {n}): hello-world {hello:.0f} us, "
          f"complements {ours:.0f} us -> CPU-bound throughput ratio {hello / ours:.0%}")


# --- main -------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--relations", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes of every server")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per target and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--neo4j", action="store_true", help="also a live Cypher query per request")
    parser.add_argument("--neo4j-port", type=int, default=7688)
    parser.add_argument("--neo4j-run-dir", default=str(Path(tempfile.gettempdir()) / "shelfgraph-bench-neo4j"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--cpu", action="store_true", help="also the in-process CPU-per-request figure")
    args = parser.parse_args()
    args.no_neo4j = not args.neo4j
    if args.cpu:
        cpu_per_request(args.products, args.relations)

    use_wrk = shutil.which("wrk") is not None
    print(f"load generator: {'wrk' if use_wrk else 'locust (wrk not found)'}; {args.workers} worker(s) per server, "
          f"{args.connections} connections, {args.duration}s per target and round, graph {args.products:,} "
          f"products / {args.relations:,} relations, cpus={os.cpu_count()}, load average={os.getloadavg()[0]:.1f}")
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(LUA % {"stride": max(args.products // max(args.threads, 1), 1), "n": args.products})
    data = Path(tempfile.mkdtemp(prefix="shelfgraph-bench-http-"))
    publish_embedded(data / "graph", args.products, args.relations)

    def load(name: str, base: str, path: str | None) -> Result:
        warm = (base + path) if path else f"{base}/v1/products/P0000000/complements?k=10"
        for _ in range(50):
            urllib.request.urlopen(warm, timeout=300).read()
        if use_wrk:
            return run_wrk(name, base, path, None if path else lua, args.duration, args.connections, args.threads)
        return run_locust(name, base, path, args.products - 1, args.duration, args.connections)

    HG, HN, SG, SN = ("hello-world gunicorn", "hello-world granian", "shelfgraph gunicorn", "shelfgraph granian")
    starters: list[tuple[str, Any, str | None]] = [
        (HG, lambda: start_hello("gunicorn", args.workers), "/hello"),
        (HN, lambda: start_hello("granian", args.workers), "/hello"),
        (SG, lambda: start_shelfgraph("gunicorn", args.workers, data / "graph"), None),
        (SN, lambda: start_shelfgraph("granian", args.workers, data / "graph"), None),
    ]
    neo = neo4j_target(args)
    if neo is not None:
        uri, user, password, _ = neo
        publish_to_neo4j(uri, user, password, args.products, args.relations)
        cypher_env = {ENV_NEO4J: f"{uri}|{user}|{password}"}
        starters.append(("live cypher per request", lambda: start_gunicorn("make_cypher_app()", args.workers,
                                                                             cypher_env), None))
    # All servers run at once (idle unless loaded) and are loaded in turn, round after round: on a shared
    # machine background load drifts, and alternating short runs spreads the drift over every target.
    rounds: dict[str, list[Result]] = {name: [] for name, *_ in starters}
    servers: list[tuple[str, subprocess.Popen[bytes], str, str | None]] = []
    try:
        for name, start, path in starters:
            process, base = start()
            servers.append((name, process, base, path))
            # one at a time: the first shelfgraph worker writes the index files, the next maps them
            wait_for(base + (path or "/v1/products/P0000000/complements?k=1"), process)
        for i in range(args.rounds):
            for name, _, base, path in servers:
                rounds[name].append(load(name, base, path))
                r = rounds[name][-1]
                print(f"round {i + 1} {name:<24} {r.requests_per_s:8.0f} req/s  p99 {r.p99_ms:6.2f} ms  "
                      f"errors {r.errors}", flush=True)
    finally:
        for _, process, _, _ in servers:
            stop(process)
        lua.unlink(missing_ok=True)
        shutil.rmtree(data, ignore_errors=True)
        if neo is not None and neo[3]:
            stop_private_neo4j(args)

    median = statistics.median
    results = {
        name: Result(name, median([r.requests_per_s for r in rs]), median([r.p50_ms for r in rs]),
                     median([r.p99_ms for r in rs]), sum(r.errors for r in rs))
        for name, rs in rounds.items()
    }
    print(f"\nmedians over {args.rounds} alternating rounds of {args.duration}s, {args.connections} connections, "
          f"{args.workers} worker(s)")
    print(f"{'target':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for r in results.values():
        print(f"{r.name:<26}{r.requests_per_s:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>8}")

    def ratio(a: str, b: str) -> str:
        per_round = [x.requests_per_s / y.requests_per_s for x, y in zip(rounds[a], rounds[b])]
        return f"{median(per_round):.2f}x (rounds: {', '.join(f'{v:.2f}' for v in per_round)})"

    print()
    print(f"shelfgraph granian / hello-world gunicorn:  {ratio(SN, HG)}   goal >= 2x")
    print(f"shelfgraph granian / hello-world granian:   {ratio(SN, HN)}   goal >= 0.9x")
    print(f"shelfgraph gunicorn / hello-world gunicorn: {ratio(SG, HG)}")
    print(f"shelfgraph granian / shelfgraph gunicorn:   {ratio(SN, SG)}")
    print(f"shelfgraph granian p99 {results[SN].p99_ms:.2f} ms (goal <= 5 ms), errors {results[SN].errors} (goal 0)")
    if neo is not None:
        print(f"shelfgraph granian / live cypher:           {ratio(SN, 'live cypher per request')}")
    if args.json:
        args.json.write_text(json.dumps({name: [r.__dict__ for r in rs] for name, rs in rounds.items()}, indent=2))


if __name__ == "__main__":
    main()
