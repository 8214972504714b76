"""ServeSettings from the environment, and the gunicorn hand-off (settings -> env -> same settings)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve.index import GraphIndex
from serve.server import gunicorn_argv, reset_metrics_dir, run_dev, server_argv, server_env, settings_env
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


def test_granian_is_the_default_server_and_gunicorn_selectable(tmp_path: Path) -> None:
    settings = ServeSettings(workers=3, threads=2, port=9002)
    argv = server_argv(settings)
    assert argv[1:3] == ["-m", "granian"] and argv[argv.index("--interface") + 1] == "wsgi"
    assert argv[argv.index("--workers") + 1] == "3" and argv[argv.index("--blocking-threads") + 1] == "2"
    assert argv[argv.index("--port") + 1] == "9002" and argv[-1] == "serve.wsgi:app"
    gunicorn = server_argv(settings.model_copy(update={"server": "gunicorn"}))
    assert gunicorn[1:3] == ["-m", "gunicorn"] and gunicorn[-1] == "serve.wsgi:app"
    assert server_env(settings, tmp_path)["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)


def test_a_new_server_run_starts_its_counters_at_zero(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    reset_metrics_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
