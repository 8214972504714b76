"""One self-contained HTML file per evaluation: metric tables next to the baselines, score and out-degree
distributions, metrics per category, and example products with their served complements and reasons.

Plots are matplotlib figures drawn on the Agg canvas (no pyplot, no global backend switch) and embedded
as base64 PNG; every piece of product text is HTML-escaped. Opens in a browser with no server.
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from evaluation.groundtruth import EVAL_KINDS, EvalKind
from evaluation.metrics import RankingMetrics
from evaluation.results import kind_title
from evaluation.split import unit_hash

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from graph_schema.store import PublishedGraph
    from evaluation.results import EvalResult, QueryRecord

MIN_CATEGORY_QUERIES: Final[int] = 20
"""A category gets its own row in the per-category view only with at least this many queries."""
EXAMPLES: Final[int] = 6
EXAMPLE_COMPLEMENTS: Final[int] = 5
_GRAPH_COLOUR = "#1f6f8b"
_BASELINE_COLOUR = "#b0b7bf"
_ABLATION_COLOUR = "#8fc1d4"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d252c;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #dde3e8;
padding-bottom:.3rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}th,td{padding:.25rem .6rem;text-align:right;
border-bottom:1px solid #eef1f4}th:first-child,td:first-child{text-align:left}th{background:#f5f7f9}
tr.graph td{font-weight:600}td.best{color:#0b6e2f}.muted{color:#6b7781;font-size:.85rem}
img{max-width:100%;height:auto}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.example{border:1px solid #dde3e8;border-radius:6px;padding:.6rem .9rem;margin:.7rem 0}
.example ol{margin:.3rem 0 .2rem 1.2rem;padding:0}.example li{margin:.25rem 0}
.hit{background:#e3f4e8;border-radius:3px;padding:0 .25rem}.reason{color:#4a5661;font-size:.85rem}
code{background:#f1f3f5;padding:0 .25rem;border-radius:3px}
"""


def write_html_report(result: EvalResult, graph: PublishedGraph, path: Path) -> Path:
    """Write the report for `result` (and the full graph it scored) to `path`; returns the path."""
    meta = result.meta
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>shelfgraph eval: {escape(meta.dataset)}</title><style>{_CSS}</style></head><body>",
        f"<h1>shelfgraph evaluation: {escape(meta.dataset)}</h1>",
        _meta_html(result),
        "<h2>Metrics next to the baselines</h2>",
        "<p class='muted'>Every system answers the same held-out queries. <b>any</b> is the protocol's headline "
        "(served complements against all held-out partners); <b>complement</b> / <b>substitute</b> use the rough "
        "leaf-category proxy. Unanswered queries count as misses. Best value per column in green.</p>",
        *(_metric_table(result, kind) for kind in EVAL_KINDS),
        _img(_metric_bars(result), "hit and NDCG per system"),
        "<h2>The graph</h2><div class='grid'>",
        _img(_score_histograms(graph), "score distribution per kind"),
        _img(_degree_histograms(graph), "out-degree distribution per kind"),
        "</div>",
        _graph_facts(result),
        "<h2>The complement ranker</h2>",
        _ranker_html(result),
        "<h2>Metrics per category</h2>",
        _category_section(result),
        "<h2>Examples</h2>",
        _examples_html(result, graph),
        "</body></html>",
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


# ============================================================================================ text parts


def _meta_html(result: EvalResult) -> str:
    meta = result.meta
    split = ", ".join(f"{escape(k)} {v:,}" for k, v in meta.split.items())
    queries = ", ".join(f"{escape(k)} {v:,}" for k, v in meta.queries.items())
    walls = ", ".join(f"{escape(k)} {v:.1f}s" for k, v in meta.wall_seconds.items())
    notes = "".join(f"<li>{escape(n)}</li>" for n in meta.notes)
    return (
        f"<p class='muted'>data <code>{escape(meta.path)}</code> &middot; seed {meta.seed} &middot; "
        f"{escape(meta.unit)} split 80/20 &middot; top {meta.k} &middot; {meta.catalog_products:,} catalog products "
        f"&middot; model: {escape(meta.model or 'none (model-free stages only)')}</p>"
        f"<p class='muted'>split: {split}<br>queries: {queries}<br>wall time: {walls}</p><ul class='muted'>{notes}</ul>"
    )


