"""The result models of `shelfgraph eval` (`EvalResult` and its parts) and their JSON and text forms.

`evaluation.run` produces them and `evaluation.report` renders them; report never imports run.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from evaluation.groundtruth import EVAL_KINDS, EvalKind
from evaluation.metrics import RankingMetrics, ReasonQuality
from graph_schema.models import RankerSummary

if TYPE_CHECKING:
    from graph_schema.store import PublishedGraph


class QueryRecord(BaseModel):
    """One scored query of the full graph, kept for the report's per-category view (not in the JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EvalKind
    product_id: str
    group: str
    hit: float
    recall: float
    ndcg: float
    answered: bool
    served_from: str
    category: tuple[str, ...]
    relevant: tuple[str, ...]


class VariantResult(BaseModel):
    """The metrics of one distilled graph (the full one, or one with an evidence source off)."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[EvalKind, RankingMetrics]
    reason_quality: ReasonQuality
    relation_counts: dict[str, int]
    outside_catalog_share: float
    served_from: dict[str, int] = Field(default_factory=dict)
    """How the served complement lists were produced over the `any` queries (direct, via_substitutes, ...)."""
    run_id: str
    distill_seconds: float
    settings: dict[str, bool]
    ranker: RankerSummary | None = None
    """How the complements were ordered: the learned model's validation figures, or why an ordering replaced it."""


class EvalMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    path: str
    seed: int
    k: int
    unit: str
    split: dict[str, int]
    queries: dict[EvalKind, int]
    catalog_products: int
    model: str | None
    wall_seconds: dict[str, float]
    notes: list[str] = Field(default_factory=list)


class EvalResult(BaseModel):
    """Everything `shelfgraph eval` reports. `to_json()` has a stable shape; `graph` (the full variant's
    published graph) is kept for the HTML report but never serialized."""

    model_config = ConfigDict(extra="forbid")

    graph: VariantResult
    baselines: dict[str, dict[EvalKind, RankingMetrics]]
    ablations: dict[str, VariantResult] = Field(default_factory=dict)
    meta: EvalMeta
    per_query: list[QueryRecord] = Field(default_factory=list, exclude=True)
    _published: PublishedGraph | None = PrivateAttr(default=None)

    @property
    def published(self) -> PublishedGraph | None:
        return self._published

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {kind: _metric_dict(self.graph.metrics[kind]) for kind in EVAL_KINDS}
        out["reason_quality"] = self.graph.reason_quality.as_dict()
        out["graph"] = _graph_dict(self.graph)
        out["baselines"] = {
            name: {kind: _metric_dict(m) for kind, m in metrics.items()} for name, metrics in self.baselines.items()
        }
        out["ablations"] = {
            name: {**{kind: _metric_dict(v.metrics[kind]) for kind in EVAL_KINDS},
                   "reason_quality": v.reason_quality.as_dict(), "graph": _graph_dict(v)}
            for name, v in self.ablations.items()
        }
        out["meta"] = self.meta.model_dump(mode="json")
        return out

    def to_table(self) -> str:
        """One table per kind (systems as rows), then the graph's own facts and the wall times."""
        from rich.console import Console
        from rich.table import Table

        k = self.meta.k
        # Recorded into a buffer, not printed: the caller decides where the text goes.
        console = Console(file=io.StringIO(), record=True, width=80, force_terminal=False, color_system=None)
        console.print(f"shelfgraph eval: {self.meta.dataset} at {self.meta.path} (seed {self.meta.seed}, "
                      f"{self.meta.unit} split 80/20, top {k})", markup=False)
        graphs: list[tuple[str, dict[EvalKind, RankingMetrics]]] = [("graph (served)", self.graph.metrics)]
        graphs += [(f"graph w/o {name.removeprefix('no_').replace('_', ' ')}", v.metrics)
                   for name, v in self.ablations.items()]
        bases = [(f"base: {name.replace('_', ' ')}", m) for name, m in self.baselines.items()]
        for kind in EVAL_KINDS:
            table = Table(title=f"{kind_title(self.meta.dataset, kind)}: {self.meta.queries.get(kind, 0)} queries",
                          title_justify="left")
            table.add_column("system")
            for name in (f"hit@{k}", f"ndcg@{k}", f"rec@{k}", "unans.", "cat.cov"):
                table.add_column(name, justify="right")
            for group in (graphs, bases):
                for label, metrics in group:
                    m = metrics.get(kind)
                    if m is None or m.queries == 0:
                        table.add_row(label, *(["-"] * 5))
                    else:
                        table.add_row(label, f"{m.hit:.3f}", f"{m.ndcg:.3f}", f"{m.recall:.3f}",
                                      f"{m.unanswered:.1%}", f"{m.catalog_coverage:.1%}")
                table.add_section()
            console.print(table)
        console.print("rec = recall; unans. = share of queries answered with nothing (scored as misses); "
                      "cat.cov = share of the catalog shown in some top-k list", markup=False)
        g = self.graph
        rq = g.reason_quality
        console.print(
            f"graph: {g.relation_counts.get('complement', 0)} complement and "
            f"{g.relation_counts.get('substitute', 0)} substitute relations; outside the catalog: "
            f"{g.outside_catalog_share:.1%}; complement lists served from: {dict(g.served_from)}", markup=False
        )
        if g.ranker is not None:
            r = g.ranker
            console.print(f"complement ranker: {r.reason}", markup=False)
            if r.validation:
                console.print("  label groups, out of fold (hit@10 / ndcg@10): " + "; ".join(
                    f"{name} {m['hit']:.3f}/{m['ndcg']:.3f}" for name, m in r.validation.items()), markup=False)
            if r.importances:
                console.print("  top features (gain share): " + ", ".join(
                    f"{name} {share:.2f}" for name, share in list(r.importances.items())[:8]), markup=False)
            if r.candidates:
                console.print("  candidates added/served per source: " + ", ".join(
                    f"{name} {c['added']}/{c['kept']}" for name, c in r.candidates.items() if c["added"]), markup=False)
        console.print("reasons sharing a content word with the bundle intent: "
                      + (f"{rq.share:.1%} of {rq.hits} hits" if rq.share is not None else "n/a (no intents)"), markup=False)
        console.print("wall seconds: " + ", ".join(f"{name} {s:.1f}" for name, s in self.meta.wall_seconds.items()),
                      markup=False)
        for note in self.meta.notes:
            console.print(f"note: {note}", markup=False)
        return console.export_text()


