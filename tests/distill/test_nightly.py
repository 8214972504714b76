"""The nightly job on a ~47-product slice of the sample catalog against the fake OpenAI server: unchanged
catalog -> no calls and no publish; one changed product -> a small fraction of a full run's calls; removed
product -> its relations gone; new product -> distilled and connected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distill.run.nightly import nightly
from distill.settings import DistillSettings
from graph_store.embedded import EmbeddedStore
from graph_schema.models import Product
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.responders import HashingEncoder, catalog_responder, sample_subset


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A first nightly run (full, nothing published yet) shared by the tests, which then work on copies of
    the published state via their own store folders... except the data dir (LLM cache) which they share."""
    products, interactions = sample_subset(("Phones", "Wearables", "Audio"))
    tmp = tmp_path_factory.mktemp("nightly")
    with FakeOpenAIServer(responder=catalog_responder) as server:
        settings = DistillSettings(
            data_dir=tmp, llm_model="openai/fake-model", llm_api_base=server.base_url, llm_api_key="test",
            llm_max_attempts=2, max_complements=5, max_substitutes=3, verify_batch_size=20,
        )
        store = EmbeddedStore(tmp / "graph", keep=20)
        first = nightly(products, interactions, settings, store, progress=False, encoder=HashingEncoder())
        yield {"products": products, "interactions": interactions, "settings": settings, "store": store,
               "server": server, "first": first, "full_calls": server.call_count}


def edited(product: Product, suffix: str) -> Product:
    return Product(**{**product.model_dump(exclude={"content_hash"}), "description": (product.description or "") + suffix})


def test_first_nightly_is_a_full_run_and_publishes(world) -> None:
    first = world["first"]
    assert first.mode == "full" and first.version is not None and first.previous_version is None
    assert world["full_calls"] > 20
    assert world["store"].current_version() == first.version.version_id
    assert "published full version" in first.summary()


def test_unchanged_catalog_makes_no_calls_and_publishes_nothing(world) -> None:
    server, store = world["server"], world["store"]
    before, current = server.call_count, store.current_version()
    result = nightly(world["products"], world["interactions"], world["settings"], store, progress=False,
                     encoder=HashingEncoder())
    assert server.call_count == before
    assert not result.published and store.current_version() == current
    assert "catalog unchanged" in result.summary()


def test_one_changed_product_costs_a_small_fraction_of_a_full_run(world) -> None:
    server, store, products = world["server"], world["store"], world["products"]
    parent = store.current_version()
    # Edges into a changed product are re-judged with their sources (see the test below), so the cost grows
    # with its in-degree: a product few others point at stands for the common case of one edited listing.
    pointing: dict[str, set[str]] = {p.id: set() for p in products}
    for relation in store.load(parent).relations():
        pointing[relation.target].add(relation.source)
    target = min(products, key=lambda p: (len(pointing[p.id]), p.id))
    changed = [edited(p, " Now with a longer warranty.") if p.id == target.id else p for p in products]
    before = server.call_count
    result = nightly(changed, world["interactions"], world["settings"], store, progress=False,
                     encoder=HashingEncoder())
    calls = server.call_count - before
    assert result.diff.changed == (target.id,) and not result.diff.new and not result.diff.removed
    assert 0 < calls <= 0.10 * world["full_calls"], (calls, world["full_calls"])
    print(f"\nnightly on {len(products)} products: full run {world['full_calls']} model calls, "
          f"one changed product {calls} calls ({calls / world['full_calls']:.1%})")
    assert result.version is not None and result.version.parent_version == parent
    assert result.distill is not None and result.distill.report.mode == "incremental"
    graph = store.load()
    assert graph.manifest.run_report is not None and graph.manifest.run_report.mode == "incremental"
    # Everything else was reused: the other products keep their relations.
    previous = store.load(parent)
    untouched = {r.key for r in previous.relations() if r.source not in result.diff.to_distil}
    now = {r.key for r in graph.relations()}
    assert len(untouched & now) >= 0.9 * len(untouched)
    assert any(r.source == target.id for r in graph.relations())


