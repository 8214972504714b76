"""The graph explorer in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against a real HTTP server reading a graph published to an EmbeddedStore. Search -> product ->
click a neighbour, asserting on what is rendered; a screenshot is kept under .artifacts/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph_store.embedded import EmbeddedStore
from serve.loader import EmbeddedSource
from serve.server import run_dev
from serve.settings import ServeSettings
from tests.integration.test_serve_http import publish

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / ".artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = "needs Debian's chromium and chromium-driver (scripts/test installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them: a missing browser there is a broken setup, not a skip
        pytest.skip(message)
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, driver_path = _browser_binaries()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # an explicit driver path: selenium then never tries to fetch a driver of its own
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    store = EmbeddedStore(tmp_path / "graph")
    publish(store, "v1")
    with run_dev(ServeSettings(port=0, reload_interval_s=0), source=EmbeddedSource(store.root)) as running:
        yield f"http://127.0.0.1:{running.port}"


def test_search_product_then_click_through_to_a_neighbour(browser: Any, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(f"{server}/explore")
    wait.until(ec.text_to_be_present_in_element((By.ID, "graph"), "graph version v1"))
    assert "11 products" in browser.find_element(By.ID, "graph").text

    search = browser.find_element(By.ID, "q")
    search.send_keys("camera")
    browser.find_element(By.ID, "search-button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results li.result")))
    results = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#results li.result")]
    assert len(results) == 4 and any(r.startswith("Camera A cam1") for r in results), results
    assert not any("Tripod" in r for r in results)

    browser.find_element(By.CSS_SELECTOR, '#results a[data-product="cam1"]').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "product-title"), "Camera A"))
    assert browser.find_element(By.ID, "product-version").text == "v1"
    complements = browser.find_element(By.ID, "complements")
    assert "answered by graph version v1" in complements.text and "source: direct" in complements.text
    rows = complements.find_elements(By.CSS_SELECTOR, "tr.neighbour")
    assert [r.get_attribute("data-product") for r in rows] == ["tri1", "sd1", "bag1", "lens1", "sd2"]
    first = rows[0].text
    assert "0.90" in first and "Tripod" in first and "keeps the camera steady" in first and "long exposures" in first
    assert "evidence: direct edge" in first
    substitutes = browser.find_element(By.ID, "substitutes")
    assert "Camera B" in substitutes.text and "0.85" in substitutes.text and "comparable camera" in substitutes.text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "explorer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"explorer screenshot: {shot}")

    complements.find_element(By.CSS_SELECTOR, 'a[data-product="tri1"]').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "product-title"), "Tripod"))
    assert browser.current_url.endswith("?product=tri1")
    tripod = browser.find_element(By.ID, "complements").text
    assert "Camera A" in tripod and "something to mount" in tripod and "0.40" in tripod

    # cam2 has no complement edges of its own: the page says where its answer was borrowed from
    browser.get(f"{server}/explore?product=cam2")
    wait.until(ec.text_to_be_present_in_element((By.ID, "product-title"), "Camera B"))
    borrowed = browser.find_element(By.ID, "complements").text
    assert "source: via_substitutes" in borrowed and "borrowed from substitute cam1" in borrowed

    browser.back()
    wait.until(ec.text_to_be_present_in_element((By.ID, "product-title"), "Tripod"))

    browser.get(f"{server}/explore?product=nope")
    wait.until(ec.text_to_be_present_in_element((By.ID, "product"), "unknown_product"))


def test_titles_are_text_never_markup(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from graph_schema.models import GraphVersion
    from tests.serve.conftest import product, rel

    store = EmbeddedStore(tmp_path / "hostile")
    products = [product("x1", '<img src=x onerror="document.body.dataset.owned=1">Lamp'), product("x2", "<b>Bulb</b>")]
    manifest = GraphVersion(version_id="h1", catalog_fingerprint="f" * 32, product_count=0,
                            relation_counts={"complement": 0, "substitute": 0})
    store.publish(products, [rel("x1", "x2", "complement", 0.5, "<script>alert(1)</script>")], manifest)
    with run_dev(ServeSettings(port=0, reload_interval_s=0), source=EmbeddedSource(store.root)) as running:
        browser.get(f"http://127.0.0.1:{running.port}/explore?product=x1")
        WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "product-title"), "Lamp"))
        assert browser.find_element(By.ID, "product-title").text.startswith("<img src=x")
        assert "<script>alert(1)</script>" in browser.find_element(By.ID, "complements").text
        assert browser.find_elements(By.CSS_SELECTOR, "#product img, #product script") == []
        assert browser.execute_script("return document.body.dataset.owned === undefined")
