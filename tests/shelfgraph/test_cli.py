"""The CLI is a thin shell: every command has help with an example, library errors become one line and
exit 1, and the README's main job (demo) really produces a servable graph."""

from __future__ import annotations

import re
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
def test_demo_builds_a_graph_that_inspect_and_the_server_can_read(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--data-dir", str(data_dir), "--no-serve", "--no-progress"])
    assert result.exit_code == 0, result.output
    match = re.search(r"/v1/products/([^/\s]+)/complements", result.output)
    assert match, result.output
    product_id = match.group(1)

    shown = runner.invoke(app, ["inspect", product_id, "--data-dir", str(data_dir)])
    assert shown.exit_code == 0, shown.output
    assert "complements" in shown.output

    from serve import create_app
    from serve.settings import ServeSettings

    client = create_app(ServeSettings(graph_dir=data_dir / "graph", reload_interval_s=0)).test_client()
    response = client.get(f"/v1/products/{product_id}/complements?k=5")
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert items, "the printed curl must return complements"
    catalog_ids = {line.split(",", 1)[0] for line in (SAMPLE_DIR / "catalog.csv").read_text().splitlines()[1:]}
    assert all(item["product_id"] in catalog_ids and item["reasons"] for item in items)

    missing = runner.invoke(app, ["inspect", "NOPE-404", "--data-dir", str(data_dir)])
    assert missing.exit_code == 1