KIND_TITLES: dict[str, dict[EvalKind, str]] = {
    "bundlerec": {
        "any": "any partner (protocol: served complements vs all other items of the held-out bundle)",
        "complement": "complement (served complements vs bundle items of another leaf category)",
        "substitute": "substitute (served substitutes vs bundle items of the same leaf category)",
    },
    "amazon2018": {
        "any": "any (served complements vs also_buy + also_view of the held-out product)",
        "complement": "complement (served complements vs also_buy of the held-out product)",
        "substitute": "substitute (served substitutes vs also_view of the held-out product)",
    },
}
BASKET_TITLES: dict[EvalKind, str] = {
    "any": "any (served complements vs the rest of the held-out basket)",
    "complement": "complement (served complements vs the rest of the held-out basket)",
    "substitute": "substitute (no substitute signal in basket data)",
}


def kind_title(dataset: str, kind: EvalKind) -> str:
    return KIND_TITLES.get(dataset, BASKET_TITLES)[kind]


def _metric_dict(m: RankingMetrics) -> Mapping[str, float | int | None]:
    if m.queries == 0:
        # No ground truth of this kind (e.g. substitutes in basket data): null, never a fake 0.
        return {key: (0 if key == "queries" else None) for key in m.as_dict()}
    return dict(m.as_dict())


def _graph_dict(v: VariantResult) -> dict[str, Any]:
    return {"relations": v.relation_counts, "outside_catalog_share": v.outside_catalog_share,
            "served_from": v.served_from, "run_id": v.run_id, "distill_seconds": round(v.distill_seconds, 3),
            "settings": v.settings,
            "ranker": v.ranker.model_dump(mode="json", exclude={"candidates"}) if v.ranker is not None else None}
