"""Tests of the evaluation package, and the tiny BundleRec-layout folder they share."""

from __future__ import annotations

import random
from pathlib import Path

# (id, title, category path) -- a dozen-and-a-half made-up electronics items in BundleRec's id style.
TINY_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("101", "Orrin Z50 Mirrorless Camera Body 24MP", "Electronics,Camera & Photo,Digital Cameras"),
    ("102", "Kestrel K200 Compact Digital Camera 20MP", "Electronics,Camera & Photo,Digital Cameras"),
    ("103", "Orrin ZX 50mm f/1.8 Prime Lens for Z mount", "Electronics,Camera & Photo,Lenses"),
    ("104", "Orrin ZX 18-140mm Zoom Lens for Z mount", "Electronics,Camera & Photo,Lenses"),
    ("105", "Memora SDXC 128GB V60 Memory Card", "Electronics,Camera & Photo,Accessories,Memory Cards"),
    ("106", "Memora SDHC 32GB Class 10 Memory Card", "Electronics,Camera & Photo,Accessories,Memory Cards"),
    ("107", "Strata Travel Aluminium Camera Tripod 150cm", "Electronics,Camera & Photo,Accessories,Tripods"),
    ("108", "Orrin OB-20 Rechargeable Camera Battery", "Electronics,Camera & Photo,Accessories,Batteries"),
    ("201", "Vireo 14 inch Laptop 16GB RAM 512GB SSD", "Electronics,Computers & Accessories,Laptops"),
    ("202", "Talon 15.6 inch Gaming Laptop RTX", "Electronics,Computers & Accessories,Laptops"),
    ("203", "Shellwise 15.6 inch Laptop Sleeve Bag", "Electronics,Computers & Accessories,Laptop Accessories,Bags"),
    ("204", "Ampero Wireless Optical Mouse USB", "Electronics,Computers & Accessories,Mice"),
    ("205", "Ampero Ergonomic Wireless Mouse Bluetooth", "Electronics,Computers & Accessories,Mice"),
    ("206", "Drivio 2TB Portable External Hard Drive USB 3.0", "Electronics,Computers & Accessories,Data Storage"),
    ("207", "Ampero USB-C Hub 7 in 1 HDMI", "Electronics,Computers & Accessories,Laptop Accessories,Hubs"),
    ("301", "Sonora Over-Ear Wireless Headphones", "Electronics,Headphones"),
)
_THEMES = (
    (("101", "102"), ("103", "104", "105", "106", "107", "108"), "camera kit for travel photos"),
    (("201", "202"), ("203", "204", "205", "206", "207"), "laptop accessories for work"),
)


def write_tiny_bundlerec(folder: Path, *, sessions: int = 60, seed: int = 7) -> Path:
    """Write a BundleRec-layout folder: every session buys a main item, some accessories and sometimes a
    random extra; its bundle is the main item plus accessories, annotated with the theme's intent."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ids = [item[0] for item in TINY_ITEMS]
    (folder / "item_titles.csv").write_text(
        "item ID,titles\n" + "".join(f'{pid},"{title}"\n' for pid, title, _ in TINY_ITEMS), encoding="utf-8"
    )
    (folder / "item_categories.csv").write_text(
        "item ID,categories\n" + "".join(f'{pid},"[[{cat}]]"\n' for pid, _, cat in TINY_ITEMS), encoding="utf-8"
    )
    session_rows, bundle_rows, session_bundle_rows, intent_rows = [], [], [], []
    for session in range(sessions):
        mains, accessories, intent = _THEMES[session % len(_THEMES)]
        # Now and then a shopper compares both main items (a same-leaf pair: the substitute proxy).
        chosen_mains = list(mains) if rng.random() < 0.3 else [rng.choice(mains)]
        bundle = [*chosen_mains, *rng.sample(accessories, rng.randint(1, 3))]
        items = list(bundle)
        if rng.random() < 0.5:
            extra = rng.choice(ids)
            if extra not in items:
                items.append(extra)
        session_rows += [f"{session},{pid}" for pid in items]
        bundle_rows += [f"{session},{pid}" for pid in bundle]  # bundle id = session id (one bundle each)
        session_bundle_rows.append(f"{session},{session}")
        intent_rows.append(f'{session},"{intent}"')
    (folder / "session_item.csv").write_text("session ID,item ID\n" + "\n".join(session_rows) + "\n", encoding="utf-8")
    (folder / "bundle_item.csv").write_text("bundle ID,item ID\n" + "\n".join(bundle_rows) + "\n", encoding="utf-8")
    (folder / "session_bundle.csv").write_text(
        "session ID,bundle ID\n" + "\n".join(session_bundle_rows) + "\n", encoding="utf-8"
    )
    (folder / "bundle_intent.csv").write_text("bundle ID,intent\n" + "\n".join(intent_rows) + "\n", encoding="utf-8")
    return folder
