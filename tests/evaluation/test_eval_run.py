"""The whole evaluate() path on tiny synthetic folders (fast), the other layouts' ground truth, and the real
BundleRec Electronics evaluation (slow, skipped without ../shared/data)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from distill.ingest.datasets import load_amazon2018, load_bundlerec, load_groceries
from distill.evidence.retrieval import CatalogRetriever
from distill.settings import DistillSettings
from evaluation import EvaluationError
from evaluation.groundtruth import EVAL_KINDS, amazon_eval_data, basket_eval_data
from evaluation.metrics import hit_at_k, ndcg_at_k
from evaluation.run import evaluate, load_eval_data, published_graph
from serve.index import GraphIndex
from tests.evaluation import write_tiny_bundlerec

TOP_KEYS = {"any", "complement", "substitute", "reason_quality", "graph", "baselines", "ablations", "meta"}
BASELINES = {"popularity", "category_popularity", "cooccurrence", "text_similarity"}


def _check_metrics(block: dict[str, Any], k: int = 10) -> None:
    assert set(block) == {f"hit@{k}", f"recall@{k}", f"ndcg@{k}", "coverage", "unanswered", "catalog_coverage",
                          "queries"}
    if block["queries"] == 0:
        assert block[f"hit@{k}"] is None
        return
    for key, value in block.items():
        if key != "queries":
            assert 0.0 <= value <= 1.0, (key, value)
    assert block["coverage"] + block["unanswered"] == pytest.approx(1.0)
    assert block[f"recall@{k}"] <= block[f"hit@{k}"] + 1e-9  # recall > 0 needs a hit


def _check_shape(out: dict[str, Any], *, ablations: set[str]) -> None:
    assert set(out) == TOP_KEYS
    for kind in EVAL_KINDS:
        _check_metrics(out[kind])
    assert set(out["baselines"]) == BASELINES
    for per_kind in out["baselines"].values():
        assert set(per_kind) == set(EVAL_KINDS)
        for block in per_kind.values():
            _check_metrics(block)
    assert set(out["ablations"]) == ablations
    for variant in out["ablations"].values():
        for kind in EVAL_KINDS:
            _check_metrics(variant[kind])
    assert out["graph"]["outside_catalog_share"] == 0.0
    json.dumps(out)  # serializable as is


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, CatalogRetriever]:
    folder = write_tiny_bundlerec(tmp_path / "bundlerec")
    # BM25-only retriever: the text baseline runs without loading the embedding model.
    return folder, CatalogRetriever.build(list(load_bundlerec(folder).catalog.products), None)


def test_evaluate_tiny_bundlerec_end_to_end(tmp_path: Path, tiny: tuple[Path, CatalogRetriever]) -> None:
    folder, retriever = tiny
    settings = DistillSettings(data_dir=tmp_path / "data", use_text_similarity=False)
    report = tmp_path / "out" / "report.html"
    result = evaluate("bundlerec", folder, settings=settings, ablations=True, progress=False, retriever=retriever,
                      report_path=report)
    out = result.to_json()
    _check_shape(out, ablations={"no_behaviour", "no_text_similarity", "no_learned_ranker"})
    data = load_eval_data("bundlerec", folder, 0)
    assert out["meta"]["queries"] == {kind: len(data.queries[kind]) for kind in EVAL_KINDS}
    assert out["any"]["queries"] > 0 and out["substitute"]["queries"] > 0

    # The reported graph numbers are what GraphIndex serves: recompute the headline by hand.
    assert result.published is not None
    index = GraphIndex.from_published(result.published)
    queries = data.queries["any"]
    served = [[n.product_id for n in index.complements(q.product_id, 10).items] for q in queries]
    hits = [hit_at_k(s, q.relevant, 10) for s, q in zip(served, queries)]
    ndcgs = [ndcg_at_k(s, q.relevant, 10) for s, q in zip(served, queries)]
    assert out["any"]["hit@10"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert out["any"]["ndcg@10"] == pytest.approx(sum(ndcgs) / len(ndcgs), abs=1e-6)

    # Co-occurrence in training sessions carries the tiny dataset's structure; global popularity less so.
    assert out["baselines"]["cooccurrence"]["any"]["hit@10"] > 0

    table = result.to_table()
    assert "hit@10" in table and "base: cooccurrence" in table and "graph w/o behaviour" in table

    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert "data:image/png;base64," in html
    assert not re.search(r"(src|href)=['\"]https?:", html)  # self-contained: nothing fetched
    assert "<script" not in html
    # The run's complement ranker is shown: how it was chosen and its figures on the label baskets, out of fold.
    ranker = result.graph.ranker
    flat = " ".join(table.split())  # the table wraps long lines at 80 columns
    assert ranker is not None and "complement ranker" in flat and " ".join(ranker.reason.split()) in flat
    assert "The complement ranker" in html and "label groups, out of fold" in html
    assert result.to_json()["graph"]["ranker"]["kind"] == ranker.kind


def test_report_escapes_product_text(tmp_path: Path, tiny: tuple[Path, CatalogRetriever]) -> None:
    folder, retriever = tiny
    titles = folder / "item_titles.csv"
    lines = titles.read_text(encoding="utf-8").splitlines()
    # Every title carries markup, so whichever products the report shows, the markup must come out escaped.
    titles.write_text("\n".join([lines[0], *(line[:-1] + ' <img src=x onerror=alert(1)>"' for line in lines[1:])])
                      + "\n", encoding="utf-8")
    settings = DistillSettings(data_dir=tmp_path / "data", use_text_similarity=False)
    report = tmp_path / "report.html"
    evaluate("bundlerec", folder, settings=settings, progress=False, retriever=retriever, report_path=report)
    html = report.read_text(encoding="utf-8")
    assert "onerror=alert(1)&gt;" in html
    assert "<img src=x" not in html


def test_evaluate_refuses_bad_input(tmp_path: Path, tiny: tuple[Path, CatalogRetriever]) -> None:
    folder, retriever = tiny
    settings = DistillSettings(data_dir=tmp_path / "data", use_text_similarity=False)
    with pytest.raises(EvaluationError, match="k must be"):
        evaluate("bundlerec", folder, settings=settings, k=0, progress=False, retriever=retriever)
    with pytest.raises(EvaluationError, match="not a basket dataset"):
        evaluate("baskets", folder, settings=settings, progress=False, retriever=retriever)


def test_published_graph_round_trips_through_the_index(tiny_catalog) -> None:  # type: ignore[no-untyped-def]
    from graph_schema.models import Provenance, Relation

    rel = Relation(source="P-01", target="P-03", kind="complement", score=0.9, reasons=("case fits",),
                   provenance=Provenance(run_id="t"))
    index = GraphIndex.from_published(published_graph(tiny_catalog, [rel], "t1"))
    assert [n.product_id for n in index.complements("P-01", 10).items] == ["P-03"]


# ------------------------------------------------------------------------------------------- other layouts


def _write_amazon(path: Path) -> Path:
    rows = []
    ids = [f"B{i:03d}" for i in range(40)]
    for i, pid in enumerate(ids):
        rows.append(json.dumps({
            "asin": pid, "title": f"Gift card design {i}", "category": ["Gift Cards", "Cards"],
            "also_buy": [ids[(i + 1) % 40], ids[(i + 2) % 40], "B-OUTSIDE"],
            "also_view": [ids[(i + 3) % 40]],
        }))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_amazon_ground_truth_holds_out_products_entirely(tmp_path: Path) -> None:
    data = amazon_eval_data(load_amazon2018(_write_amazon(tmp_path / "meta_Test.json")), seed=0)
    held_out = data.split.test
    assert held_out and data.queries["complement"]
    in_baskets = set(data.train_interactions.baskets["product_id"].to_list())
    assert not in_baskets & held_out  # no held-out product, so no held-out also_buy list, reaches training
    for q in data.queries["complement"]:
        assert q.product_id in held_out
        assert "B-OUTSIDE" not in q.relevant and q.relevant  # in-file targets only
    for q in data.queries["any"]:
        assert len(q.relevant) == 3  # two also_buy + one also_view


def test_basket_ground_truth_uses_held_out_baskets(tmp_path: Path) -> None:
    lines = [",".join(["milk", "bread", "butter"][: 2 + i % 2]) if i % 3 else "beer,chips" for i in range(50)]
    (tmp_path / "groceries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = basket_eval_data(load_groceries(tmp_path), "groceries", seed=0)
    assert data.queries["any"] and not data.queries["substitute"]
    train_ids = set(data.train_interactions.baskets["basket_id"].to_list())
    assert not train_ids & data.split.test
    assert {q.group for q in data.queries["any"]} <= data.split.test


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_bundlerec_electronics(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "bundlerec-electronics"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    result = evaluate("bundlerec", folder, settings=DistillSettings(data_dir=tmp_path / "data"), progress=False)
    out = result.to_json()
    _check_shape(out, ablations=set())
    assert out["any"]["queries"] > 500  # ~1,750 bundles, ~20% of sessions held out
    assert out["meta"]["split"]["test_sessions"] / (
        out["meta"]["split"]["test_sessions"] + out["meta"]["split"]["train_sessions"]) == pytest.approx(0.2, abs=0.04)
    assert out["graph"]["relations"].get("complement", 0) > 0
    # The served graph answers most queries (fallbacks included) and does clearly better than chance:
    # a random top 10 hits a query with r relevant of N products with probability 1 - (1 - r/N)^10.
    assert out["any"]["coverage"] > 0.5
    data = load_eval_data("bundlerec", folder, 0)
    n = len(data.products)
    chance = sum(1 - (1 - len(q.relevant) / n) ** 10 for q in data.queries["any"]) / len(data.queries["any"])
    assert out["any"]["hit@10"] > 2 * chance


def test_sampled_evaluation_with_a_batch_cycle_asks_the_model_only_about_the_sample(
    tmp_path: Path, tiny: tuple[Path, CatalogRetriever]
) -> None:
    import json

    from distill.run.pipeline import make_gateway
    from evaluation.run import BatchPending
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.fakes.responders import catalog_responder

    folder, retriever = tiny
    with FakeOpenAIServer(responder=catalog_responder) as fake:
        settings = DistillSettings(data_dir=tmp_path / "data", use_text_similarity=False, llm_model="openai/fake-model",
                                   llm_api_base=fake.base_url, llm_api_key="test")  # type: ignore[arg-type]
        gateway = make_gateway(settings, mode="export")
        answers: Path | None = None
        asked: list[str] = []
        for cycle in range(6):
            batch_in = tmp_path / f"in{cycle}.jsonl"
            try:
                result = evaluate("bundlerec", folder, settings=settings, gateway=gateway, progress=False,
                                  retriever=retriever, sample=2, export_batch=batch_in, import_batch=answers)
                break
            except BatchPending as pending:
                assert pending.count > 0
                answers = tmp_path / f"out{cycle}.jsonl"
                with answers.open("w") as out:  # what the provider's batch API would return
                    for line in batch_in.read_text().splitlines():
                        request = json.loads(line)
                        asked.append(json.dumps(request["body"]))
                        content = catalog_responder(request["body"])
                        body = {"choices": [{"message": {"role": "assistant", "content": content}}],
                                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
                        out.write(json.dumps({"custom_id": request["custom_id"],
                                              "response": {"status_code": 200, "body": body}}) + "\n")
        else:
            pytest.fail("the batch cycle never completed")
        assert fake.call_count == 0  # every answer came through the batch files
    sampled = {q.product_id for q in (*result.per_query,)}
    assert len({q for q in sampled}) == 2
    assert result.meta.queries["any"] == sum(1 for q in result.per_query if q.kind == "any") > 0
    assert any("sample: 2 query products" in note for note in result.meta.notes)
    assert asked and cycle >= 2  # enrich, propose, verify came as separate batches
    assert result.graph.settings["use_llm"] is True
    assert result.published is not None
    relations = list(result.published.relations())
    # only the sample was distilled (substitutes are mirrored, so their targets appear as sources too)
    assert relations and {r.source for r in relations if r.kind == "complement"} <= sampled
