"""The verify stage's cost and its compact answer: one prompt per product, only the pairs that can reach a
served list, ids and scores back with reasons only for high scores; malformed answers retried, then recorded.
Driven through the real litellm client against the fake OpenAI server."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distill.llm import prompts
from distill.llm.cache import ResponseCache
from distill.candidates.model import Candidate
from distill.llm.gateway import LLMGateway
from distill.run.pipeline import DistillResult, run_pipeline
from distill.llm.prompts import REASON_MIN_SCORE, VerifyAnswer, parse_data_block, verify_prompt
from distill.settings import DistillSettings
from distill.stages.verify import verify
from distill.stages.verify_plan import judge_depth
from graph_schema.models import Product
from tests.fakes.openai_server import FakeOpenAIServer, first_user_content
from tests.fakes.responders import HashingEncoder, catalog_responder, sample_subset

PRODUCTS = [
    Product(id="S1", title="Novaphone N12 smartphone", category=("Phones", "Smartphones")),
    Product(id="S2", title="Novaphone N13 smartphone", category=("Phones", "Smartphones")),
    *(Product(id=f"C{i}", title=f"Case {i} for Novaphone", category=("Phones", "Cases")) for i in range(6)),
]
BY_ID = {p.id: p for p in PRODUCTS}


def cand(source: str, target: str, kind: str = "complement") -> Candidate:
    return Candidate(source=source, target=target, kind=kind, origins=("copurchase",))  # type: ignore[arg-type]


def is_verify(body: dict[str, Any]) -> bool:
    payload = parse_data_block(first_user_content(body))
    return isinstance(payload, dict) and "source" in payload


def gateway_for(tmp_path: Path, server: FakeOpenAIServer) -> LLMGateway:
    settings = DistillSettings(data_dir=tmp_path, llm_model="openai/fake-model", llm_api_base=server.base_url,
                               llm_api_key="test", llm_max_attempts=2)
    return LLMGateway(settings, ResponseCache(settings.cache_path))


def run_verify(tmp_path: Path, responder: Callable[[dict[str, Any]], str], pairs: list[Candidate],
               batch_size: int | None = None) -> tuple[Any, FakeOpenAIServer]:
    with FakeOpenAIServer(responder=responder) as server:
        result = verify(pairs, pairs, BY_ID, gateway_for(tmp_path, server), batch_size=batch_size, progress=False)
    return result, server


# ------------------------------------------------------------------------------------------- one prompt per product


def test_all_pairs_of_a_product_go_in_one_prompt_and_batches_never_mix_products(tmp_path: Path) -> None:
    pairs = [*(cand("S1", f"C{i}") for i in range(6)), cand("S1", "S2", "substitute"),
             *(cand("S2", f"C{i}") for i in range(3))]
    result, server = run_verify(tmp_path / "one", catalog_responder, pairs)
    assert server.call_count == 2  # two source products, ten pairs
    assert all(c.llm_score is not None for c in result.candidates)
    sources = [parse_data_block(first_user_content(b))["source"]["id"] for b in server.requests]
    assert sorted(sources) == ["S1", "S2"]
    first = next(parse_data_block(first_user_content(b)) for b in server.requests
                 if parse_data_block(first_user_content(b))["source"]["id"] == "S1")
    assert [c["id"] for c in first["complements"]] == [f"C{i}" for i in range(6)]
    assert [c["id"] for c in first["substitutes"]] == ["S2"]
    # A cap on pairs per prompt splits one product's pairs, still never mixing products.
    _, split = run_verify(tmp_path / "split", catalog_responder, pairs, batch_size=4)
    assert split.call_count == 2 + 1  # S1: 7 pairs -> 4 + 3; S2: 3 pairs
    for body in split.requests:
        payload = parse_data_block(first_user_content(body))
        assert len(payload.get("complements", [])) + len(payload.get("substitutes", [])) <= 4


# ------------------------------------------------------------------------------------------- the compact answer


def answering(content: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    return lambda body: json.dumps(content(parse_data_block(first_user_content(body))))


def test_compact_answer_keeps_scores_and_only_the_reasons_of_high_scores(tmp_path: Path) -> None:
    pairs = [cand("S1", "C0"), cand("S1", "C1"), cand("S1", "C2"), cand("S1", "C3"), cand("S1", "S2", "substitute")]
    answer = {"source": "S1",
              "complements": [{"id": "C0", "score": 0.9, "reason": "protects the  phone"},
                              {"id": "C1", "score": 0.8},  # high score, reason missing
                              {"id": "C2", "score": 0.1},  # low score, no reason: as asked
                              {"id": "EVIL", "score": 1.0, "reason": "pwned"},  # never asked
                              {"id": "S2", "score": 1.0, "reason": "pwned"}],  # asked, but as a substitute
              "substitutes": [{"id": "S2", "score": 0.7, "reason": "same phone line"},
                              {"id": "S2", "score": 0.1}]}  # twice
    result, server = run_verify(tmp_path, answering(lambda _: answer), pairs)
    assert server.call_count == 1
    got = {c.key: c for c in result.candidates}
    assert (got["S1", "C0", "complement"].llm_score, got["S1", "C0", "complement"].llm_reason) == (0.9, "protects the phone")
    assert got["S1", "C1", "complement"].llm_score == 0.8 and got["S1", "C1", "complement"].llm_reason is None
    assert got["S1", "C2", "complement"].llm_score == 0.1 and got["S1", "C2", "complement"].llm_reason is None
    assert got["S1", "C3", "complement"].llm_score is None  # the model skipped it
    assert got["S1", "S2", "substitute"].llm_score == 0.7  # the first judgement counts
    reasons = Counter((r.reason, r.item) for r in result.rejections)
    assert reasons == Counter({("no reason for a high score", "S1->C1"): 1, ("pair not in prompt", "S1->EVIL"): 1,
                               ("pair not in prompt", "S1->S2"): 1, ("duplicate judgement", "S1->S2"): 1,
                               ("no judgement for pair", "S1->C3"): 1})
    assert result.report.items_in == 5 and result.report.items_out == 4


def test_an_answer_about_another_source_rates_nothing(tmp_path: Path) -> None:
    pairs = [cand("S1", "C0"), cand("S1", "C1")]
    hijacked = {"source": "S2", "complements": [{"id": "C0", "score": 1.0, "reason": "pwned"}]}
    result, _ = run_verify(tmp_path, answering(lambda _: hijacked), pairs)
    assert all(c.llm_score is None for c in result.candidates)
    assert {(r.reason, r.item) for r in result.rejections} == {
        ("pair not in prompt", "S2->C0"), ("no judgement for pair", "S1->C0"), ("no judgement for pair", "S1->C1")}


def test_an_answer_in_the_old_shape_is_retried_with_the_validation_error_then_rejected(tmp_path: Path) -> None:
    pairs = [cand("S1", "C0"), cand("S1", "C1")]
    old = {"judgements": [{"source": "S1", "target": "C0", "kind": "complement", "score": 0.9, "reason": "x"}]}
    result, server = run_verify(tmp_path, answering(lambda _: old), pairs)
    assert server.call_count == 2  # llm_max_attempts=2: the answer, then one retry
    retry = server.requests[1]["messages"]
    assert retry[-1]["role"] == "user" and "judgements" in retry[-1]["content"]  # the error names the bad field
    assert all(c.llm_score is None for c in result.candidates)
    failed = [r for r in result.rejections if r.reason.startswith("llm call failed")]
    assert len(failed) == 1 and failed[0].item.startswith("S1,")  # one record for the prompt, naming its ids


def test_the_answer_schema_takes_the_compact_shape_and_refuses_extra_fields() -> None:
    ok = VerifyAnswer.model_validate({"source": "S1", "complements": [{"id": "C0", "score": 0.25}]})
    assert ok.judgements()[0][0] == "complement" and ok.judgements()[0][1].reason is None
    with pytest.raises(ValueError):
        VerifyAnswer.model_validate({"source": "S1", "complements": [{"id": "C0", "score": 0.2, "kind": "x"}]})
    with pytest.raises(ValueError):
        VerifyAnswer.model_validate({"source": "S1", "complements": [{"id": "C0", "score": 1.5}]})


def test_the_prompt_asks_for_reasons_only_above_the_threshold_and_shows_kinds_as_lists() -> None:
    prompt = verify_prompt(BY_ID["S1"], [(BY_ID["C0"], "complement"), (BY_ID["S2"], "substitute")])
    system, user = prompt.messages
    assert str(REASON_MIN_SCORE) in system.content and "omit `reason`" in system.content
    payload = parse_data_block(user.content)
    assert set(payload) == {"source", "complements", "substitutes"}
    assert "kind" not in json.dumps(payload)  # the kind is the list, not a field per pair


# Every prompt's text with the version it was published under: changing a text without bumping its version
# (so that cached answers and published manifests would claim the old prompt) fails here.
PROMPT_TEXTS = {
    "enrich-v1": "_ENRICH_SYSTEM",
    "propose-v2": "_PROPOSE_SYSTEM",
    "verify-v3": "_VERIFY_SYSTEM",
}
PROMPT_SHA256 = {
    "enrich-v1": "7ac7f99cc76369e052532c128581f3360a6a77720f359e37493f17a108541bc6",
    "propose-v2": "d5cbb98b57eb20e075ebacee539dc77e0c8cd3dbe33a7b24c1b185cf351b4961",
    "verify-v3": "b510bf17570c3aa804e5618faf3d5eaafca8097c8fc72abfa7eb6b14216c7614",
}


def test_each_prompt_text_is_pinned_to_its_version() -> None:
    assert set(prompts.PROMPT_VERSIONS.values()) == set(PROMPT_TEXTS)
    assert prompts.PROMPT_VERSIONS["verify"] != "verify-v2"  # v3 changed the answer format
    for version, name in PROMPT_TEXTS.items():
        digest = hashlib.sha256(getattr(prompts, name).encode("utf-8")).hexdigest()
        assert digest == PROMPT_SHA256[version], f"{name} changed: bump {version} and record why in prompts.py"


# ------------------------------------------------------------------------------------------- in the pipeline


@pytest.fixture(scope="module")
def verified_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with the model; the rank passes are recorded: the first is the verify stage's shortlist."""
    import distill.run.table as table  # the stage adapters (verify's shortlist and the rank stage) call table._rank

    products, interactions = sample_subset(("Phones", "Cameras"), limit=40)
    tmp = tmp_path_factory.mktemp("verify-run")
    passes: list[Any] = []
    real_rank = table._rank

    def recording_rank(*args: Any, **kwargs: Any) -> Any:
        passes.append((args, real_rank(*args, **kwargs)))
        return passes[-1][1]

    with FakeOpenAIServer(responder=catalog_responder) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(table, "_rank", recording_rank)
        settings = DistillSettings(data_dir=tmp, llm_model="openai/fake-model", llm_api_base=server.base_url,
                                   llm_api_key="test", llm_max_attempts=2, max_complements=4, max_substitutes=3)
        result = run_pipeline(products, interactions, settings, progress=False, encoder=HashingEncoder())
        requests = server.requests
    return {"result": result, "requests": requests, "settings": settings, "products": products, "passes": passes}


