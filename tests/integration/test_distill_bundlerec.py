"""A full distillation of the real BundleRec Electronics catalog (3,499 products, purchase sessions) against
the fake OpenAI server, published to an embedded store. Prints the run report, wall time and model calls per
product. The text encoder is the fast hashing stand-in: the real MiniLM encoder has its own tests, and this
test is about the pipeline at catalog scale (every id real, every relation explained)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from distill.ingest.datasets import load_bundlerec
from distill.run.pipeline import publish, run_pipeline
from distill.settings import DistillSettings
from graph_store.embedded import EmbeddedStore
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.responders import HashingEncoder, catalog_responder

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data" / "bundlerec-electronics"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
def test_full_run_over_bundlerec_publishes_an_explained_graph(tmp_path: Path) -> None:
    data = load_bundlerec(DATA)
    products = list(data.catalog.products)
    ids = {p.id for p in products}
    with FakeOpenAIServer(responder=catalog_responder) as server:
        settings = DistillSettings(
            data_dir=tmp_path, llm_model="openai/fake-model", llm_api_base=server.base_url, llm_api_key="test",
            llm_concurrency=16, llm_max_attempts=2,
        )
        started = time.perf_counter()
        result = run_pipeline(products, data.interactions, settings, progress=False, encoder=HashingEncoder())
        seconds = time.perf_counter() - started
        calls = server.call_count
    store = EmbeddedStore(tmp_path / "graph")
    version = publish(result, store)

    assert store.current_version() == version.version_id
    graph = store.load()
    assert graph.edges.height == len(result.relations) > len(products)
    assert set(graph.edges["source"].to_list()) | set(graph.edges["target"].to_list()) <= ids
    for relation in result.relations:
        assert relation.reasons and relation.provenance.run_id == result.run_id
    judged = [r for r in result.relations if r.evidence.llm_score is not None]
    assert judged and all(r.provenance.model == "openai/fake-model" and r.provenance.prompt_version
                          for r in judged)
    stages = {s.stage: s for s in result.report.stages}
    assert all(not stages[name].skipped for name in ("enrich", "propose", "ground", "behaviour", "verify"))
    assert result.report.llm.calls == calls
    sources = Counter(r.source for r in result.relations if r.kind == "complement")
    assert len(sources) > 0.9 * len(products)

    print(f"\nBundleRec: {len(products)} products, {len(result.relations)} relations "
          f"({version.relation_counts}), {seconds:.1f} s wall, {calls} model calls "
          f"= {calls / len(products):.2f} calls/product")
    for stage in result.report.stages:
        note = f"skipped: {stage.skip_reason}" if stage.skipped else ""
        print(f"  {stage.stage:<11} in={stage.items_in:<7} out={stage.items_out:<7} rejected={stage.rejected:<6} "
              f"calls={stage.llm.calls:<5} tokens={stage.llm.input_tokens + stage.llm.output_tokens:<8} "
              f"{stage.wall_seconds:7.1f}s {note}")
