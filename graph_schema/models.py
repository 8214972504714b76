"""Pydantic models of the graph contract. Every model forbids unknown fields, so a typo or a
model-invented key fails at the seam where data enters instead of travelling on silently."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from graph_schema.kinds import RelationKind

_VERSION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

ProductId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
"""The catalog's own id. The only key of a product; never derived from model output."""

Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def content_hash(
    title: str,
    description: str | None,
    brand: str | None,
    category: tuple[str, ...] | list[str],
    attributes: dict[str, str],
) -> str:
    """Hash of the fields that drive distillation. A product whose hash changed is re-distilled."""
    payload = json.dumps(
        [title, description or "", brand or "", list(category), sorted(attributes.items())],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


class Product(BaseModel):
    """One catalog item. `enriched` and `keyphrases` come from the LLM; everything else from the catalog."""

    model_config = _STRICT

    id: ProductId
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    description: str | None = None
    brand: str | None = None
    category: tuple[str, ...] = ()
    price: NonNegativeFloat | None = Field(default=None, allow_inf_nan=False)
    attributes: dict[str, str] = Field(default_factory=dict)
    enriched: dict[str, str] = Field(default_factory=dict)
    keyphrases: tuple[str, ...] = ()
    content_hash: str = ""

    @model_validator(mode="after")
    def _fill_hash(self) -> Product:
        if not self.content_hash:
            object.__setattr__(
                self,
                "content_hash",
                content_hash(self.title, self.description, self.brand, self.category, self.attributes),
            )
        return self

    @property
    def leaf_category(self) -> str | None:
        return self.category[-1] if self.category else None


class Evidence(BaseModel):
    """Why a relation exists, source by source. Absent sources stay None (not zero)."""

    model_config = _STRICT

    llm_score: Score | None = None
    copurchase_count: NonNegativeInt | None = None
    lift: NonNegativeFloat | None = Field(default=None, allow_inf_nan=False)
    pmi: float | None = Field(default=None, allow_inf_nan=False)
    text_similarity: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False)
    retrieval_score: float | None = Field(default=None, allow_inf_nan=False)
    query: str | None = None
    """The shopper-style phrase the LLM proposed and the retriever grounded to this target."""


class Provenance(BaseModel):
    model_config = _STRICT

    run_id: str
    model: str | None = None
    prompt_version: str | None = None
    stage: str | None = None


class Relation(BaseModel):
    """A scored, explained edge between two catalog products."""

    model_config = _STRICT

    source: ProductId
    target: ProductId
    kind: RelationKind
    score: Score
    reasons: tuple[Reason, ...] = Field(min_length=1, max_length=5)
    evidence: Evidence = Field(default_factory=Evidence)
    provenance: Provenance

    @model_validator(mode="after")
    def _no_self_loop(self) -> Relation:
        if self.source == self.target:
            raise ValueError(f"self-loop on product {self.source!r}")
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.target, self.kind)


class LLMUsage(BaseModel):
    """Model calls and their price. `cached_calls` were answered from the response cache at no cost."""

    model_config = ConfigDict(extra="forbid")

    calls: NonNegativeInt = 0
    cached_calls: NonNegativeInt = 0
    failed_calls: NonNegativeInt = 0
    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    cost_usd: NonNegativeFloat = 0.0

    def add(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(
            calls=self.calls + other.calls,
            cached_calls=self.cached_calls + other.cached_calls,
            failed_calls=self.failed_calls + other.failed_calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class Rejection(BaseModel):
    """Something a stage refused, with its reason and the raw text that caused it. Never silently dropped."""

    model_config = _STRICT

    stage: str
    item: str
    reason: str
    raw: str | None = None


class StageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    items_in: NonNegativeInt = 0
    items_out: NonNegativeInt = 0
    rejected: NonNegativeInt = 0
    rejection_reasons: dict[str, int] = Field(default_factory=dict)
    llm: LLMUsage = Field(default_factory=LLMUsage)
    wall_seconds: NonNegativeFloat = 0.0
    skipped: bool = False
    skip_reason: str | None = None


class RankerSummary(BaseModel):
    """How a run ordered its complements: the learned model (a run artefact) or the model-free ordering
    that replaced it, with the validation figures on the held-back label part that decided it."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    """`lambdarank` (a model fitted on the shop's own interactions) or `ordering` (one evidence source)."""
    ordering: str | None = None
    reason: str
    model_file: str | None = None
    """Path of the LightGBM model text, relative to the run folder."""
    label_share: float = 0.0
    feature_baskets: NonNegativeInt = 0
    label_baskets: NonNegativeInt = 0
    train_groups: NonNegativeInt = 0
    """Label groups with an answer in the candidate pool: the groups the fold boosters learn from."""
    valid_groups: NonNegativeInt = 0
    """Label groups judged out of fold (each by the booster that did not see it): all of them."""
    positives: NonNegativeInt = 0
    rounds: NonNegativeInt = 0
    """Boosting rounds per fold booster, on average."""
    validation: dict[str, dict[str, float]] = Field(default_factory=dict)
    """name -> {hit, ndcg} at 10 on the label groups, out of fold: the learned ranker and each single-source
    ordering."""
    importances: dict[str, float] = Field(default_factory=dict)
    """Feature -> share of the model's total split gain."""
    candidates: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Generator -> {added: candidate pairs it proposed, kept: served complements it proposed}."""


class RunReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    started_at: datetime = Field(default_factory=_utcnow)
    finished_at: datetime | None = None
    mode: str = "full"
    """`full`, or `incremental` for a nightly run that re-distilled only what changed."""
    stages: list[StageReport] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    ranker: RankerSummary | None = None

    @property
    def llm(self) -> LLMUsage:
        total = LLMUsage()
        for stage in self.stages:
            total = total.add(stage.llm)
        return total


class GraphVersion(BaseModel):
    """The manifest of one published, immutable graph version."""

    model_config = ConfigDict(extra="forbid")

    version_id: str
    created_at: datetime = Field(default_factory=_utcnow)
    catalog_fingerprint: str
    product_count: NonNegativeInt
    relation_counts: dict[RelationKind, NonNegativeInt]
    models: list[str] = Field(default_factory=list)
    prompt_versions: list[str] = Field(default_factory=list)
    llm: LLMUsage = Field(default_factory=LLMUsage)
    parent_version: str | None = None
    ranker: RankerSummary | None = None
    """The complement ranker of the run that built this version (its model file lives in the run folder)."""
    run_report: RunReport | None = None

    @field_validator("version_id")
    @classmethod
    def _safe_version_id(cls, value: str) -> str:
        # version ids become folder names and Neo4j property values: keep them boring.
        if not _VERSION_ID.fullmatch(value):
            raise ValueError(f"version id must be [A-Za-z0-9._-], got {value!r}")
        return value


def catalog_fingerprint(products: list[Product] | tuple[Product, ...]) -> str:
    """Order-independent fingerprint of a catalog's distillation-relevant content."""
    digest = hashlib.sha256()
    for pid, chash in sorted((p.id, p.content_hash) for p in products):
        digest.update(pid.encode("utf-8"))
        digest.update(b"\0")
        digest.update(chash.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def finite_or_none(value: Any) -> float | None:
    """Coerce NaN/inf (common in Parquet and polars output) to None for optional float fields."""
    if value is None:
        return None
    as_float = float(value)
    return as_float if math.isfinite(as_float) else None
