"""Fixtures for tests against real servers. `neo4j_driver` uses NEO4J_URI/NEO4J_USER/NEO4J_PASSWORD when set,
otherwise starts the local Neo4j (scripts/neo4j-local) and stops it afterwards if this session started it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import neo4j
import pytest

from graph_schema.cypher import WIPE_BATCH

REPO_ROOT = Path(__file__).resolve().parents[2]
NEO4J_LOCAL = REPO_ROOT / "scripts" / "neo4j-local"
IN_CI = os.environ.get("CI") == "true"


def _unavailable(reason: str) -> None:
    # Locally a missing Java/Maven is a skip; in CI the Neo4j tests must run, so it is a failure.
    if IN_CI:
        pytest.fail(f"Neo4j integration tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _local(command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    return subprocess.run(
        ["bash", str(NEO4J_LOCAL), command], env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="session")
def neo4j_driver() -> Iterator[neo4j.Driver]:
    uri = os.environ.get("NEO4J_URI")
    user = os.environ.get("NEO4J_USER", "neo4j")
    password = os.environ.get("NEO4J_PASSWORD", "shelfgraph")
    started_here = False
    if not uri:
        # Maven is only needed until tools/neo4j/lib holds the jars.
        needed = ("java",) if (REPO_ROOT / "tools" / "neo4j" / "lib" / ".stamp").exists() else ("java", "mvn")
        missing = [tool for tool in needed if shutil.which(tool) is None]
        if missing:
            _unavailable(f"local Neo4j needs {' and '.join(missing)} (or set NEO4J_URI to a running server)")
        if _local("status").returncode != 0:
            started = _local("start")
            if started.returncode != 0:
                _unavailable(f"scripts/neo4j-local start failed:\n{started.stdout}\n{started.stderr}")
            started_here = True
        uri = f"bolt://127.0.0.1:{os.environ.get('NEO4J_BOLT_PORT', '7687')}"
    driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
    try:
        driver.verify_connectivity()
    except Exception as exc:  # any connection/auth failure means the tests cannot run here
        driver.close()
        _unavailable(f"Neo4j at {uri} does not answer: {exc}")
    try:
        yield driver
    finally:
        driver.close()
        if started_here:
            _local("stop")


def wipe_database(driver: neo4j.Driver, batch: int = 10_000) -> None:
    """Deletes every node, in batches so a large leftover graph does not need one huge transaction."""
    while True:
        records, _, _ = driver.execute_query(WIPE_BATCH, limit=batch)
        if records[0]["deleted"] == 0:
            return


@pytest.fixture
def clean_neo4j(neo4j_driver: neo4j.Driver) -> neo4j.Driver:
    """The driver, on an empty database (constraints and indexes stay)."""
    wipe_database(neo4j_driver)
    return neo4j_driver
