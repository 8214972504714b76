"""The distiller's one settings object, read once at the entry point (CLI) and passed down.

Every field can be set from the environment with the `SHELFGRAPH_` prefix (e.g. SHELFGRAPH_LLM_MODEL).
Provider keys follow litellm's own conventions (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) or `llm_api_key`.
No other module reads os.environ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DistillSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFGRAPH_", extra="forbid", env_nested_delimiter="__")

    # --- where things live -------------------------------------------------------------------------
    data_dir: Path = Field(default=Path(".shelfgraph"), description="runs, LLM cache and the embedded store")
    store: Literal["embedded", "neo4j"] = "embedded"
    keep_versions: int = Field(default=5, ge=1, description="graph versions kept by a store")

    # --- Neo4j (store=neo4j) -------------------------------------------------------------------------
    neo4j_uri: str = "bolt://127.0.0.1:7687"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("shelfgraph")
    neo4j_database: str | None = None
    neo4j_batch_size: int = Field(default=20_000, ge=1, description="rows per Neo4j write transaction")

    # --- LLM (through litellm; unset model = run the stages that need no model) ---------------------
    llm_model: str | None = None
    llm_fallback_models: list[str] = Field(default_factory=list)
    llm_api_base: str | None = None
    llm_api_key: SecretStr | None = None
    llm_concurrency: int = Field(default=8, ge=1)
    llm_processes: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="processes that make the provider calls, each with its own event loop: 1 = in this process; "
        "N = N worker processes (the budget, limits, retries and cache stay in this one); auto = one per 16 "
        "concurrent calls (llm_concurrency), at most one per core (docs/pipeline.md, LLM throughput)")
    embed_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="processes that share one large text-embedding call, this one included: auto = the usable "
        "cores; 1 = in this process (the faster choice on a machine busy with other work; docs/pipeline.md)")
    llm_rpm: int | None = Field(default=None, ge=1, description="requests per minute limit")
    llm_tpm: int | None = Field(default=None, ge=1, description="tokens per minute limit")
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1, description="per request, transient errors and invalid output")
    llm_breaker_failures: int = Field(
        default=10, ge=1,
        description="circuit breaker: a model that fails this many requests in a row (no answer between them; "
        "429s excepted) gets no more requests this run; with every model down the run stops",
    )
    llm_temperature: float = 0.0
    llm_budget_usd: float | None = Field(default=None, ge=0)
    llm_budget_tokens: int | None = Field(default=None, ge=0)
    llm_batch_poll_s: float = Field(default=30.0, gt=0, description="provider batch API: first wait between polls")
    llm_batch_poll_max_s: float = Field(
        default=600.0, gt=0, description="provider batch API: longest wait between polls (the wait grows x1.5)")
    enrich_batch_size: int = Field(default=8, ge=1, description="products per enrichment prompt")
    verify_batch_size: int | None = Field(
        default=None, ge=1,
        description="at most this many candidate pairs per verification prompt (unset: all of one product's "
                    "shortlisted pairs in one prompt)")

    # --- graph shape -----------------------------------------------------------------------------------
    max_complements: int = Field(default=10, ge=1)
    max_substitutes: int = Field(default=10, ge=1)
    min_score: float = Field(default=0.2, ge=0, le=1, description="substitutes below this score are dropped")
    min_complement_score: float = Field(
        default=0.0, ge=0, le=1,
        description="complements below this calibrated probability of sharing a basket are dropped (0: keep each "
                    "product's max_complements best; storefronts filter per request with min_score)")
    # --- evidence sources (switch off to measure what each one adds) -----------------------------------
    use_llm: bool = Field(default=True, description="use the LLM stages when a model is configured")
    use_behaviour: bool = Field(default=True, description="use co-purchase evidence when logs are given")
    use_text_similarity: bool = Field(default=True, description="use embedding/BM25 similarity evidence")
    quality_gate_max_drop: float | None = Field(
        default=0.1, ge=0, le=1,
        description="nightly refuses a version whose NDCG@10 on the label fold is more than this share below the "
                    "current version's (unset: no gate)")
    use_learned_ranker: bool = Field(
        default=True, description="fit the complement ranker on the interactions (off: best single evidence ordering)")
    min_copurchase_support: int = Field(default=2, ge=1)
    max_rejected_rows: float = Field(
        default=0.05, ge=0, description="ingest stops when more rows are rejected: a share (<1) or a count (>=1)"
    )

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "llm-cache.sqlite"

    @property
    def embedded_store_dir(self) -> Path:
        return self.data_dir / "graph"
