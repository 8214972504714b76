"""ServeSettings from the environment, and the gunicorn hand-off (settings -> env -> same settings)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve.index import GraphIndex
from serve.server import gunicorn_argv, run_dev, settings_env
from serve.settings import ServeSettings


def test_settings_read_the_shelfgraph_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFGRAPH_GRAPH_DIR", "/srv/graph")
    monkeypatch.setenv("SHELFGRAPH_MAX_K", "7")
    monkeypatch.setenv("SHELFGRAPH_DEFAULT_K", "5")
    monkeypatch.setenv("SHELFGRAPH_ADMIN_TOKEN", "zq9-secret")
    monkeypatch.setenv("SHELFGRAPH_LLM_MODEL", "a distill setting, ignored here")
    settings = ServeSettings()
    assert settings.graph_dir == Path("/srv/graph") and settings.max_k == 7
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "zq9-secret"
    assert "zq9-secret" not in repr(settings)


@pytest.mark.parametrize("bad", [{"default_k": 50, "max_k": 10}, {"max_k": 0}, {"graph_source": "sqlite"},
                                 {"reload_interval_s": -1}, {"unknown": 1}])
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServeSettings(**bad)  # type: ignore[arg-type]


def test_settings_survive_the_trip_to_gunicorn_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ServeSettings(graph_dir=Path("/x/graph"), admin_token="tok", max_k=30, workers=3, threads=4,
                             reload_interval_s=2.5, port=9001)
    for name, value in settings_env(original).items():
        monkeypatch.setenv(name, value)
    assert ServeSettings() == original
    argv = gunicorn_argv(original)
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:9001"
    assert argv[argv.index("--worker-class") + 1] == "gthread"
    assert argv[-1] == "serve.wsgi:app"


def test_run_dev_serves_on_an_ephemeral_port(index: GraphIndex) -> None:
    with run_dev(ServeSettings(port=0, reload_interval_s=0), index=index) as server:
        assert server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/products/cam1/complements?k=1") as r:
            assert json.loads(r.read())["items"][0]["product_id"] == "tri1"
