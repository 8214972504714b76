"""The pipeline end to end on a 28-product slice of the sample catalog: without a model (model-free stages,
skips reported) and with the fake OpenAI server answering through the real litellm client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.candidates.model import candidates_from_frame
from distill.ingest.catalog import Interactions
from distill.errors import BudgetExceeded, StageError
from distill.llm.prompts import PROMPT_VERSIONS
from distill.run.batch import export_batch, import_batch
from distill.run.pipeline import (
    DistillResult,
    load_result,
    make_gateway,
    publish,
    run_pipeline,
)
from distill.run.state import RunDir
from distill.stages.scoring import combine, template_reasons
from distill.settings import DistillSettings
from graph_store.embedded import EmbeddedStore
from graph_schema.models import Evidence, GraphVersion, Product
from tests.distill import prune_reference
from tests.fakes.openai_server import Failure, FakeOpenAIServer
from tests.fakes.responders import HashingEncoder, catalog_responder, make_responder, sample_subset

REPO_ROOT = Path(__file__).resolve().parents[2]
LLM_STAGES = ("enrich", "propose", "ground", "verify")


@pytest.fixture(scope="module")
def catalog() -> tuple[list[Product], Interactions]:
    return sample_subset(("Phones",), limit=28)


@pytest.fixture()
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=catalog_responder) as fake:
        yield fake


def llm_settings(tmp_path: Path, server: FakeOpenAIServer, **extra: object) -> DistillSettings:
    # Small graph shape: one verify prompt per product keeps these tests to a few dozen fake calls.
    fields: dict[str, object] = {"max_complements": 5, "max_substitutes": 3, "verify_batch_size": 20, **extra}
    return DistillSettings(data_dir=tmp_path, llm_model="openai/fake-model", llm_api_base=server.base_url,
                           llm_api_key="test", llm_max_attempts=2, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def llm_run(
    tmp_path_factory: pytest.TempPathFactory, catalog
) -> Iterator[tuple[DistillResult, int, FakeOpenAIServer, DistillSettings]]:
    """One full run with the model, shared by the tests that only read it."""
    products, interactions = catalog
    tmp_path = tmp_path_factory.mktemp("llm-run")
    with FakeOpenAIServer(responder=catalog_responder) as fake:
        settings = llm_settings(tmp_path, fake)
        result = run_pipeline(products, interactions, settings, progress=False, encoder=HashingEncoder())
        yield result, fake.call_count, fake, settings


def check_relations(result: DistillResult, products: list[Product]) -> None:
    ids = {p.id for p in products}
    assert result.relations, "a run over a real-looking catalog finds relations"
    for relation in result.relations:
        assert relation.source in ids and relation.target in ids
        assert relation.reasons and all(reason.strip() for reason in relation.reasons)
        assert relation.provenance.run_id == result.run_id
        assert 0.0 <= relation.score <= 1.0


# ------------------------------------------------------------------------------------------- without a model


def test_no_model_runs_model_free_stages_and_says_which_were_skipped(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    result = run_pipeline(products, interactions, DistillSettings(data_dir=tmp_path), progress=False,
                          encoder=HashingEncoder())
    check_relations(result, products)
    stages = {s.stage: s for s in result.report.stages}
    for name in LLM_STAGES:
        assert stages[name].skipped and "no model configured" in (stages[name].skip_reason or "")
    # Without a model the judge's shortlist is not needed: the rank stage builds its own pool from the log.
    assert stages["behaviour"].skipped and "rank stage" in (stages["behaviour"].skip_reason or "")
    assert not stages["similarity"].skipped and stages["similarity"].items_out > 0
    assert not stages["rank"].skipped and stages["rank"].items_out > 0
    ranker = result.report.ranker
    assert ranker is not None and ranker.candidates["copurchase"]["added"] > 0
    assert (result.run_dir / "ranker.json").exists()
    assert result.report.llm.calls == 0
    kinds = {r.kind for r in result.relations}
    assert kinds == {"complement", "substitute"}
    assert all(r.provenance.model is None and r.provenance.prompt_version is None for r in result.relations)
    # Every stage left its output in the run folder.
    for name in ("enrich", "propose", "ground", "behaviour", "similarity", "candidates", "verify", "rank", "prune"):
        assert (result.run_dir / f"{name}.parquet").exists() or (result.run_dir / f"{name}.jsonl").exists(), name
    report = json.loads((result.run_dir / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]][:3] == ["enrich", "propose", "ground"]


def test_no_model_complements_cross_categories_and_substitutes_share_a_shelf(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    by_id = {p.id: p for p in products}
    result = run_pipeline(products, interactions, DistillSettings(data_dir=tmp_path), progress=False,
                          encoder=HashingEncoder())
    substitutes = [r for r in result.relations if r.kind == "substitute"]
    assert all(by_id[r.source].leaf_category == by_id[r.target].leaf_category for r in substitutes)
    complements = [r for r in result.relations if r.kind == "complement"]
    cross = sum(by_id[r.source].leaf_category != by_id[r.target].leaf_category for r in complements)
    assert cross / len(complements) > 0.8
    # A phone's complements include a case or screen protector made for that phone.
    phone = by_id["SKU-10001"]
    titles = [by_id[r.target].title for r in complements if r.source == phone.id]
    assert any("Novaphone N12" in title and ("Case" in title or "Protector" in title) for title in titles), titles


def test_evidence_switches_ablate_sources(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    off = DistillSettings(data_dir=tmp_path, use_behaviour=False)
    result = run_pipeline(products, interactions, off, progress=False, encoder=HashingEncoder())
    stages = {s.stage: s for s in result.report.stages}
    assert stages["behaviour"].skipped and stages["behaviour"].skip_reason == "use_behaviour is off"
    assert all(r.evidence.copurchase_count is None for r in result.relations)
    no_text = DistillSettings(data_dir=tmp_path, use_text_similarity=False)
    result = run_pipeline(products, interactions, no_text, progress=False, encoder=HashingEncoder())
    assert {s.stage: s for s in result.report.stages}["similarity"].skipped
    assert all(r.kind == "complement" for r in result.relations)


def test_importing_the_pipeline_does_not_import_litellm() -> None:
    code = ("import sys; import distill.run.pipeline, distill.run.nightly; "
            "assert 'litellm' not in sys.modules and 'distill.llm.gateway' not in sys.modules, 'eager import'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert make_gateway(DistillSettings()) is None


# ---------------------------------------------------------------------------------------------- with a model


def test_full_run_with_model_explains_every_relation(llm_run, catalog) -> None:
    products, _ = catalog
    result, calls, _, settings = llm_run
    check_relations(result, products)
    stages = {s.stage: s for s in result.report.stages}
    for name in ("enrich", "propose", "verify"):
        assert not stages[name].skipped and stages[name].llm.calls > 0
        assert stages[name].llm.input_tokens > 0 and stages[name].llm.output_tokens > 0
        assert stages[name].wall_seconds > 0
    assert stages["enrich"].llm.calls <= -(-len(products) // settings.enrich_batch_size)  # calls/product << 1
    assert result.report.llm.calls == calls
    enriched = [p for p in result.products if p.enriched]
    assert len(enriched) == len(products) and all(p.keyphrases for p in enriched)
    judged = [r for r in result.relations if r.evidence.llm_score is not None]
    assert judged and all(r.provenance.model == "openai/fake-model" for r in judged)
    assert all(r.provenance.prompt_version == PROMPT_VERSIONS["verify"] for r in judged)
    grounded = [r for r in result.relations if r.evidence.query]
    assert grounded and any(any(reason.startswith("matches '") for reason in r.reasons) for r in grounded)


def test_rerun_of_one_stage_and_resume_make_no_model_calls(catalog, llm_run) -> None:
    products, interactions = catalog
    first, _, server, settings = llm_run
    calls = server.call_count
    score_file = first.run_dir / "rank.parquet"
    before = score_file.stat().st_mtime_ns
    again = run_pipeline(products, interactions, settings, run_id=first.run_id, rerun={"rank"}, progress=False,
                         encoder=HashingEncoder())
    assert server.call_count == calls
    assert score_file.stat().st_mtime_ns != before
    assert sorted(r.key for r in again.relations) == sorted(r.key for r in first.relations)
    resumed = run_pipeline(products, interactions, settings, run_id=first.run_id, progress=False,
                           encoder=HashingEncoder())
    assert server.call_count == calls and len(resumed.relations) == len(first.relations)
    # Re-running the verify stage is answered from the response cache: still no model call.
    rerun_verify = run_pipeline(products, interactions, settings, run_id=first.run_id, rerun={"verify"},
                                progress=False, encoder=HashingEncoder())
    assert server.call_count == calls and rerun_verify.report.llm.cached_calls > 0
    # A different catalog cannot reuse the run folder of another.
    with pytest.raises(StageError, match="different inputs"):
        run_pipeline(products[:-1], interactions, settings, run_id=first.run_id, progress=False,
                     encoder=HashingEncoder())


def test_publish_and_reload_from_the_run_folder(tmp_path: Path, catalog, llm_run) -> None:
    products, _ = catalog
    result, _, _, _ = llm_run
    store = EmbeddedStore(tmp_path / "graph")
    version = publish(result, store)
    assert version.product_count == len(products)
    assert sum(version.relation_counts.values()) == len(result.relations)
    assert version.models == ["openai/fake-model"] and PROMPT_VERSIONS["verify"] in version.prompt_versions
    assert version.llm.calls == result.report.llm.calls > 0
    graph = store.load()
    assert graph.edges.height == len(result.relations)
    reloaded = load_result(result.run_dir)
    assert sorted(r.key for r in reloaded.relations) == sorted(r.key for r in result.relations)
    again = publish(reloaded, store, parent=version.version_id)
    assert again.version_id != version.version_id and again.parent_version == version.version_id
    assert store.current_version() == again.version_id
    stages = json.loads((result.run_dir / "report.json").read_text())["stages"]
    assert "publish" in [stage["stage"] for stage in stages]


def test_failed_prompts_are_recorded_not_dropped(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    broken = make_responder()

    def flaky(body: dict) -> str:
        text = broken(body)
        return "not json at all" if "SKU-10001" in json.dumps(body) and '"products"' in text else text

    with FakeOpenAIServer(responder=flaky) as fake:
        result = run_pipeline(products, interactions, llm_settings(tmp_path, fake), progress=False,
                              encoder=HashingEncoder())
    enrich_rejections = [r for r in result.rejections if r.stage == "enrich"]
    assert any(r.item == "SKU-10001" and r.reason.startswith("llm call failed") for r in enrich_rejections)
    stage = {s.stage: s for s in result.report.stages}["enrich"]
    assert stage.rejected >= 1 and stage.items_out < len(products)
    check_relations(result, products)


def test_batch_export_import_cycle_then_live_run_is_free(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    with FakeOpenAIServer(responder=catalog_responder) as fake:
        settings = llm_settings(tmp_path, fake)
        encoder = HashingEncoder()
        for cycle in range(5):
            batch_in, batch_out = tmp_path / f"in{cycle}.jsonl", tmp_path / f"out{cycle}.jsonl"
            count = export_batch(products, interactions, settings, batch_in, encoder=encoder)
            if count == 0:
                break
            lines = batch_in.read_text().splitlines()
            assert len(lines) == count
            with batch_out.open("w") as out:  # what the provider's batch API would return
                for line in lines:
                    request = json.loads(line)
                    content = catalog_responder(request["body"])
                    body = {"choices": [{"message": {"role": "assistant", "content": content}}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
                    out.write(json.dumps({"custom_id": request["custom_id"],
                                          "response": {"status_code": 200, "body": body}}) + "\n")
            report = import_batch(batch_out, products, interactions, settings, encoder=encoder)
            assert report.imported == count
        assert cycle == 3, "enrich, propose and verify each export once, then nothing is pending"
        assert fake.call_count == 0
        live = run_pipeline(products, interactions, settings, gateway=make_gateway(settings), progress=False,
                            encoder=encoder)
        assert fake.call_count == 0 and live.report.llm.cached_calls > 0
        check_relations(live, products)


# -------------------------------------------------------------------------------------------------- scoring


def test_weights_renormalize_over_available_sources() -> None:
    only_behaviour = combine("complement", {"copurchase": 0.9}, frozenset({"copurchase"}), same_leaf=False)
    assert only_behaviour == pytest.approx(0.9)
    with_text = combine("complement", {"copurchase": 0.9, "similarity": 0.0},
                        frozenset({"copurchase", "similarity"}), same_leaf=False)
    assert with_text < only_behaviour
    judged = combine("complement", {"llm": 1.0, "copurchase": 0.0}, frozenset({"llm", "copurchase"}),
                     same_leaf=False)
    unjudged = combine("complement", {"copurchase": 0.0}, frozenset({"llm", "copurchase"}), same_leaf=False)
    assert judged > unjudged
    assert combine("complement", {"copurchase": 1.0}, frozenset({"copurchase"}), same_leaf=False,
                   near_duplicate=True) == 0.0
    assert combine("complement", {"copurchase": 1.0}, frozenset({"copurchase"}), same_leaf=True) < 1.0
    assert combine("substitute", {"similarity": 0.9}, frozenset({"similarity"}), same_leaf=True) > combine(
        "substitute", {"similarity": 0.9}, frozenset({"similarity"}), same_leaf=False)


def test_template_reasons_read_like_evidence() -> None:
    reasons = template_reasons("complement", Evidence(copurchase_count=14, lift=6.2, query="screen protector"))
    assert reasons[0] == "bought together in 14 orders (lift 6.2)"
    assert "matches 'screen protector'" in reasons
    sub = template_reasons("substitute", Evidence(text_similarity=0.91), same_leaf_name="Cases")
    assert sub == ["similar: same category 'Cases', 0.91 text similarity"]


def test_budget_stop_is_reported_and_the_rerun_resumes_without_repeating_calls(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    with FakeOpenAIServer(responder=catalog_responder) as fake:
        tight = llm_settings(tmp_path, fake, llm_budget_tokens=6000, llm_concurrency=1)
        with pytest.raises(BudgetExceeded):
            run_pipeline(products, interactions, tight, run_id="budget", progress=False, encoder=HashingEncoder())
        report = json.loads((tmp_path / "runs" / "budget" / "report.json").read_text())
        assert any(note.startswith("stopped in ") and "BudgetExceeded" in note for note in report["notes"])
        spent = fake.call_count
        assert spent > 0
        ample = llm_settings(tmp_path, fake)
        result = run_pipeline(products, interactions, ample, run_id="budget", progress=False,
                              encoder=HashingEncoder())
        check_relations(result, products)
        prompts = fake.calls_by_prompt()
        assert max(prompts.values()) == 1, "no prompt was sent twice"
        assert result.report.llm.cached_calls >= 1


def test_publish_defaults_the_parent_to_the_stores_current_version(llm_run) -> None:
    """Whatever the store (the Neo4j store does not derive it itself), a new version names its parent."""
    result, _, _, _ = llm_run

    class RecordingStore:
        def __init__(self) -> None:
            self.manifests: list[GraphVersion] = []

        def current_version(self) -> str | None:
            return self.manifests[-1].version_id if self.manifests else None

        def publish(self, products: object, relations: object, manifest: GraphVersion) -> GraphVersion:
            self.manifests.append(manifest)
            return manifest

    store = RecordingStore()
    first = publish(result, store)  # type: ignore[arg-type]
    second = publish(result, store)  # type: ignore[arg-type]
    assert first.parent_version is None
    assert second.parent_version == first.version_id


def test_provenance_names_the_fallback_model_that_judged(tmp_path: Path, catalog) -> None:
    products, interactions = catalog

    def primary_cannot_verify(body: dict) -> Failure | None:
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        is_verify = schema == "VerifyAnswer" or "judgements" in json.dumps(body.get("messages", []))
        return Failure("unavailable") if body["model"] == "fake-model" and is_verify else None

    with FakeOpenAIServer(responder=catalog_responder, failure_rule=primary_cannot_verify) as fake:
        settings = llm_settings(tmp_path, fake, llm_fallback_models=["openai/backup-model"])
        result = run_pipeline(products, interactions, settings, progress=False, encoder=HashingEncoder())
        assert "backup-model" in {body["model"] for body in fake.requests}
    judged = [r for r in result.relations if r.evidence.llm_score is not None]
    assert judged and {r.provenance.model for r in judged} == {"openai/backup-model"}
    version = publish(result, EmbeddedStore(tmp_path / "graph"))
    # enrich and propose were answered by the primary, verify by the fallback: both are named.
    assert version.models == ["openai/backup-model", "openai/fake-model"]
    assert load_result(result.run_dir).models == ["openai/backup-model", "openai/fake-model"]


# ------------------------------------------------------------------------------------------- columns vs objects


def _object_prune(result: DistillResult, settings: DistillSettings) -> prune_reference.PruneResult:
    """What the object-by-object prune (the code the columnar one replaced) makes of this run's rank output."""
    run = RunDir(result.run_dir)
    judged = candidates_from_frame(run.read_frame("verify"))
    return prune_reference.prune(
        run.read_relations("rank"), {p.id: p for p in result.products}, max_complements=settings.max_complements,
        max_substitutes=settings.max_substitutes, min_score=settings.min_score,
        min_complement_score=settings.min_complement_score,
        near_duplicates={frozenset((c.source, c.target)) for c in judged if c.near_duplicate})


def test_no_model_run_publishes_what_the_object_prune_did(tmp_path: Path, catalog) -> None:
    products, interactions = catalog
    settings = DistillSettings(data_dir=tmp_path, llm_model=None, max_complements=3, max_substitutes=2)
    result = run_pipeline(products, interactions, settings, progress=False, encoder=HashingEncoder())
    expected = _object_prune(result, settings)
    assert expected.rejections, "the caps refuse some relations on this catalog, so the check means something"
    assert list(result.relations) == expected.relations
    assert Counter(r for r in result.rejections if r.stage == "prune") == Counter(expected.rejections)


def test_model_run_publishes_what_the_object_prune_did(llm_run) -> None:
    result, _, _, settings = llm_run
    expected = _object_prune(result, settings)
    assert list(result.relations) == expected.relations
    assert list(load_result(result.run_dir).relations) == expected.relations
