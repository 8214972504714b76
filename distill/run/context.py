"""What the pipeline runner hands each stage: `RunContext` (the run's inputs, and the evidence derived once the
products are enriched), the `Stage` row of the stage table, the `Outcome` a stage returns, and the `Output`
codecs that store a stage's output in the run folder. Holds no stage logic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from distill.candidates.model import Candidate, CandidateTable, candidates_frame
from distill.run.state import RunDir, RunInfo, RunState
from distill.settings import DistillSettings
from distill.stages.propose import ProposalRecord
from graph_schema.models import Product, RankerSummary, Rejection, StageReport
from graph_schema.relation_table import RelationTable

if TYPE_CHECKING:
    from distill.candidates.generators import EmbeddingTable
    from distill.ingest.catalog import Interactions
    from distill.llm.gateway import LLMGateway
    from distill.llm.prompts import RenderedPrompt
    from distill.stages.scoring import Source
    from graph_schema.store import PublishedGraph

StageName = Literal[
    "enrich", "propose", "ground", "behaviour", "similarity", "candidates", "verify", "rank", "prune"
]
V = TypeVar("V")


@dataclass
class RunContext:
    """One run of the pipeline. `products`/`by_id`/`targets` are the catalog's until the enrich stage's output
    exists, the enriched ones after it (`evidence_ready`), together with the retriever and embeddings."""

    settings: DistillSettings
    run: RunDir
    state: RunState
    info: RunInfo
    interactions: Interactions | None
    gateway: LLMGateway | None
    reuse: PublishedGraph | None
    only: set[str] | None
    progress: bool
    encoder: Any
    catalog: list[Product]
    """The products as given (before enrichment)."""
    kept: list[Product]
    """The catalog with last version's enrichment carried over where the content did not change."""
    by_id: dict[str, Product]
    targets: list[Product]
    """The products this run distils (all of them, or `only`)."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """Stage name -> its output (computed, skipped or read back from an earlier attempt)."""
    enriched: list[Product] = field(default_factory=list)
    retriever: Any = None
    embeddings: EmbeddingTable | None = None
    available: frozenset[Source] = frozenset()
    leaf: dict[str, str | None] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    behaviour_on: bool = False
    started: float = 0.0
    """perf_counter() when the current stage started (set by the runner)."""

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def model(self) -> str | None:
        return self.info.model

    @property
    def llm(self) -> bool:
        return self.info.model is not None

    @property
    def target_ids(self) -> set[str]:
        return {p.id for p in self.targets}

    def report(self, stage: str, *, items_in: int, items_out: int, **extra: Any) -> StageReport:
        """The StageReport of a model-free stage, timed from when the runner started it."""
        return StageReport(stage=stage, items_in=items_in, items_out=items_out,
                           wall_seconds=time.perf_counter() - self.started, **extra)


@dataclass(frozen=True)
class Outcome(Generic[V]):
    """What a stage that ran returns: its output, its report and rejections; or the requests still pending
    (export mode), in which case the run stops before this stage and nothing of it is written."""

    value: V
    report: StageReport
    rejections: Sequence[Rejection] = ()
    pending: Sequence[RenderedPrompt[Any]] = ()
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Ranked:
    """The rank stage's output: every scored relation (learned complements, formula substitutes) and the
    ranker's artefacts."""

    relations: RelationTable
    summary: RankerSummary
    model_text: str | None = None


@dataclass(frozen=True)
class Output(Generic[V]):
    """How a stage's output is written to and read back from the run folder (`<stage>.parquet|jsonl`)."""

    write: Callable[[RunState, str, V], object]
    read: Callable[[RunState, str], V]


def _write_ranked(state: RunState, stage: str, ranked: Ranked) -> None:
    if ranked.model_text is not None:
        state.dir.file("ranker", "txt").write_text(ranked.model_text, encoding="utf-8")
    state.dir.file("ranker", "json").write_text(ranked.summary.model_dump_json(indent=2), encoding="utf-8")
    state.report.ranker = ranked.summary
    state.dir.write_relations(stage, ranked.relations)


def _read_ranked(state: RunState, stage: str) -> Ranked:
    relations = state.dir.read_relation_table(stage)
    state.report.ranker = RankerSummary.model_validate_json(state.dir.file("ranker", "json").read_text("utf-8"))
    return Ranked(relations, state.report.ranker)


PRODUCTS: Output[list[Product]] = Output(lambda s, n, v: s.dir.write_products(n, v),
                                         lambda s, n: s.dir.read_products(n))
PROPOSALS: Output[list[ProposalRecord]] = Output(lambda s, n, v: s.dir.write_records(n, v),
                                                 lambda s, n: s.dir.read_records(n, ProposalRecord))
CANDIDATES: Output[Sequence[Candidate]] = Output(lambda s, n, v: s.dir.write_frame(n, candidates_frame(v)),
                                                 lambda s, n: CandidateTable(s.dir.read_frame(n)))
"""A stage's candidates: a list, or a CandidateTable (the model-free stages keep their pools as columns)."""
RELATIONS: Output[RelationTable] = Output(lambda s, n, v: s.dir.write_relations(n, v),
                                          lambda s, n: s.dir.read_relation_table(n))
RANKED: Output[Ranked] = Output(_write_ranked, _read_ranked)
"""rank.parquet plus the ranker artefacts (ranker.txt, ranker.json) and the report's ranker summary."""


@dataclass(frozen=True)
class Stage:
    """One row of the stage table. The runner passes the outputs named in `inputs` to `run` (and to
    `when_skipped`) after the context; `needs_model` stages are skipped without a model. The enriched products
    and the evidence built from them (retriever, embeddings) reach every later stage through the context."""

    name: StageName
    inputs: tuple[StageName, ...]
    output: Output[Any]
    needs_model: bool
    run: Callable[..., Outcome[Any]]
    skip: Callable[[RunContext], str | None] | None = None
    """Why the stage does not run this time (checked before the no-model rule); None: it runs."""
    when_skipped: Callable[..., Any] | None = None
    """Its output when skipped (default: empty)."""
    after: Callable[[RunContext, Any], None] | None = None
    """Called with the output once it exists (computed, skipped or read back)."""