def _systems(result: EvalResult) -> list[tuple[str, str, dict[EvalKind, RankingMetrics]]]:
    """(label, css class, metrics) for the graph, its ablations and the baselines, in table order."""
    rows = [("graph (served)", "graph", result.graph.metrics)]
    rows += [(f"graph, {n.replace('_', ' ')}", "ablation", v.metrics) for n, v in result.ablations.items()]
    rows += [(f"baseline: {n.replace('_', ' ')}", "baseline", m) for n, m in result.baselines.items()]
    return rows


def _metric_table(result: EvalResult, kind: EvalKind) -> str:
    k = result.meta.k
    rows = [(label, cls, metrics.get(kind)) for label, cls, metrics in _systems(result)]
    scored = [(label, cls, m) for label, cls, m in rows if m is not None and m.queries > 0]
    title = f"<h3>{escape(kind_title(result.meta.dataset, kind))}: {result.meta.queries.get(kind, 0):,} queries</h3>"
    if not scored:
        return title + "<p class='muted'>No ground truth of this kind in this dataset.</p>"
    columns = [("hit", f"hit@{k}", True), ("ndcg", f"ndcg@{k}", True), ("recall", f"recall@{k}", True),
               ("unanswered", "unanswered", False), ("catalog_coverage", "catalog coverage", True)]
    best = {
        attr: (max if higher else min)(getattr(m, attr) for _, _, m in scored) for attr, _, higher in columns
    }
    head = "<tr><th>system</th>" + "".join(f"<th>{escape(name)}</th>" for _, name, _ in columns) + "</tr>"
    body = []
    for label, cls, m in scored:
        cells = []
        for attr, _, _ in columns:
            value = getattr(m, attr)
            mark = " class='best'" if math.isclose(value, best[attr]) else ""
            text = f"{value:.1%}" if attr in ("unanswered", "catalog_coverage") else f"{value:.3f}"
            cells.append(f"<td{mark}>{text}</td>")
        body.append(f"<tr class='{cls}'><td>{escape(label)}</td>{''.join(cells)}</tr>")
    return title + f"<table>{head}{''.join(body)}</table>"


def _graph_facts(result: EvalResult) -> str:
    g = result.graph
    rq = g.reason_quality
    served = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(g.served_from.items()))
    reason = (f"{rq.share:.1%} of {rq.hits:,} hits ({rq.overlapping:,})" if rq.share is not None
              else "n/a (no annotated intents in this dataset)")
    return (
        f"<p>{g.relation_counts.get('complement', 0):,} complement and {g.relation_counts.get('substitute', 0):,} "
        f"substitute relations; relations pointing outside the catalog: <b>{g.outside_catalog_share:.1%}</b>.<br>"
        f"Complement lists of the <i>any</i> queries were served from: {served}.<br>"
        f"Reasons sharing a content word with the annotated bundle intent (lexical check): {reason}.</p>"
    )


def _ranker_html(result: EvalResult) -> str:
    """How the run ordered its complements: the learned model's figures on held-back label baskets (the
    shop's own log, not the evaluation's test split), each single-evidence ordering, feature importances."""
    ranker = result.graph.ranker
    if ranker is None:
        return "<p class='muted'>No ranker summary in this run.</p>"
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{m['hit']:.3f}</td><td>{m['ndcg']:.3f}</td></tr>"
                   for name, m in ranker.validation.items())
    features = "".join(f"<tr><td>{escape(name)}</td><td>{share:.3f}</td></tr>"
                       for name, share in list(ranker.importances.items())[:15])
    sources = "".join(f"<tr><td>{escape(name)}</td><td>{c['added']:,}</td><td>{c['kept']:,}</td></tr>"
                      for name, c in ranker.candidates.items())
    return (
        f"<p>{escape(ranker.reason)}. Model: {escape(ranker.kind)}"
        f"{' (' + escape(ranker.model_file) + ' in the run folder)' if ranker.model_file else ''}; "
        f"{ranker.valid_groups:,} label groups, each held back once ({ranker.train_groups:,} with an answer "
        f"in the pool train the fold boosters), {ranker.rounds} boosting rounds per booster on average.</p>"
        f"<div class='grid'><table><tr><th>ordering (label groups, out of fold)</th><th>hit@10</th><th>ndcg@10</th></tr>{rows}</table>"
        f"<table><tr><th>feature</th><th>gain share</th></tr>{features}</table>"
        f"<table><tr><th>generator</th><th>candidates</th><th>served</th></tr>{sources}</table></div>"
    )


