"""A real `streamlit run` of the app, driven by headless Chromium: paste a link, see results."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def app_url(demo_env: DemoEnv, tmp_path_factory):
    """`streamlit run front_end.py` from the repo root on a free port; stopped afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", "front_end.py",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false",
               "--", "--config", str(demo_env.config_path)]
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
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (run `make browser`, or set CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1440, "height": 2100})
        finally:
            browser.close()


def save_screenshot(page, tmp_path: Path) -> Path:
    """A PNG in tmp_path, also copied to $SCREENSHOT_OUT (a .png path or a folder) when set."""
    shot = tmp_path / "search.png"
    page.screenshot(path=str(shot))
    target = os.environ.get("SCREENSHOT_OUT")
    if target:
        destination = Path(target)
        if destination.suffix.lower() != ".png":
            destination = destination / "screenshot.png"
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
