"""The README's examples are run: the foreign-layout section (its shelfgraph.toml and its commands, in a
fresh directory), and the usage table names every command there is."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfgraph.cli import app

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
runner = CliRunner()


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start)
    nested = README.find("\n### ", start + len(title))
    stops = [i for i in (end, nested) if i > 0]
    return README[start : min(stops)] if stops else README[start:]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _args(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "shelfgraph", line
    # paths into the repository (the bundled samples) are given absolute: the commands run elsewhere
    return [str(REPO_ROOT / w) if (REPO_ROOT / w).exists() and "/" in w else w for w in words[1:]]


def test_foreign_layout_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = _section("### Your own catalog")
    (config,) = _blocks(section, "toml")
    (commands,) = _blocks(section, "bash")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHELFGRAPH_DATA_DIR", raising=False)
    monkeypatch.delenv("SHELFGRAPH_LLM_MODEL", raising=False)
    (tmp_path / "shelfgraph.toml").write_text(config, encoding="utf-8")
    outputs = []
    for line in commands.strip().splitlines():
        result = runner.invoke(app, _args(line))
        assert result.exit_code == 0, f"{line}\n{result.output}"
        outputs.append(result.output)
    first_ingest, inspected = outputs[0], outputs[-1]
    assert "category <- dept, price <- cost" in first_ingest  # the file alone maps the columns
    assert "category: Outdoor > Camping > Tents   price: 189.0" in inspected
    substitutes = inspected[inspected.index("substitutes ("):]
    assert "T-101" in substitutes


def test_without_the_file_the_first_command_warns_as_the_readme_says(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (commands,) = _blocks(_section("### Your own catalog"), "bash")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, _args(commands.strip().splitlines()[0]))
    assert result.exit_code == 0, result.output
    assert "no category or price column" in " ".join(result.output.split())
    assert "kept as raw attributes: dept, cost" in result.output


def test_usage_table_names_every_command() -> None:
    usage = README.split("## Usage", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`shelfgraph ([a-z-]+)", usage)) | set(re.findall(r"/ `([a-z-]+) ", usage))
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}  # type: ignore[union-attr]
    assert commands <= named, sorted(commands - named)
