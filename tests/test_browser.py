"""A real `streamlit run` of the app, driven by headless Chromium: paste a link, see results."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from tests.fixtures_demo import ROOT, DemoEnv, write_demo_config
from util.local_servers import (
    READY_PATH,
    AppStartError,
    free_port,
    probe,
    running_app,
    served_folder,
)

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 90
DISTANCE = re.compile(r"distance \d+\.\d{3}")


@pytest.fixture(scope="module")
def app_url(demo_env: DemoEnv, tmp_path_factory):
    """`streamlit run front_end.py` from the repo root on a free port; stopped afterwards."""
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    try:
        with running_app(demo_env.config_path, log, START_TIMEOUT_S,
                         env={"OMP_NUM_THREADS": "2"}) as (url, _server):
            yield url
    except AppStartError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def catalog_images(demo_env: DemoEnv):
    """The demo catalog's image folder over local HTTP: `url(relative image path)`."""
    with served_folder(Path(demo_env.config.paths.images_dataframe_path).parent) as url_of:
        yield url_of


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (run `make browser`, or set CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


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
    wait_for_results(page, k)
    results = page.locator('img[alt^="Result: "]')
    page.wait_for_function(  # images may follow the text (their renderer loads on first use)
        "k => { const shown = [...document.images].filter(i => i.alt.startsWith('Result: '));"
        " return shown.length === k && shown.every(i => i.complete && i.naturalWidth > 0); }",
        arg=k)
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


def test_four_sessions_at_once_each_get_their_own_results(app_url, catalog_images, demo_env,
                                                          browser):
    items = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    chosen = items.iloc[[3, 50, 97, 144]]
    k = demo_env.config.ann_index.k
    pages = [browser.new_context(viewport={"width": 1440, "height": 2100}).new_page()
             for _ in range(len(chosen))]
    links = [catalog_images(path) for path in chosen["image_path"]]
    for page, link in zip(pages, links, strict=True):
        page.set_default_timeout(START_TIMEOUT_S * 1000)
        page.goto(app_url)
        page.get_by_label("Product page or image link").fill(link)
    for page in pages:  # the four searches run on the server at the same time
        page.get_by_label("Product page or image link").press("Enter")
    firsts = []
    for page, link, item_id in zip(pages, links, chosen["id"], strict=True):
        wait_for_results(page, k)
        page.get_by_text(f"This is product {item_id}").wait_for()
        others = [other for other in chosen["id"] if other != item_id]
        assert not any(page.get_by_text(f"This is product {other}").count() for other in others)
        assert parse_qs(urlsplit(page.url).query)["url"] == [link]
        caption = page.get_by_text(re.compile(r"^id \S+ · distance")).first.inner_text()
        firsts.append(caption.split()[1])
    for page in pages:  # each session shortlists its own first result
        page.get_by_role("button", name="Add to shortlist").first.click()
    for page in pages:
        page.get_by_role("heading", name="Shortlist (1)").wait_for()
        listed = page.get_by_role("button", name=re.compile("Shortlisted"))
        listed.first.wait_for()
        assert listed.count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
    assert len(set(firsts)) > 1  # four different queries, not one answer for all


def test_model_and_index_load_at_server_start_and_readiness_says_when(demo_env, tmp_path):
    """No visitor has opened a page, yet /api/ready turns 200 once the service is loaded, and
    `make serve`'s announcer prints the address then."""
    log = tmp_path / "streamlit.log"
    with running_app(demo_env.config_path, log, START_TIMEOUT_S, ready=False) as (url, server):
        statuses = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code, body = probe(url + READY_PATH)
            statuses.append((code, json.loads(body)["status"]))
            if code == 200:
                break
            time.sleep(0.05)
        assert statuses[-1] == (200, "ready")
        assert set(statuses[:-1]) <= {(503, "loading")}
        assert "search service ready" in log.read_text()
        port = urlsplit(url).port
        announced = subprocess.run(
            [sys.executable, "-m", "util.local_servers", "--port", str(port), "--pid",
             str(server.pid), "--timeout", "30"], cwd=ROOT, capture_output=True, text=True)
        assert announced.returncode == 0
        assert announced.stdout.startswith(f"Ready: http://localhost:{port} ")


def test_the_announcer_leaves_quietly_when_the_server_has_ended():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    announced = subprocess.run(
        [sys.executable, "-m", "util.local_servers", "--port", str(free_port()), "--pid",
         str(finished.pid), "--timeout", "30"], cwd=ROOT, capture_output=True, text=True)
    assert announced.returncode == 1 and announced.stdout == ""


def test_a_server_that_cannot_serve_says_why_at_start(tmp_path):
    config = write_demo_config(tmp_path)  # nothing built in tmp_path: no model, no index
    with pytest.raises(AppStartError, match=re.escape(
            "the app cannot serve: paths.trained_model_path: no checkpoint at")), \
            running_app(config, tmp_path / "streamlit.log", START_TIMEOUT_S):
        pass


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
    with running_app(demo_env.config_path, tmp_path / "restarted.log",
                     START_TIMEOUT_S) as (restarted, _server):
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