# ============================================================================================ per category


def _category_level(records: Sequence[QueryRecord]) -> int:
    """The first category level where no single value holds 90% of the queries (BundleRec's level 1 is
    "Electronics" for nearly all of them, so grouping there says nothing)."""
    depth = max((len(r.category) for r in records), default=0)
    for level in range(depth):
        values = Counter(r.category[level] for r in records if len(r.category) > level)
        if values and values.most_common(1)[0][1] < 0.9 * len(records):
            return level
    return 0


def category_metrics(
    records: Sequence[QueryRecord], kind: EvalKind, min_queries: int = MIN_CATEGORY_QUERIES
) -> tuple[int, list[tuple[str, int, float, float]]]:
    """(level, [(category, queries, mean hit, mean ndcg)]) for categories with >= min_queries queries of
    `kind`, most queries first."""
    chosen = [r for r in records if r.kind == kind]
    level = _category_level(chosen)
    groups: dict[str, list[QueryRecord]] = defaultdict(list)
    for r in chosen:
        groups[r.category[level] if len(r.category) > level else "(no category)"].append(r)
    rows = [
        (name, len(rs), sum(r.hit for r in rs) / len(rs), sum(r.ndcg for r in rs) / len(rs))
        for name, rs in groups.items() if len(rs) >= min_queries
    ]
    return level, sorted(rows, key=lambda row: (-row[1], row[0]))


def _category_section(result: EvalResult) -> str:
    k = result.meta.k
    level, rows = category_metrics(result.per_query, "any")
    if not rows:
        return (f"<p class='muted'>No category has {MIN_CATEGORY_QUERIES} or more queries "
                "(or the dataset has no categories).</p>")
    head = f"<tr><th>category (level {level + 1})</th><th>queries</th><th>hit@{k}</th><th>ndcg@{k}</th></tr>"
    body = "".join(
        f"<tr><td>{escape(name)}</td><td>{n:,}</td><td>{hit:.3f}</td><td>{ndcg:.3f}</td></tr>"
        for name, n, hit, ndcg in rows
    )
    note = (f"<p class='muted'>The served graph on the <i>any</i> queries, grouped by the query's category at "
            f"level {level + 1}; categories with at least {MIN_CATEGORY_QUERIES} queries.</p>")
    return note + _img(_category_bars(rows, k), "hit per category") + f"<table>{head}{body}</table>"


# ============================================================================================ examples


