"""`evaluate()`: split a dataset, distil with the training behaviour only, serve the graph through
GraphIndex (the server's own code path, fallbacks included), score its top-k per kind next to the
baselines, optionally with each evidence source switched off. Never shows held-out data to the pipeline.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.settings import DistillSettings
from evaluation import EvaluationError
from evaluation.baselines import BASELINE_NAMES, Ranker, build_baselines
from evaluation.groundtruth import (
    EVAL_KINDS,
    SERVED_KIND,
    EvalData,
    EvalKind,
    Query,
    amazon_eval_data,
    basket_eval_data,
    bundlerec_eval_data,
)
from evaluation.metrics import (
    QueryScore,
    RankingMetrics,
    ReasonQuality,
    outside_catalog_share,
    reason_quality,
    score_rankings,
)
from evaluation.results import EvalMeta, EvalResult, QueryRecord, VariantResult
from graph_schema.models import GraphVersion, Product, Relation, catalog_fingerprint
from graph_schema.tables import edges_frame, nodes_frame

if TYPE_CHECKING:
    from distill.evidence.retrieval import CatalogRetriever
    from distill.llm.gateway import LLMGateway
    from graph_schema.store import PublishedGraph
    from serve.index import GraphIndex

DatasetKind = Literal["bundlerec", "amazon2018", "baskets"]
VariantName = Literal["full", "no_behaviour", "no_text_similarity", "no_learned_ranker", "no_llm"]
RunPipeline = Callable[..., Any]
"""`distill.run.pipeline.run_pipeline` or a wrapper with its signature (tests wrap it to watch its input)."""




# ============================================================================================ loading


def load_eval_data(
    dataset: DatasetKind, path: Path, seed: int = 0, *, progress: bool = False, max_rejected: float = 0.05
) -> EvalData:
    """Read a dataset and split it (see evaluation.groundtruth for the ground truth of each layout).
    `max_rejected`: the ingest threshold (settings.max_rejected_rows), a share (<1) or a count."""
    from distill.ingest import datasets

    folder = Path(path)
    opts: dict[str, Any] = {"progress": progress, "max_rejected": max_rejected}
    if dataset == "bundlerec":
        return bundlerec_eval_data(datasets.load_bundlerec(folder, **opts), seed)
    if dataset == "amazon2018":
        return amazon_eval_data(datasets.load_amazon2018(folder, **opts), seed)
    if dataset == "baskets":
        if (folder / "groceries.csv").is_file() or (folder.is_file() and folder.suffix == ".csv"):
            return basket_eval_data(datasets.load_groceries(folder, **opts), "groceries", seed)
        if (folder / "order_products__train.csv").is_file():
            return basket_eval_data(datasets.load_instacart(folder, **opts), "instacart", seed)
        raise EvaluationError(f"{folder}: not a basket dataset (expected groceries.csv or Instacart's "
                              "products.csv + order_products__train.csv)")
    raise EvaluationError(f"unknown dataset {dataset!r}; known: bundlerec, amazon2018, baskets")


# ============================================================================================ serving


def published_graph(products: Sequence[Product], relations: Sequence[Relation], version_id: str) -> PublishedGraph:
    """An in-memory published version (what a store's `load()` returns), without writing a store."""
    from graph_schema.store import PublishedGraph

    counts = Counter(r.kind for r in relations)
    manifest = GraphVersion(
        version_id=version_id, catalog_fingerprint=catalog_fingerprint(list(products)),
        product_count=len(products),
        relation_counts={"complement": counts.get("complement", 0), "substitute": counts.get("substitute", 0)},
    )
    return PublishedGraph(manifest=manifest, nodes=nodes_frame(products), edges=edges_frame(relations))


def _served(index: GraphIndex, kind: Literal["complement", "substitute"], pid: str, k: int) -> Any:
    from serve.index import UnknownProduct

    try:
        return index.complements(pid, k) if kind == "complement" else index.substitutes(pid, k)
    except UnknownProduct:
        return None


def score_index(
    index: GraphIndex, data: EvalData, k: int
) -> tuple[dict[EvalKind, RankingMetrics], ReasonQuality, dict[str, int], list[QueryRecord]]:
    """Score the served top-k of every query, per kind, exactly as the server would answer it."""
    catalog_size = max(len(data.products), 1)
    category = {p.id: p.category for p in data.products}
    cache: dict[tuple[str, str], Any] = {}
    metrics: dict[EvalKind, RankingMetrics] = {}
    records: list[QueryRecord] = []
    pairs: list[tuple[tuple[str, ...], str]] = []
    sources: Counter[str] = Counter()
    for kind in EVAL_KINDS:
        queries = data.queries[kind]
        served_kind = SERVED_KIND[kind]
        lists = []
        for q in queries:
            key = (served_kind, q.product_id)
            if key not in cache:
                cache[key] = _served(index, served_kind, q.product_id, k)
            lists.append(cache[key])
        rankings = [[n.product_id for n in lst.items] if lst is not None else [] for lst in lists]
        metrics[kind], scores = score_rankings([(q.product_id, q.relevant) for q in queries], rankings, k,
                                               catalog_size)
        for q, lst, s in zip(queries, lists, scores, strict=True):
            source = lst.source if lst is not None else "unknown_product"
            records.append(_record(kind, q, s, source, category.get(q.product_id, ())))
            if kind == "any":
                sources[source] += 1
                if q.intent and lst is not None:
                    pairs += [(n.reasons, q.intent) for n in lst.items if n.product_id in q.relevant]
    return metrics, reason_quality(pairs), dict(sources), records


def _record(kind: EvalKind, q: Query, s: QueryScore, source: str, category: tuple[str, ...]) -> QueryRecord:
    return QueryRecord(kind=kind, product_id=q.product_id, group=q.group, hit=s.hit, recall=s.recall, ndcg=s.ndcg,
                       answered=s.answered, served_from=source, category=category,
                       relevant=tuple(sorted(q.relevant)))


def score_ranker(ranker: Ranker, data: EvalData, k: int) -> dict[EvalKind, RankingMetrics]:
    catalog_size = max(len(data.products), 1)
    out: dict[EvalKind, RankingMetrics] = {}
    for kind in EVAL_KINDS:
        queries = data.queries[kind]
        ids = list(dict.fromkeys(q.product_id for q in queries))
        ranked = dict(zip(ids, ranker.rank(ids, k), strict=True))
        out[kind], _ = score_rankings([(q.product_id, q.relevant) for q in queries],
                                      [ranked[q.product_id] for q in queries], k, catalog_size)
    return out


# ============================================================================================ the evaluation


def _variants(settings: DistillSettings, llm_active: bool, ablations: bool) -> dict[VariantName, DistillSettings]:
    variants: dict[VariantName, DistillSettings] = {"full": settings}
    if ablations:
        variants["no_behaviour"] = settings.model_copy(update={"use_behaviour": False})
        variants["no_text_similarity"] = settings.model_copy(update={"use_text_similarity": False})
        variants["no_learned_ranker"] = settings.model_copy(update={"use_learned_ranker": False})
        if llm_active:
            variants["no_llm"] = settings.model_copy(update={"use_llm": False})
    return variants


@contextmanager
def _steps(progress: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar over the evaluation steps (each step's own bars show below it)."""
    if not progress:
        yield lambda _label: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("evaluate", total=total)
        first = [True]

        def step(label: str) -> None:
            if not first[0]:
                bar.advance(task)
            first[0] = False
            bar.update(task, description=f"evaluate: {label}")

        yield step


def evaluate(
    dataset: DatasetKind,
    path: Path,
    *,
    seed: int = 0,
    settings: DistillSettings,
    gateway: LLMGateway | None = None,
    k: int = 10,
    ablations: bool = False,
    progress: bool = True,
    report_path: Path | None = None,
    run_pipeline: RunPipeline | None = None,
    retriever: CatalogRetriever | None = None,
    sample: int | None = None,
    export_batch: Path | None = None,
    import_batch: Path | None = None,
) -> EvalResult:
    """Distil `dataset` with the training behaviour of a seeded 80/20 split only, serve it through
    GraphIndex, and score its top-k per kind next to the baselines. `gateway` (e.g. one in batch import
    mode) is passed through to the pipeline. `run_pipeline` / `retriever` exist for tests (a wrapped
    pipeline, a retriever without the embedding model); the defaults are the real ones.

    `sample`: distil (and so ask the model about) only a seeded sample of that many query products and score
    their queries, next to the baselines on the same queries. With a gateway in export mode,
    `export_batch` writes the requests the run still needs (then raises BatchPending) and `import_batch`
    first puts a provider's answers into the response cache: an evaluation with a real LLM costs hundreds of
    requests, answered outside the process."""
    if k < 1:
        raise EvaluationError(f"k must be >= 1, got {k}")
    if sample is not None and sample < 1:
        raise EvaluationError(f"sample must be >= 1, got {sample}")
    if run_pipeline is None:
        from distill.run.pipeline import run_pipeline as real_pipeline

        run_pipeline = real_pipeline
    started = time.perf_counter()
    walls: dict[str, float] = {}
    llm_active = settings.use_llm and settings.llm_model is not None
    variants = _variants(settings, llm_active, ablations)
    with _steps(progress, 3 + len(variants)) as step:
        step("load and split")
        t = time.perf_counter()
        data = load_eval_data(dataset, path, seed, max_rejected=settings.max_rejected_rows)
        only = None
        if sample is not None:
            data, only = sample_queries(data, sample, seed)
        walls["load_split"] = time.perf_counter() - t
        n_queries = {kind: len(data.queries[kind]) for kind in EVAL_KINDS}
        if n_queries["any"] == 0:
            raise EvaluationError(f"{path}: the test split (seed {seed}) holds no query with an answer")

        results: dict[str, VariantResult] = {}
        records: list[QueryRecord] = []
        full_graph: PublishedGraph | None = None
        for name, variant_settings in variants.items():
            step(f"distil ({name})")
            result, graph, seconds = _distil(run_pipeline, data, variant_settings, gateway, name, seed, progress,
                                             only=only, export_batch=export_batch, import_batch=import_batch)
            walls[f"distill_{name}"] = seconds
            t = time.perf_counter()
            from serve.index import GraphIndex

            index = GraphIndex.from_published(graph)
            metrics, quality, sources, variant_records = score_index(index, data, k)
            walls[f"score_{name}"] = time.perf_counter() - t
            results[name] = VariantResult(
                metrics=metrics, reason_quality=quality,
                relation_counts={"complement": 0, "substitute": 0, **Counter(r.kind for r in result.relations)},
                outside_catalog_share=outside_catalog_share(result.relations, data.catalog_ids),
                served_from=sources, run_id=result.run_id, distill_seconds=seconds,
                settings={"use_llm": variant_settings.use_llm and variant_settings.llm_model is not None,
                          "use_behaviour": variant_settings.use_behaviour,
                          "use_text_similarity": variant_settings.use_text_similarity,
                          "use_learned_ranker": variant_settings.use_learned_ranker},
                ranker=result.report.ranker,
            )
            if name == "full":
                records, full_graph = variant_records, graph

        step("baselines")
        t = time.perf_counter()
        if retriever is None:
            retriever = _default_retriever(data.products, settings, progress)
        rankers = build_baselines(data.train_interactions.baskets, data.products, retriever)
        baselines = {name: score_ranker(rankers[name], data, k) for name in BASELINE_NAMES if name in rankers}
        walls["baselines"] = time.perf_counter() - t
        walls["total"] = time.perf_counter() - started

        notes = [f"{data.unit} split 80/20 by sha256(seed:id); the pipeline saw {data.train_interactions.baskets.height}"
                 f" training rows only"]
        if dataset == "amazon2018":
            notes.append("held-out products appear in no training basket (cold start for behaviour)")
        if only is not None:
            notes.append(f"sample: {len(only)} query products (seeded by {seed}) distilled and scored; the "
                         "baselines answer the same queries")
        meta = EvalMeta(
            dataset=data.dataset, path=str(path), seed=seed, k=k, unit=data.unit, split=data.stats,
            queries=n_queries, catalog_products=len(data.products),
            model=settings.llm_model if llm_active else None,
            wall_seconds={key: round(value, 3) for key, value in walls.items()}, notes=notes,
        )
        evaluation = EvalResult(
            graph=results["full"], baselines=baselines,
            ablations={name: v for name, v in results.items() if name != "full"}, meta=meta, per_query=records,
        )
        evaluation._published = full_graph
        if report_path is not None:
            step("report")
            from evaluation.report import write_html_report

            assert full_graph is not None
            write_html_report(evaluation, full_graph, Path(report_path))
    return evaluation


class BatchPending(EvaluationError):
    """The evaluation's run needs model answers: they were written as a provider batch file."""

    def __init__(self, count: int, path: Path, stage: str | None) -> None:
        super().__init__(f"wrote {count} model requests of stage {stage!r} to {path}: answer them with a provider's "
                         "batch API, then run the same eval with --import-batch OUTPUT (and --export-batch for the "
                         "next stage's requests)")
        self.count = count
        self.path = path


def sample_queries(data: EvalData, n: int, seed: int) -> tuple[EvalData, set[str]]:
    """A seeded sample of n query products (sha256 of seed:id, smallest first) and only their queries."""
    import hashlib
    from dataclasses import replace

    ids = sorted({q.product_id for q in data.queries["any"]},
                 key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())[:n]
    chosen = set(ids)
    queries = {kind: tuple(q for q in qs if q.product_id in chosen) for kind, qs in data.queries.items()}
    return replace(data, queries=queries), chosen


def _distil(
    run_pipeline: RunPipeline, data: EvalData, settings: DistillSettings, gateway: LLMGateway | None,
    variant: str, seed: int, progress: bool, *, only: set[str] | None = None, export_batch: Path | None = None,
    import_batch: Path | None = None,
) -> tuple[Any, PublishedGraph, float]:
    from distill.run.state import new_run_id

    batch = export_batch is not None or import_batch is not None
    # A batch cycle resumes one run folder per (dataset, seed, variant, sample) instead of starting anew.
    suffix = f"batch-{len(only) if only else 'all'}" if batch else new_run_id()
    run_id = f"eval-{data.dataset}-s{seed}-{variant.replace('_', '-')}-{suffix}"
    use_gateway = gateway if settings.use_llm else None
    t = time.perf_counter()

    def run() -> Any:
        return run_pipeline(list(data.products), data.train_interactions, settings, gateway=use_gateway,
                            run_id=run_id, progress=progress, **({"only": only} if only is not None else {}))

    result = run()
    if not result.complete and import_batch is not None and use_gateway is not None:
        use_gateway.import_batch(Path(import_batch), result.pending, stage=result.stopped_at or "batch")
        result = run()
    seconds = time.perf_counter() - t
    if not result.complete:
        if export_batch is not None and use_gateway is not None:
            count = use_gateway.export_batch(result.pending, Path(export_batch))
            raise BatchPending(count, Path(export_batch), result.stopped_at)
        raise EvaluationError(
            f"distillation run {result.run_id} stopped at stage {result.stopped_at!r} with {len(result.pending)} "
            "model requests pending (batch export): answer them, import the answers into the LLM cache, then "
            "run eval again (answered requests come from the cache)"
        )
    return result, published_graph(result.products, result.relations, result.run_id), seconds


def _default_retriever(products: Sequence[Product], settings: DistillSettings, progress: bool) -> CatalogRetriever:
    """The text baseline's retriever over the raw catalog text. It reads the pipeline's embedding cache
    (data_dir/embeddings), so the catalog is embedded once per evaluation, not once per system."""
    from distill.evidence.embed import default_encoder
    from distill.evidence.retrieval import CatalogRetriever
    from distill.run.state import CachedEncoder

    encoder = CachedEncoder(default_encoder(settings.embed_workers), settings.data_dir / "embeddings")  # the pipeline's cache folder
    return CatalogRetriever.build(list(products), encoder, progress=progress)  # type: ignore[arg-type]
