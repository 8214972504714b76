"""The nightly job on a ~47-product slice of the sample catalog against the fake OpenAI server: unchanged
catalog -> no calls and no publish; one changed product -> a small fraction of a full run's calls; removed
product -> its relations gone; new product -> distilled and connected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distill.nightly import nightly
from distill.settings import DistillSettings
from distill.store.embedded import EmbeddedStore
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
    target = products[7]
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
    untouched = {r.key for r in previous.relations() if r.source != target.id}
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
