"""The CLI's answer to a broken environment: an unreachable model stops `distill` with the cause and a non-zero
exit, and publishes nothing; catalogs with duplicate lines ingest with the count folded."""

from __future__ import annotations

import json
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


def _gift_cards_with_repeats(path: Path) -> Path:
    lines = [json.dumps({"asin": f"G{i}", "title": f"Gift card {i}", "category": ["Gift Cards"]}) + "\n"
             for i in range(30)]
    path.write_text("".join([*lines, *lines[:12]]), encoding="utf-8")  # 12 of 42 lines repeat earlier ones
    return path


def test_ingest_of_an_amazon_dump_with_duplicate_lines_reports_the_folded_count(tmp_path: Path) -> None:
    meta = _gift_cards_with_repeats(tmp_path / "meta_Gift_Cards.json")
    result = runner.invoke(app, ["ingest", str(meta), "--dataset", "amazon2018"])
    assert result.exit_code == 0, result.output
    assert "30 products accepted, 0 rejected, 12 identical duplicate rows folded" in " ".join(result.output.split())


def test_max_rejected_comes_from_the_option_or_the_environment(tmp_path: Path) -> None:
    meta = _gift_cards_with_repeats(tmp_path / "meta.json")
    with meta.open("a", encoding="utf-8") as handle:
        handle.write("{broken\n" * 4)  # 4 of 46 rows: more than the default 5%
    assert runner.invoke(app, ["ingest", str(meta), "--dataset", "amazon2018"]).exit_code == 1
    by_env = runner.invoke(app, ["ingest", str(meta), "--dataset", "amazon2018"],
                           env={"SHELFGRAPH_MAX_REJECTED_ROWS": "0.1"})
    assert by_env.exit_code == 0, by_env.output
    by_option = runner.invoke(app, ["ingest", str(meta), "--dataset", "amazon2018", "--max-rejected", "4"])
    assert by_option.exit_code == 0 and "4 rejected" in by_option.output, by_option.output
