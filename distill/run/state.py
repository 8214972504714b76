"""Run folders: every stage writes its output under `runs_dir/<run_id>/` so a stage can be re-run alone and a
failed publish never repeats paid model calls. Owns the file layout of a run; knows nothing of stage logic.

    runs/<run_id>/run.json            what the run was asked to do (model, prompt versions, catalog fingerprint)
    runs/<run_id>/<stage>.parquet     tables (products, candidates, relations)
    runs/<run_id>/<stage>.jsonl       records (proposals, judgements)
    runs/<run_id>/rejections.jsonl    everything any stage refused, with its reason
    runs/<run_id>/report.json         the RunReport, rewritten after every stage
    runs/<run_id>/models.json         the models that answered (GraphVersion.models of a later publish)
    embeddings/<encoder>.npz          text embeddings by text hash, shared by runs (CachedEncoder)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, TypeVar, overload

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from distill.errors import LLMError, StageError
from graph_schema.models import Product, Rejection, Relation, RunReport, StageReport
from graph_schema.relation_table import RelationTable
from graph_schema.tables import edges_frame, nodes_frame, product_from_row, relation_from_row

M = TypeVar("M", bound=BaseModel)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC timestamp plus 4 random hex digits, e.g. 20261123T120000-ab12."""
    moment = now or datetime.now(timezone.utc)
    return f"{moment.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


# Settings that change stage outputs, each with the first stage whose output it changes (every later stage
# reads that output, so it is recomputed too). Settings not listed change no output (paths, rates, budgets).
SHAPING_SETTINGS: Final[dict[str, str]] = {
    "enrich_batch_size": "enrich",
    "use_behaviour": "behaviour",
    "use_text_similarity": "behaviour",  # the embedding table feeds the neighbour candidates
    "min_copurchase_support": "behaviour",
    "max_complements": "behaviour",  # candidate pool sizes per product, then the shortlist and the caps
    "max_substitutes": "similarity",
    "verify_batch_size": "verify",
    "use_learned_ranker": "verify",  # the verify shortlist is the ranker's order without the judge
    "min_score": "prune",
    "min_complement_score": "prune",
}
INTERACTIONS_STAGE: Final = "behaviour"


class RunInfo(BaseModel):
    """run.json: the inputs that decide whether a stage output of this run can be reused. The catalog, model
    and scope identify the run (a change needs a new run id); interactions and shaping settings may change
    between attempts and re-run the stages they affect (`stale_stages`)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    mode: str = "full"
    catalog_fingerprint: str
    product_count: int
    model: str | None = None
    prompt_versions: dict[str, str] = Field(default_factory=dict)
    parent_version: str | None = None
    only: list[str] | None = None
    interactions_fingerprint: str | None = None
    """sha256 of the sorted (basket_id, product_id) rows; None = no interactions, or a run.json from before."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """The SHAPING_SETTINGS values this run's outputs were computed with."""

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude={"mode", "interactions_fingerprint", "settings"})


def interactions_fingerprint(baskets: pl.DataFrame | None) -> str | None:
    """A stable hash of the basket rows, independent of their order (a re-exported log hashes the same)."""
    if baskets is None:
        return None
    rows = baskets.select(pl.col("basket_id").cast(pl.String), pl.col("product_id").cast(pl.String))
    digest = hashlib.sha256(f"{rows.height}\n".encode())
    for chunk in rows.sort(["basket_id", "product_id"]).iter_slices(200_000):
        # \x1f/\x1e: separators that cannot be confused with id text; polars' own row hash is not stable
        # across releases, so the bytes are hashed here.
        digest.update("\x1e".join(chunk["basket_id"] + "\x1f" + chunk["product_id"]).encode("utf-8"))
        digest.update(b"\x1d")
    return digest.hexdigest()


def shaping_settings(settings: BaseModel) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in SHAPING_SETTINGS}


def stale_stages(old: RunInfo, new: RunInfo) -> dict[str, str]:
    """Stages whose stored outputs were computed from other interactions or settings than `new` names:
    {stage: why}. A run.json written before these were recorded counts as changed (nothing stale is reused)."""
    stale: dict[str, str] = {}
    if old.interactions_fingerprint != new.interactions_fingerprint:
        stale[INTERACTIONS_STAGE] = "the interactions changed"
    for name, stage in SHAPING_SETTINGS.items():
        if name not in old.settings or old.settings[name] != new.settings.get(name):
            was = old.settings.get(name, "unrecorded")
            reason = f"{name} changed ({was} -> {new.settings.get(name)})"
            stale[stage] = f"{stale[stage]}; {reason}" if stage in stale else reason
    return stale


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a crash mid-write leaves the old file or none, never half a file


