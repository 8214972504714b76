"""Fixtures shared by every test package: where the shared datasets live, and a tiny real catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_schema.models import Product

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLE_DIR = REPO_ROOT / "shelfgraph" / "sample"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (CI puts it there); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


def _p(
    pid: str, title: str, category: str, price: float | None, brand: str | None = None, **attributes: str
) -> Product:
    return Product(
        id=pid, title=title, category=tuple(category.split(" > ")), price=price, brand=brand, attributes=attributes
    )


TINY_CATALOG: tuple[Product, ...] = (
    _p("P-01", "Novaphone N12 128GB Smartphone", "Electronics > Phones > Smartphones", 699.0, "Novaphone",
       color="Graphite"),
    _p("P-02", "Kestrel K7 5G Smartphone 128GB", "Electronics > Phones > Smartphones", 449.0, "Kestrel Mobile"),
    _p("P-03", "Silicone Case for Novaphone N12", "Electronics > Phones > Accessories > Cases", 24.99, "Shellwise",
       compatible_with="Novaphone N12"),
    _p("P-04", "Rugged Case for Novaphone N12", "Electronics > Phones > Accessories > Cases", 34.99, "ArmorLeaf",
       compatible_with="Novaphone N12"),
    _p("P-05", "Tempered Glass Screen Protector for Novaphone N12",
       "Electronics > Phones > Accessories > Screen Protectors", 14.99, "ClearGuard", compatible_with="Novaphone N12"),
    _p("P-06", "Silicone Case for Kestrel K7", "Electronics > Phones > Accessories > Cases", 22.99, "Shellwise",
       compatible_with="Kestrel K7"),
    _p("P-07", "20W USB-C Wall Charger", "Electronics > Phones > Accessories > Chargers", 19.99, "Ampero"),
    _p("P-08", "Braided USB-C Cable 1m", "Electronics > Phones > Accessories > Cables", 12.99, "Ampero"),
    _p("P-09", "Orrin Z50 Mirrorless Camera Body", "Electronics > Cameras & Photo > Digital Cameras", 899.0, "Orrin"),
    _p("P-10", "Orrin ZX 50mm f/1.8 Prime Lens", "Electronics > Cameras & Photo > Lenses", 249.0, "Orrin"),
    _p("P-11", "Travel Aluminium Tripod 150cm", "Electronics > Cameras & Photo > Tripods", 89.0, "Strata"),
    _p("P-12", "SDXC 128GB V60 Memory Card", "Electronics > Cameras & Photo > Memory Cards", 49.99, "Memora"),
    _p("P-13", "Orrin OB-20 Rechargeable Battery", "Electronics > Cameras & Photo > Batteries", 59.0, "Orrin"),
    _p("P-14", "Barista One Espresso Machine", "Home & Kitchen > Coffee > Espresso Machines", 599.0, "Brewhaus"),
    _p("P-15", "Conical Burr Grinder 40mm", "Home & Kitchen > Coffee > Grinders", 229.0, "Brewhaus"),
    _p("P-16", "Espresso Blend Whole Bean Coffee 1kg", "Grocery > Coffee > Whole Bean", 24.99, "Ashgrove Roastery"),
    _p("P-17", "Stainless Milk Jug 350ml", "Home & Kitchen > Coffee > Espresso Accessories", 19.99, "Brewhaus"),
    _p("P-18", "Ridgeline 2P Backpacking Tent", "Sports & Outdoors > Camping > Tents", 399.0, "Fellwalker"),
    _p("P-19", "Synthetic Sleeping Bag 5C", "Sports & Outdoors > Camping > Sleeping Bags", 89.0, "Nordvik"),
    _p("P-20", "Rechargeable LED Lantern", "Sports & Outdoors > Camping > Lighting", None, "Brightpeak"),
)


@pytest.fixture
def tiny_catalog() -> list[Product]:
    """20 real products over phones, cameras, coffee and camping (P-01 .. P-20)."""
    return list(TINY_CATALOG)
