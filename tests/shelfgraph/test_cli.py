"""The CLI is a thin shell: every command has help with an example, library errors become one line and
exit 1, and the README's main job (demo) really produces a servable graph."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfgraph.cli import SAMPLE_DIR, app

REPO_ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _commands() -> list[str]:
    return sorted(command.name or command.callback.__name__ for command in app.registered_commands)  # type: ignore[union-attr]


def test_every_command_has_help_with_an_example() -> None:
    names = _commands()
    assert {"ingest", "distill", "publish", "serve", "eval", "inspect", "demo", "nightly"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output, f"`shelfgraph {name} --help` has no example"


def test_ingest_reports_broken_rows_by_row_number(tmp_path: Path) -> None:
    catalog = tmp_path / "broken.csv"
    catalog.write_text(
        "id,title,price\n"
        "A1,Phone,199\n"
        ",No id,5\n"
        "A1,Duplicate,3\n"
        "A2,Bad price,abc\n"
        "A3,Case,9.5\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["ingest", str(catalog), "--max-rejected", "10"])
    assert result.exit_code == 0, result.output
    assert "2 products accepted" in result.output
    assert "3 rejected" in result.output
    rows = {int(m) for m in re.findall(r"│\s+(\d+)\s+│", result.output)}
    assert {2, 3, 4} <= rows, result.output


def test_ingest_over_threshold_is_one_clear_error(tmp_path: Path) -> None:
    catalog = tmp_path / "bad.csv"
    catalog.write_text("id,title\n,x\n,y\nA,ok\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(catalog), "--max-rejected", "0.1"])
    assert result.exit_code == 1
    assert "error:" in result.output


def test_readme_gives_exactly_the_two_fresh_machine_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme.split("## Usage")[0], flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == ["bash scripts/setup && .venv/bin/shelfgraph demo", "bash scripts/test"]
    assert "bash scripts/test" in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for script in ("scripts/setup", "scripts/test", "scripts/neo4j-local"):
        assert (REPO_ROOT / script).is_file(), script


@pytest.mark.slow
def test_demo_builds_a_graph_that_inspect_versions_and_the_server_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a fresh clone: no --data-dir anywhere
    result = runner.invoke(app, ["demo", "--no-serve", "--no-progress"])
    assert result.exit_code == 0, result.output
    # --no-serve: no curl for a server that never starts, the command that starts it instead
    assert "curl" not in result.output
    assert "shelfgraph serve --port 8080" in result.output
    match = re.search(r"shelfgraph inspect (\S+)", result.output)
    assert match, result.output
    product_id = match.group(1)

    shown = runner.invoke(app, ["inspect", product_id])
    assert shown.exit_code == 0, shown.output
    assert "complements" in shown.output
    listed = runner.invoke(app, ["versions"])
    assert listed.exit_code == 0, listed.output
    assert len(re.findall(r"│ \* +│ v\d{8}T", listed.output)) == 1, listed.output

    from serve import create_app
    from serve.settings import ServeSettings

    data_dir = tmp_path / ".shelfgraph"
    client = create_app(ServeSettings(graph_dir=data_dir / "graph", reload_interval_s=0)).test_client()
    response = client.get(f"/v1/products/{product_id}/complements?k=5")
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert items, "the product demo names must have complements"
    catalog_ids = {line.split(",", 1)[0] for line in (SAMPLE_DIR / "catalog.csv").read_text().splitlines()[1:]}
    assert all(item["product_id"] in catalog_ids and item["reasons"] for item in items)

    missing = runner.invoke(app, ["inspect", "NOPE-404"])
    assert missing.exit_code == 1


def test_demo_on_a_busy_port_stops_before_any_work_and_names_the_option(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["demo", "--port", str(port), "--data-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"port {port} on 127.0.0.1 is already in use" in text and "--port" in text
    assert "curl" not in text and "ingested" not in text
    assert not (tmp_path / "graph").exists()


@pytest.mark.parametrize("command", [["versions"], ["inspect", "SKU-10001"]])
def test_nothing_published_is_an_error_that_says_what_to_do(tmp_path: Path, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "no graph version published" in text and "--publish" in text


def test_publishing_to_neo4j_without_a_password_is_refused_naming_the_target(tmp_path: Path) -> None:
    result = runner.invoke(app, ["distill", str(SAMPLE_DIR / "foreign-catalog.csv"), "--publish", "--to", "neo4j",
                                 "--data-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "bolt://127.0.0.1:7687 (user neo4j) has no password set" in text
    assert "SHELFGRAPH_NEO4J_PASSWORD" in text
    assert not (tmp_path / "runs").exists(), "refused before any work"


def test_publishing_to_neo4j_says_where_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket closes
    monkeypatch.setenv("SHELFGRAPH_NEO4J_URI", f"bolt://127.0.0.1:{port}")
    monkeypatch.setenv("SHELFGRAPH_NEO4J_PASSWORD", "not-the-default")
    result = runner.invoke(app, ["distill", str(SAMPLE_DIR / "foreign-catalog.csv"), "--publish", "--to", "neo4j",
                                 "--data-dir", str(tmp_path), "--no-progress"])
    text = " ".join(result.output.split())
    assert f"publishing to Neo4j at bolt://127.0.0.1:{port} as user neo4j" in text
    assert result.exit_code == 1


def test_help_texts_name_real_arguments_and_options() -> None:
    ingest_help = " ".join(runner.invoke(app, ["ingest", "--help"]).output.split())
    assert "--path" not in ingest_help and "What PATH is" in ingest_help
    assert "--columns" in ingest_help and "--format" in ingest_help
    versions_help = " ".join(runner.invoke(app, ["versions", "--help"]).output.split())
    assert "--store" in versions_help and "Store to list: embedded or neo4j" in versions_help


def test_unknown_suffix_hint_names_an_option_that_exists(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.export"
    catalog.write_text("id,title\nA1,Phone\n", encoding="utf-8")
    refused = runner.invoke(app, ["ingest", str(catalog)])
    assert refused.exit_code == 1
    assert "--format csv|tsv|jsonl|parquet" in " ".join(refused.output.split())
    accepted = runner.invoke(app, ["ingest", str(catalog), "--format", "csv"])
    assert accepted.exit_code == 0, accepted.output
    assert "1 product accepted" in accepted.output


def test_counts_are_worded_for_one_and_for_many(tmp_path: Path) -> None:
    catalog = tmp_path / "one.csv"
    catalog.write_text("id,title\nA1,Phone\n", encoding="utf-8")
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,product_id\no1,A1\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(catalog), "--orders", str(orders)])
    assert result.exit_code == 0, result.output
    assert "1 row read, 1 product accepted" in result.output
    assert "interactions: 1 line in 1 basket over 1 product" in result.output
    assert "products accepted" not in result.output and "1 lines" not in result.output


def test_a_cut_off_json_line_reads_once_as_at(tmp_path: Path) -> None:
    catalog = tmp_path / "cut.jsonl"
    catalog.write_text('{"id": "A1", "title": "Phone"}\n{"id": "A2", "title": "Cas', encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(catalog), "--max-rejected", "5"])
    assert result.exit_code == 0, result.output
    assert "Unterminated string" in result.output and "at at" not in result.output


def test_serving_docs_give_the_real_default_port() -> None:
    from serve.settings import ServeSettings

    docs = (REPO_ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    row = next(line for line in docs.splitlines() if line.startswith("| `host`, `port`"))
    serve_help = " ".join(runner.invoke(app, ["serve", "--help"]).output.split())
    assert "default: 8080" in serve_help
    assert ServeSettings().port == 8080 and ", 8080," in row
    assert "8000" not in docs


def test_publish_of_an_earlier_run_names_its_target(tmp_path: Path) -> None:
    done = runner.invoke(app, ["distill", str(SAMPLE_DIR / "foreign-catalog.csv"), "--data-dir", str(tmp_path),
                               "--no-progress", "--run-id", "r1"])
    assert done.exit_code == 0, done.output
    published = runner.invoke(app, ["publish", "r1", "--data-dir", str(tmp_path)])
    assert published.exit_code == 0, published.output
    text = " ".join(published.output.split())
    assert f"publishing to the embedded store in {tmp_path / 'graph'}" in text and "published graph version" in text
    refused = runner.invoke(app, ["publish", "r1", "--data-dir", str(tmp_path), "--to", "neo4j"])
    assert refused.exit_code == 1 and "has no password set" in " ".join(refused.output.split())
