"""A retailer's own column names: mapped with --columns or shelfgraph.toml, reported by ingest, and used all
the way to the graph (the two tents of the foreign sample become substitutes, not complements)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.errors import ConfigError
from shelfgraph.cli import SAMPLE_DIR, app
from shelfgraph.config import EXAMPLE, load_config, parse_columns_option

FOREIGN = SAMPLE_DIR / "foreign-catalog.csv"
runner = CliRunner()


def _section(output: str, kind: str) -> str:
    """The rows of inspect's `kind` table (up to the next table)."""
    start = output.index(f"{kind}s (")
    rest = output[start:]
    stop = rest.find("s (", len(kind) + 3)
    return rest if stop < 0 else rest[:stop]


def _distill_and_inspect(tmp_path: Path, *options: str, root: tuple[str, ...] = ()) -> str:
    """Distil the foreign sample (no LLM), publish, and return `inspect T-100` (the first tent)."""
    data_dir = tmp_path / "data"
    done = runner.invoke(app, [*root, "distill", str(FOREIGN), "--publish", "--no-progress",
                               "--data-dir", str(data_dir), *options])
    assert done.exit_code == 0, done.output
    shown = runner.invoke(app, ["inspect", "T-100", "--data-dir", str(data_dir)])
    assert shown.exit_code == 0, shown.output
    return shown.output


def test_without_a_mapping_ingest_says_what_it_found_used_and_kept() -> None:
    result = runner.invoke(app, ["ingest", str(FOREIGN)])
    assert result.exit_code == 0, result.output
    assert "columns found: sku, name, desc, dept, cost" in result.output
    assert "id <- sku, title <- name, description <- desc" in result.output
    assert "kept as raw attributes: dept, cost" in result.output
    text = " ".join(result.output.split())
    assert "no category or price column" in text
    assert "--columns category=COLUMN,price=COLUMN" in text and "[columns] in shelfgraph.toml" in text


def test_columns_option_maps_category_and_price_and_the_tents_become_substitutes(tmp_path: Path) -> None:
    ingested = runner.invoke(app, ["ingest", str(FOREIGN), "--columns", "category=dept,price=cost"])
    assert ingested.exit_code == 0, ingested.output
    assert "category <- dept, price <- cost" in ingested.output
    assert "kept as raw attributes: -" in ingested.output
    assert "no category" not in ingested.output

    shown = _distill_and_inspect(tmp_path, "--columns", "category=dept,price=cost")
    assert "category: Outdoor > Camping > Tents" in shown and "price: 189.0" in shown
    assert "T-101" in _section(shown, "substitute")
    assert "T-101" not in _section(shown, "complement")


def test_the_unmapped_foreign_catalog_is_what_the_mapping_fixes(tmp_path: Path) -> None:
    # the failure of issue 14, kept as a test so the mapping test above is known to be able to fail
    shown = _distill_and_inspect(tmp_path)
    assert "category:    price: None" in shown
    assert "T-101" not in _section(shown, "substitute")


def test_project_file_maps_columns_for_every_catalog_command(tmp_path: Path) -> None:
    config = tmp_path / "shop.toml"
    config.write_text('[columns]\ncategory = "dept"\nprice = "cost"\n', encoding="utf-8")
    ingested = runner.invoke(app, ["--config", str(config), "ingest", str(FOREIGN)])
    assert ingested.exit_code == 0, ingested.output
    assert "category <- dept, price <- cost" in ingested.output
    shown = _distill_and_inspect(tmp_path, root=("--config", str(config)))
    assert "T-101" in _section(shown, "substitute")


def test_project_file_in_the_current_directory_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shelfgraph.toml").write_text(
        '[columns]\ncategory = "dept"\n\n[settings]\ndata_dir = "shop-data"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["ingest", str(FOREIGN)])
    assert result.exit_code == 0, result.output
    assert "category <- dept" in result.output and "no price column" in " ".join(result.output.split())
    # [settings] data_dir is relative to the file, and the environment wins over the file
    assert load_config(tmp_path / "shelfgraph.toml").distill_settings().data_dir == tmp_path / "shop-data"
    monkeypatch.setenv("SHELFGRAPH_DATA_DIR", str(tmp_path / "from-env"))
    assert load_config(tmp_path / "shelfgraph.toml").distill_settings().data_dir == tmp_path / "from-env"
    assert load_config(tmp_path / "shelfgraph.toml").distill_settings(data_dir=Path("cli")).data_dir == Path("cli")


def test_the_documented_example_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "shelfgraph.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    config = load_config(path)
    assert (config.columns.id, config.columns.category, config.columns.price) == ("sku", "dept", "cost")
    assert config.columns.category_separator == " > "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[colums]\nid = "sku"\n', "unknown sections ['colums']"),
        ('[columns]\nsku = "id"\n', "columns.sku"),
        ('[settings]\nllm_modle = "x"\n', "unknown [settings] keys ['llm_modle']"),
        ('[settings]\nmin_score = "high"\n', "settings.min_score"),
        ("[columns\n", "not valid TOML"),
    ],
)
def test_a_bad_project_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "shelfgraph.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
    result = runner.invoke(app, ["--config", str(path), "ingest", str(FOREIGN)])
    assert result.exit_code == 1
    assert "error:" in result.output and path.name in result.output


@pytest.mark.parametrize(
    ("option", "message"),
    [("category", "is not FIELD=COLUMN"), ("colour=dept", "unknown field 'colour'"), ("price=nope", "'nope'")],
)
def test_a_bad_columns_option_is_one_clear_error(option: str, message: str) -> None:
    result = runner.invoke(app, ["ingest", str(FOREIGN), "--columns", option])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())


def test_columns_option_keeps_a_separator_verbatim() -> None:
    assert parse_columns_option("category=dept, category_separator= / ") == {
        "category": "dept", "category_separator": " / "}


def test_columns_do_not_apply_to_a_fixed_dataset_layout(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path), "--dataset", "bundlerec", "--columns", "id=sku"])
    assert result.exit_code == 1
    assert "fixed layout" in result.output


def test_nightly_takes_the_same_mapping(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["nightly", str(FOREIGN), "--columns", "category=dept,price=cost",
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert f"publishing to the embedded store in {data_dir / 'graph'}" in " ".join(result.output.split())
    shown = runner.invoke(app, ["inspect", "T-101", "--data-dir", str(data_dir)])
    assert "category: Outdoor > Camping > Tents   price: 229.0" in shown.output
