"""A real `streamlit run` of the app, driven by headless Chromium: paste a link, see results."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from tests.fixtures_demo import ROOT, DemoEnv

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 90
DISTANCE = re.compile(r"distance \d+\.\d{3}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


@contextlib.contextmanager
def serve(config_path: Path, log: Path) -> Iterator[str]:
    """`streamlit run front_end.py` from the repo root on a free port; stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "front_end.py",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false",
               "--", "--config", str(config_path)]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "2"})
    try:
        wait_until_healthy(port, server, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@pytest.fixture(scope="module")
def app_url(demo_env: DemoEnv, tmp_path_factory):
    with serve(demo_env.config_path, tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url:
        yield url


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def catalog_images(demo_env: DemoEnv):
    """The demo catalog's image folder over local HTTP: `url(relative image path)`."""
    folder = Path(demo_env.config.paths.images_dataframe_path).parent
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(_QuietFiles, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, name="catalog-images", daemon=True)
    thread.start()
    yield lambda path: f"http://127.0.0.1:{httpd.server_address[1]}/{path}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (run `make browser`, or set CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def page(browser):
    return browser.new_page(viewport={"width": 1440, "height": 2100})


def save_screenshot(page, tmp_path: Path, name: str = "search.png") -> Path:
    """A PNG in tmp_path, also copied to $SCREENSHOT_OUT when set: to that path when it ends in
    .png (the first screenshot only), else into that folder as `name`."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=name != "search.png")
    target = os.environ.get("SCREENSHOT_OUT")
    if target:
        destination = Path(target)
        if destination.suffix.lower() != ".png":
            destination = destination / ("screenshot.png" if name == "search.png" else name)
        elif name != "search.png":
            return shot
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, destination)
    return shot


def test_paste_a_link_and_see_results(app_url, catalog_images, demo_env, page, tmp_path):
    items = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    item = items.iloc[11]
    k = demo_env.config.ann_index.k
    page.set_default_timeout(START_TIMEOUT_S * 1000)
    page.goto(app_url)
    box = page.get_by_label("Product page or image link")
    link = catalog_images(item["image_path"])
    box.fill(link)
    box.press("Enter")
    distances = page.get_by_text(DISTANCE)
    distances.first.wait_for()
    page.wait_for_function(
        "k => [...document.querySelectorAll('p')].filter("
        "p => /distance \\d+\\.\\d{3}/.test(p.textContent)).length === k", arg=k)
    results = page.locator('img[alt^="Result: "]')
    page.wait_for_function(
        "() => [...document.images].filter(i => i.alt.startsWith('Result: '))"
        ".every(i => i.complete && i.naturalWidth > 0)")
    assert results.count() == k
    assert all(results.nth(i).is_visible() for i in range(k))
    assert distances.count() == k
    assert all(distances.nth(i).is_visible() for i in range(k))
    assert page.get_by_text(f"This is product {item['id']}").is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert parse_qs(urlsplit(page.url).query)["url"] == [link]  # a link to share
    shot = save_screenshot(page, tmp_path)
    assert shot.stat().st_size > 10_000


def shortlist_count(page) -> int:
    heading = page.get_by_role("heading", name=re.compile(r"^Shortlist \(\d+\)"))
    heading.wait_for()
    return int(re.search(r"\((\d+)\)", heading.inner_text()).group(1))


def wait_for_results(page, k: int) -> None:
    page.wait_for_function(
        "k => [...document.querySelectorAll('p')].filter("
        "p => /distance \\d+\\.\\d{3}/.test(p.textContent)).length === k", arg=k)


def test_shortlist_survives_reload_and_restart_per_browser(app_url, demo_env, browser,
                                                           tmp_path):
    items = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    alice = browser.new_context(viewport={"width": 1440, "height": 1600})
    page = alice.new_page()
    page.set_default_timeout(START_TIMEOUT_S * 1000)
    page.goto(f"{app_url}/?item={items['id'].iloc[3]}")
    wait_for_results(page, demo_env.config.ann_index.k)
    assert shortlist_count(page) == 0
    for expected in (1, 2):
        page.get_by_role("button", name="Add to shortlist").first.click()
        page.get_by_role("heading", name=f"Shortlist ({expected})").wait_for()
    page.reload()
    wait_for_results(page, demo_env.config.ann_index.k)
    assert shortlist_count(page) == 2  # a reload keeps it
    bob = browser.new_context(viewport={"width": 1440, "height": 1600}).new_page()
    bob.set_default_timeout(START_TIMEOUT_S * 1000)
    bob.goto(app_url)
    assert shortlist_count(bob) == 0  # another browser: another list
    with serve(demo_env.config_path, tmp_path / "restarted.log") as restarted:
        page.goto(restarted)  # a new server process on the same config: a restart
        assert shortlist_count(page) == 2
    assert page.locator('[data-testid="stException"]').count() == 0


@pytest.mark.parametrize("width", [1440, 390])
def test_every_page_is_reachable_and_readable(app_url, demo_env, browser, tmp_path, width):
    """At a desktop's and a phone's width: the navigation reaches Report and Explore; each page
    renders without an error (screenshots to $SCREENSHOT_OUT when set)."""
    items = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    page = browser.new_page(viewport={"width": width, "height": 900 if width < 800 else 1400})
    page.set_default_timeout(START_TIMEOUT_S * 1000)
    page.goto(f"{app_url}/?item={items['id'].iloc[11]}")
    wait_for_results(page, demo_env.config.ann_index.k)
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    page.wait_for_timeout(1500)
    save_screenshot(page, tmp_path, f"search-{width}.png")
    for name, title in (("Report", "Index report"), ("Explore", "Catalog map")):
        open_page(page, name)
        page.get_by_role("heading", name=title).wait_for()
        page.wait_for_timeout(1500)  # let the charts draw
        assert page.locator('[data-testid="stException"]').count() == 0
        save_screenshot(page, tmp_path, f"{name.lower()}-{width}.png")


def open_page(page, name: str) -> None:
    """Follow the navigation link `name` that is on screen (never the folded-away menu's)."""
    width = page.viewport_size["width"]
    links = page.get_by_role("link", name=name, exact=True)
    links.first.wait_for()
    for index in range(links.count()):
        box = links.nth(index).bounding_box()
        if links.nth(index).is_visible() and box and box["x"] >= 0 and box["x"] + box[
                "width"] <= width:
            links.nth(index).click()
            return
    pytest.fail(f"no {name!r} link on screen at {width} px")
