"""The server's one settings object, read once at the entry point and passed to `create_app`.

Env prefix `SHELFGRAPH_` (shared with DistillSettings): serve-only fields have names the distiller does not
use, and the `neo4j_*` fields mean exactly what they mean there (the same database), so one environment
configures both. No other serve module reads os.environ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GraphSourceKind = Literal["embedded", "neo4j"]
ServerKind = Literal["granian", "gunicorn"]


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFGRAPH_", extra="forbid")

    # --- where the graph comes from ------------------------------------------------------------------
    graph_source: GraphSourceKind = Field(
        default="embedded", description="read published versions from the embedded store or from Neo4j"
    )
    graph_dir: Path = Field(default=Path(".shelfgraph/graph"), description="embedded store root")
    neo4j_uri: str = "bolt://127.0.0.1:7687"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("shelfgraph")
    neo4j_database: str | None = None
    index_dir: Path | None = Field(
        default=None, description="where each version's index is written once and mapped by every worker; "
        "default: an `index` folder beside graph_dir"
    )
    reload_interval_s: float = Field(
        default=30.0, ge=0, description="poll the store for a new current version; 0 = never"
    )
    admin_token: SecretStr | None = Field(
        default=None, description="enables POST /admin/reload (Authorization: Bearer <token>)"
    )

    # --- request limits ------------------------------------------------------------------------------
    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=100, ge=1)
    max_cart_items: int = Field(default=50, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="larger request bodies get a 413")

    # --- process -------------------------------------------------------------------------------------
    server: ServerKind = Field(default="granian", description="WSGI server behind `shelfgraph serve`")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=2, ge=1, description="worker processes (they share one mapped copy of the index)")
    threads: int = Field(default=1, ge=1, description="threads per worker (granian blocking threads; gunicorn gthread when > 1)")
    access_log: bool = Field(default=False, description="access log on stdout (off: it costs throughput)")
    pure_python: bool = Field(
        default=False, description="answer lookups in pure Python even when the C extension (serve/_fastindex.c) "
        "is built (SHELFGRAPH_PURE_PYTHON=1); the answers are the same, only slower"
    )
    metrics_dir: Path | None = Field(
        default=None, description="multiprocess metrics files; default: a fresh temporary folder per server start"
    )

    def resolved_index_dir(self) -> Path:
        return self.index_dir if self.index_dir is not None else self.graph_dir.parent / "index"

    @model_validator(mode="after")
    def _k_within_limit(self) -> ServeSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self