def _examples_html(result: EvalResult, graph: PublishedGraph) -> str:
    from serve.index import GraphIndex

    index = GraphIndex.from_published(graph)
    records = [r for r in result.per_query if r.kind == "any"]
    if not records:
        return "<p class='muted'>No queries.</p>"
    # Deterministic but not cherry-picked by hand: hash order, mostly hits (to show reasons) and some misses.
    ordered = sorted(records, key=lambda r: unit_hash(f"{r.product_id}:{r.group}", result.meta.seed))
    hits = [r for r in ordered if r.hit > 0][: EXAMPLES - EXAMPLES // 3]
    misses = [r for r in ordered if r.hit == 0][: EXAMPLES - len(hits)]
    out = ["<p class='muted'>Held-out queries picked by hash order (hits and misses). Partners the shoppers "
           "actually bought with the query are <span class='hit'>highlighted</span>.</p>"]
    for record in [*hits, *misses]:
        if record.product_id not in index:
            continue
        product = index.product(record.product_id)
        served = index.complements(record.product_id, EXAMPLE_COMPLEMENTS)
        relevant = set(record.relevant)
        items = []
        for n in served.items:
            title = escape(n.title)
            title = f"<span class='hit'>{title}</span>" if n.product_id in relevant else title
            via = f" (via {escape(n.via)})" if n.via else ""
            reasons = "; ".join(escape(r) for r in n.reasons)
            items.append(f"<li>{title} <span class='muted'>score {n.score:.2f}{via}</span><br>"
                         f"<span class='reason'>{reasons}</span></li>")
        partners = ", ".join(escape(index.product(p).title[:80]) if p in index else escape(p)
                             for p in record.relevant[:8])
        if len(record.relevant) > 8:
            partners += f" (+{len(record.relevant) - 8} more)"
        out.append(
            f"<div class='example'><b>{escape(product.title)}</b> <span class='muted'>"
            f"{escape(' > '.join(product.category))} &middot; complements served {escape(served.source)}</span>"
            f"<ol>{''.join(items) or '<li class=muted>nothing served</li>'}</ol>"
            f"<span class='muted'>held-out partners: {partners}</span></div>"
        )
    return "".join(out)


# ============================================================================================ plots


def _figure(width: float = 5.4, height: float = 3.2) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _img(figure: Figure, alt: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"


def _metric_bars(result: EvalResult) -> Figure:
    k = result.meta.k
    systems = [(label, cls, m["any"]) for label, cls, m in _systems(result) if "any" in m and m["any"].queries]
    figure = _figure(10.5, 0.45 * len(systems) + 1.4)
    axes = figure.subplots(1, 2, sharey=True)
    colours = {"graph": _GRAPH_COLOUR, "ablation": _ABLATION_COLOUR, "baseline": _BASELINE_COLOUR}
    y = np.arange(len(systems))[::-1]
    for ax, attr, name in ((axes[0], "hit", f"hit@{k}"), (axes[1], "ndcg", f"ndcg@{k}")):
        values = [getattr(m, attr) for _, _, m in systems]
        ax.barh(y, values, color=[colours[cls] for _, cls, _ in systems])
        for yi, value in zip(y, values):
            ax.text(value, yi, f" {value:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, max(max(values, default=0) * 1.25, 0.05))
        ax.set_title(f"{name} (any partner)", fontsize=10)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(y, [label for label, _, _ in systems])
    return figure


def _score_histograms(graph: PublishedGraph) -> Figure:
    figure = _figure()
    ax = figure.subplots()
    edges = graph.edges
    bins = [i / 20 for i in range(21)]
    for kind, colour in (("complement", _GRAPH_COLOUR), ("substitute", "#d08c2f")):
        scores = edges.filter(edges["kind"] == kind)["score"].to_numpy()
        ax.hist(scores, bins=bins, alpha=0.65, color=colour, label=f"{kind} ({len(scores):,})")
    ax.set_xlabel("relation score")
    ax.set_ylabel("relations")
    ax.set_title("Score distribution per kind", fontsize=10)
    ax.legend(fontsize=8)
    return figure


def _degree_histograms(graph: PublishedGraph) -> Figure:
    figure = _figure()
    ax = figure.subplots()
    n_products = max(graph.nodes.height, 1)
    edges = graph.edges
    top = 1
    per_kind = {}
    for kind in ("complement", "substitute"):
        sources = edges.filter(edges["kind"] == kind)["source"]
        counts = sources.value_counts()["count"].to_numpy() if len(sources) else np.zeros(0, np.int64)
        # Products without any edge of this kind are the zero bar, not missing from the plot.
        degrees = np.concatenate([counts, np.zeros(max(n_products - len(counts), 0), np.int64)])
        per_kind[kind] = degrees
        top = max(top, int(degrees.max()) if len(degrees) else 0)
    bins = [i - 0.5 for i in range(top + 2)]
    for (kind, degrees), colour in zip(per_kind.items(), (_GRAPH_COLOUR, "#d08c2f")):
        ax.hist(degrees, bins=bins, alpha=0.65, color=colour,
                label=f"{kind} (no edge: {np.mean(degrees == 0):.0%})")
    ax.set_xlabel("out-degree (relations per source product)")
    ax.set_ylabel("products")
    ax.set_title("Out-degree distribution per kind", fontsize=10)
    ax.legend(fontsize=8)
    return figure


def _category_bars(rows: Sequence[tuple[str, int, float, float]], k: int) -> Figure:
    shown = list(rows[:20])
    figure = _figure(8.5, 0.32 * len(shown) + 1.2)
    ax = figure.subplots()
    y = np.arange(len(shown))[::-1]
    hits = [hit for _, _, hit, _ in shown]
    ax.barh(y, hits, color=_GRAPH_COLOUR)
    for yi, value in zip(y, hits):
        ax.text(value, yi, f" {value:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, [f"{name[:40]} ({n})" for name, n, _, _ in shown], fontsize=8)
    ax.set_xlabel(f"hit@{k} (any partner)")
    ax.set_xlim(0, min(1.0, max(max(hits, default=0) * 1.3, 0.05)))
    ax.set_title("Served graph per category (queries in brackets)", fontsize=10)
    return figure
