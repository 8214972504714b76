"""The CLI's answer to a broken environment: an unreachable model stops `distill` with the cause and a non-zero
exit, and publishes nothing; catalogs with duplicate lines ingest with the count folded."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from shelfgraph.cli import SAMPLE_DIR, app

runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_distill_against_a_closed_port_exits_non_zero_naming_connection_refused(tmp_path: Path) -> None:
    env = {
        "SHELFGRAPH_LLM_MODEL": "openai/fake-model",
        "SHELFGRAPH_LLM_API_BASE": f"http://127.0.0.1:{_closed_port()}/v1",
        "SHELFGRAPH_LLM_API_KEY": "test",
        "SHELFGRAPH_LLM_MAX_ATTEMPTS": "2",
    }
    result = runner.invoke(
        app, ["distill", str(SAMPLE_DIR / "catalog.csv"), "--data-dir", str(tmp_path), "--publish", "--no-progress"],
        env=env,
    )
    assert result.exit_code == 1, result.output
    assert "connection refused" in result.output
    assert "published graph version" not in result.output
    graph = tmp_path / "graph"
    assert not graph.exists() or not any(graph.iterdir())