class RunDir:
    """One run's folder. Writes are atomic per file; a stage's output exists only once it is complete."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, runs_dir: Path, run_id: str) -> RunDir:
        if not run_id or not all(ch.isalnum() or ch in "-_." for ch in run_id) or run_id.startswith("."):
            raise StageError(f"run id must be [A-Za-z0-9._-], got {run_id!r}")
        run = cls(Path(runs_dir) / run_id)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, stage: str, suffix: str) -> Path:
        return self.path / f"{stage}.{suffix}"

    def has(self, stage: str) -> bool:
        return self.file(stage, "parquet").exists() or self.file(stage, "jsonl").exists()

    def discard(self, stages: Iterable[str]) -> None:
        """Forget the outputs of `stages` (they will be recomputed)."""
        for stage in stages:
            for suffix in ("parquet", "jsonl"):
                self.file(stage, suffix).unlink(missing_ok=True)

    # --- tables ---------------------------------------------------------------------------------------------
    def write_frame(self, stage: str, frame: pl.DataFrame) -> Path:
        path = self.file(stage, "parquet")
        tmp = path.with_name(f".{path.name}.tmp")
        frame.write_parquet(tmp)
        os.replace(tmp, path)
        return path

    def read_frame(self, stage: str) -> pl.DataFrame:
        path = self.file(stage, "parquet")
        if not path.exists():
            raise StageError(f"run {self.run_id} has no output of stage {stage!r} ({path})")
        return pl.read_parquet(path)

    def write_products(self, stage: str, products: Sequence[Product]) -> Path:
        return self.write_frame(stage, nodes_frame(products))

    def read_products(self, stage: str) -> list[Product]:
        return [product_from_row(row) for row in self.read_frame(stage).iter_rows(named=True)]

    def write_relations(self, stage: str, relations: Sequence[Relation]) -> Path:
        return self.write_frame(stage, edges_frame(relations))

    def read_relations(self, stage: str) -> list[Relation]:
        return [relation_from_row(row) for row in self.read_frame(stage).iter_rows(named=True)]

    def read_relation_table(self, stage: str) -> RelationTable:
        """The relations as their table (no Relation object is made until one is read)."""
        return RelationTable(self.read_frame(stage))

    # --- records --------------------------------------------------------------------------------------------
    def write_records(self, stage: str, records: Iterable[BaseModel]) -> Path:
        """One JSON line per record, written as they are read (a stage may refuse hundreds of thousands)."""
        path = self.file(stage, "jsonl")
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(record.model_dump_json() + "\n")
        os.replace(tmp, path)  # a crash mid-write leaves the old file or none, never half a file
        return path

    def read_records(self, stage: str, model: type[M]) -> list[M]:
        path = self.file(stage, "jsonl")
        if not path.exists():
            raise StageError(f"run {self.run_id} has no output of stage {stage!r} ({path})")
        with path.open(encoding="utf-8") as handle:
            return [model.model_validate_json(line) for line in handle if line.strip()]

    # --- rejections, report, info ------------------------------------------------------------------------
    def write_rejections(self, stage: str, rejections: Sequence[Rejection]) -> Path:
        """Per-stage file, so re-running a stage replaces its own rejections and nobody else's."""
        return self.write_records(f"rejections-{stage}", rejections)

    def read_rejections(self) -> list[Rejection]:
        found: list[Rejection] = []
        for path in sorted(self.path.glob("rejections-*.jsonl")):
            found.extend(self.read_records(path.stem, Rejection))
        return found

    def write_report(self, report: RunReport) -> Path:
        path = self.path / "report.json"
        _atomic_write_bytes(path, report.model_dump_json(indent=2).encode("utf-8"))
        return path

    def read_report(self) -> RunReport:
        path = self.path / "report.json"
        if not path.exists():
            raise StageError(f"run {self.run_id} has no report.json")
        return RunReport.model_validate_json(path.read_text(encoding="utf-8"))

    def write_info(self, info: RunInfo) -> Path:
        path = self.path / "run.json"
        _atomic_write_bytes(path, info.model_dump_json(indent=2).encode("utf-8"))
        return path

    def read_info(self) -> RunInfo | None:
        path = self.path / "run.json"
        if not path.exists():
            return None
        return RunInfo.model_validate_json(path.read_text(encoding="utf-8"))

    def write_models(self, models: Sequence[str]) -> Path:
        """models.json: every model that answered a prompt of this run (fallbacks included)."""
        return self.write_json("models.json", sorted(models))

    def read_models(self) -> list[str] | None:
        path = self.path / "models.json"
        if not path.exists():
            return None
        return [str(m) for m in json.loads(path.read_text(encoding="utf-8"))]

    def write_json(self, name: str, payload: object) -> Path:
        path = self.path / name
        _atomic_write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))
        return path