def test_removed_product_loses_every_relation_and_new_product_gets_some(world) -> None:
    store, products = world["store"], world["products"]
    gone = next(p for p in products if p.category[-1] == "Smartphones")
    newcomer = Product(id="SKU-NEW-1", title="Novaphone N12 MagSafe Silicone Case", brand="Shellwise",
                       category=("Electronics", "Phones", "Accessories", "Cases"))
    catalog = [p for p in products if p.id != gone.id] + [newcomer]
    result = nightly(catalog, world["interactions"], world["settings"], store, progress=False,
                     encoder=HashingEncoder())
    assert result.diff.removed == (gone.id,) and result.diff.new == (newcomer.id,)
    graph = store.load()
    relations = graph.relations()
    assert all(gone.id not in (r.source, r.target) for r in relations)
    assert gone.id not in set(graph.nodes["id"].to_list())
    assert any(r.source == newcomer.id for r in relations)
    ids = {p.id for p in catalog}
    assert all(r.source in ids and r.target in ids for r in relations)
    # Products that pointed at the removed one were re-distilled to fill the gap.
    assert set(result.diff.refreshed) <= ids


def _degrees(relations, kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for relation in relations:
        if relation.kind == kind:
            out[relation.source] = out.get(relation.source, 0) + 1
    return out


def test_edges_into_a_changed_product_are_judged_again(world) -> None:
    """A product whose content changed may now be a different item: every edge into it is re-judged (its
    sources are re-distilled), none is republished as it was."""
    store, settings = world["store"], world["settings"]
    catalog = [p for p in store.load().products()]
    relations = store.load().relations()
    into: dict[str, set[str]] = {}
    for relation in relations:
        into.setdefault(relation.target, set()).add(relation.source)
    target_id = max(sorted(into), key=lambda pid: len(into[pid]))
    sources = into[target_id] - {target_id}
    assert sources, "the fixture graph should have edges into some product"
    changed = [edited(p, " Now sold as a different item entirely.") if p.id == target_id else p for p in catalog]
    result = nightly(changed, world["interactions"], settings, store, progress=False, encoder=HashingEncoder())
    assert result.diff.changed == (target_id,)
    assert sources <= set(result.diff.refreshed) | {target_id}
    assert result.distill is not None
    run_id = result.distill.run_id
    stale = [r.key for r in store.load().relations() if r.target == target_id and r.provenance.run_id != run_id]
    assert stale == [], f"edges into the changed product kept from the previous version: {stale}"


def test_reused_and_fresh_relations_are_capped_together(world) -> None:
    """A new product that is a substitute of unchanged products must not push them over the degree cap:
    pruning runs over reused and fresh relations together."""
    store, settings = world["store"], world["settings"]
    graph = store.load()
    catalog = graph.products()
    degree = _degrees(graph.relations(), "substitute")
    full = sorted(pid for pid, n in degree.items() if n >= settings.max_substitutes)
    assert full, "the fixture graph should have products at the substitute cap"
    by_id = {p.id: p for p in catalog}
    # Near-copies of products at the cap (other brand, same text): certain substitutes of them.
    newcomers = [
        Product(id=f"SKU-COPY-{i}", title=by_id[pid].title + " (renewed)", description=by_id[pid].description,
                brand="Other Brand", category=by_id[pid].category)
        for i, pid in enumerate(full[:4])
    ]
    result = nightly([*catalog, *newcomers], world["interactions"], settings, store, progress=False,
                     encoder=HashingEncoder())
    assert result.published
    relations = store.load().relations()
    assert any(r.source in {n.id for n in newcomers} and r.kind == "substitute" for r in relations)
    over_sub = {pid: n for pid, n in _degrees(relations, "substitute").items() if n > settings.max_substitutes}
    over_comp = {pid: n for pid, n in _degrees(relations, "complement").items() if n > settings.max_complements}
    assert over_sub == {} and over_comp == {}
    keys = {r.key for r in relations}
    assert all((r.target, r.source, "substitute") in keys for r in relations if r.kind == "substitute")