def sent_pairs(requests: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    out = []
    for body in requests:
        if not is_verify(body):
            continue
        payload = parse_data_block(first_user_content(body))
        for key, kind in (("complements", "complement"), ("substitutes", "substitute")):
            out += [(payload["source"]["id"], c["id"], kind) for c in payload.get(key, [])]
    return out


def test_a_run_makes_at_most_one_verify_call_per_product(verified_run) -> None:
    result, requests, products = verified_run["result"], verified_run["requests"], verified_run["products"]
    calls = Counter(parse_data_block(first_user_content(b))["source"]["id"] for b in requests if is_verify(b))
    assert calls and max(calls.values()) == 1
    stage = {s.stage: s for s in result.report.stages}["verify"]
    assert stage.llm.calls == sum(calls.values()) <= len(products)
    assert stage.items_in == len(sent_pairs(requests)) > 2 * len(calls)  # several pairs per call


def test_only_pairs_that_can_reach_a_served_list_are_sent(verified_run) -> None:
    result, settings = verified_run["result"], verified_run["settings"]
    sent = sent_pairs(verified_run["requests"])
    assert len(sent) == len(set(sent))
    (shortlist_args, shortlist), (_, final) = verified_run["passes"]
    depth = judge_depth(settings.max_complements)
    assert shortlist_args[5].max_complements == depth  # the rank stage's own pass, asked for cap + margin
    assert all(c.llm_score is None for c in shortlist_args[4])  # ... knowing no judgement
    reachable = {r.key for r in shortlist.relations}
    complements = {k for k in sent if k[2] == "complement"}
    assert complements == reachable  # every reachable pair judged, no other complement sent
    per_source = Counter((s, kind) for s, _, kind in sent)
    assert max(n for (_, kind), n in per_source.items() if kind == "complement") == depth
    assert max(n for (_, kind), n in per_source.items() if kind == "substitute") <= judge_depth(settings.max_substitutes)
    # Pool complements the ranker did not reach (e.g. affinity or behaviour candidates) were never sent.
    pool = {c.key for c in _read_pool(result) if c.kind == "complement"}
    assert pool - reachable and not (pool - reachable) & set(sent)
    # The served complements come from the rank stage's second pass; the judged ones were all sent.
    judged = {r.key for r in final.relations if r.evidence.llm_score is not None}
    assert judged and judged <= complements


def _read_pool(result: DistillResult) -> list[Candidate]:
    from distill.candidates.model import candidates_from_frame
    from distill.run.state import RunDir

    return candidates_from_frame(RunDir(result.run_dir).read_frame("candidates"))


def test_every_served_edge_has_reasons_and_a_kept_judgement_brings_its_own(verified_run) -> None:
    result = verified_run["result"]
    assert result.relations
    for relation in result.relations:
        assert relation.reasons and all(r.strip() for r in relation.reasons)
    high = [r for r in result.relations if r.evidence.llm_score is not None and r.evidence.llm_score >= REASON_MIN_SCORE]
    low = [r for r in result.relations if r.evidence.llm_score is not None and r.evidence.llm_score < REASON_MIN_SCORE]
    assert high and low
    # The fake judge gives a reason exactly for the high scores; its reasons read "shares ...", "same shelf", ...
    judge_words = ("shares ", "same shelf", "different but related use")
    assert all(r.reasons[0].startswith(judge_words) for r in high)
    assert not any(reason.startswith(judge_words) for r in low for reason in r.reasons)


def test_the_plan_takes_the_ranker_pairs_adds_the_missing_ones_and_skips_near_duplicates() -> None:
    from distill.stages.verify_plan import RANKER_ORIGIN, plan_verification
    from graph_schema.models import Provenance, Relation

    def served(source: str, target: str) -> Relation:
        return Relation(source=source, target=target, kind="complement", score=0.5, reasons=("r",),
                        provenance=Provenance(run_id="x", stage="rank:text"))

    twin = cand("S1", "C1").model_copy(update={"near_duplicate": True})
    unreached = cand("S1", "C5")  # in the pool, best by the formula, but the ranker does not reach it
    subs = [cand("S1", f"C{i}", "substitute") for i in range(6)]
    pool = [cand("S1", "C0"), twin, unreached, *subs, cand("S2", "C0")]
    plan = plan_verification(
        pool, [served("S1", "C0"), served("S1", "C1"), served("S1", "C2"), served("S2", "C0")],
        prescore=lambda c: 1.0 if c.target == "C5" else int(c.target[1]) / 10, max_substitutes=2,
        leaf={p.id: p.leaf_category for p in PRODUCTS}, targets={"S1"})
    keys = [c.key for c in plan.to_judge]
    assert keys[:2] == [("S1", "C0", "complement"), ("S1", "C2", "complement")]  # twin skipped, S2 not a target
    assert [c.key for c in plan.added] == [("S1", "C2", "complement")]
    assert plan.added[0].origins == (RANKER_ORIGIN,) and not plan.added[0].same_leaf  # phone -> case
    assert ("S1", "C5", "complement") not in keys
    # substitutes: judge_depth(2) = 3 best by the formula without the judge
    assert keys[2:] == [("S1", "C5", "substitute"), ("S1", "C4", "substitute"), ("S1", "C3", "substitute")]