class RejectionLog(Sequence[Rejection]):
    """Every rejection of a run so far, stage by stage, each stage's part kept as the stage gave it (a list, or
    a table read one rejection at a time such as prune's `RejectedRelations`): never one object per refused
    relation for the whole run."""

    def __init__(self) -> None:
        self._parts: list[Sequence[Rejection]] = []

    def add(self, part: Sequence[Rejection]) -> None:
        if len(part):
            self._parts.append(part)

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    @overload
    def __getitem__(self, index: int) -> Rejection: ...
    @overload
    def __getitem__(self, index: slice) -> list[Rejection]: ...
    def __getitem__(self, index: int | slice) -> Rejection | list[Rejection]:
        if isinstance(index, slice):
            return list(self)[index]
        position = index + len(self) if index < 0 else index
        for part in self._parts:
            if 0 <= position < len(part):
                return part[position]
            position -= len(part)
        raise IndexError(f"rejection {index} of {len(self)}")

    def __iter__(self) -> Iterator[Rejection]:
        for part in self._parts:
            yield from part


class RunState:
    """State of one pipeline run: the run folder, the report so far, and which stages may be reused."""

    def __init__(self, run: RunDir, report: RunReport, *, reuse_outputs: bool) -> None:
        self.dir = run
        self.report = report
        self.reuse_outputs = reuse_outputs
        self.rejections = RejectionLog()
        self.previous = {s.stage: s for s in self._previous_report().stages} if reuse_outputs else {}

    def _previous_report(self) -> RunReport:
        try:
            return self.dir.read_report()
        except StageError:
            return RunReport(run_id=self.dir.run_id)

    def cached(self, stage: str) -> bool:
        """True when this stage's output from an earlier attempt of this run can be used as is."""
        if self.reuse_outputs and self.dir.has(stage) and stage in self.previous:
            old = self.previous[stage]
            self.report.stages.append(old.model_copy(update={"wall_seconds": 0.0}))
            self.rejections.add([r for r in self.dir.read_rejections() if r.stage == stage])
            return True
        # Once one stage is recomputed, every later stage must be too: its input changed.
        self.reuse_outputs = False
        return False

    def done(self, report: StageReport, rejections: Sequence[Rejection] = ()) -> None:
        self.report.stages.append(report)
        self.rejections.add(rejections)
        self.dir.write_rejections(report.stage, rejections)
        self.dir.write_report(self.report)

    @contextmanager
    def guard(self, stage: str) -> Iterator[None]:
        """A model error (budget reached, auth, ...) is written into report.json before it propagates: the
        finished stages stay reusable and answered prompts are cached, so the next attempt resumes."""
        try:
            yield
        except LLMError as exc:
            self.report.notes.append(f"stopped in {stage}: {type(exc).__name__}: {exc}"[:2000])
            self.dir.write_report(self.report)
            raise

    def skipped(self, stage: str, reason: str) -> None:
        self.done(StageReport(stage=stage, skipped=True, skip_reason=reason))


# ============================================================================================ embedding cache


class CachedEncoder:
    """Wraps a text encoder with a persistent cache under data_dir/embeddings/ keyed by sha256 of the text:
    a nightly run embeds only new and changed product texts, and eval variants share one embedding pass.
    One .npz per encoder model; rewritten atomically when new texts were encoded."""

    def __init__(self, encoder: Any, folder: Path) -> None:
        self.encoder = encoder
        self.model_name = str(getattr(encoder, "model_name", type(encoder).__name__))
        self.dim = getattr(encoder, "dim", None)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.model_name)
        self.path = Path(folder) / f"{safe}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path) as data:
                self._vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one str")
        keys = [self._key(t) for t in texts]
        missing = sorted({k: i for i, k in enumerate(keys) if k not in self._vectors}.items())
        if missing:
            fresh = self.encoder.encode([texts[i] for _, i in missing], batch_size=batch_size, progress=progress)
            for (key, _), vector in zip(missing, fresh, strict=True):
                self._vectors[key] = np.asarray(vector, dtype=np.float32)
            self._save()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if not keys:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32, copy=False)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.tmp.npz")
        keys = list(self._vectors)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys]))
        os.replace(tmp, self.path)
