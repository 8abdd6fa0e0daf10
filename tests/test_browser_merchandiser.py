"""The merchandiser tools in a real browser: crop → search, a thumbs up, a list upload."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from PIL import Image

from judgments.store import JudgmentStore
from query_crop import default_box, parse_crop
from tests.test_browser import (  # noqa: F401  (module fixtures: a streamlit server, Chromium)
    DISTANCE,
    START_TIMEOUT_S,
    app_url,
    browser,
    catalog_images,
    page,
)
from util.local_servers import served_folder

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def photo_url(demo_env, tmp_path_factory):
    """A 'photo' over local HTTP: a catalog product on a large light canvas."""
    folder = tmp_path_factory.mktemp("photos")
    items = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    product = Image.open(Path(demo_env.config.paths.images_dataframe_path).parent
                         / items["image_path"].iloc[5]).convert("RGB")
    canvas = Image.new("RGB", (480, 360), (246, 246, 246))
    canvas.paste(product.resize((product.width * 3, product.height * 3)), (250, 60))
    canvas.save(folder / "outfit.png")
    with served_folder(folder) as url_of:
        yield url_of("outfit.png"), canvas


def shot(tab, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    target = os.environ.get("SCREENSHOT_OUT")
    if target and Path(target).suffix.lower() != ".png":
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)
    return path


def wait_for_results(tab) -> None:
    tab.get_by_text(DISTANCE).first.wait_for()
    tab.wait_for_function(  # images may follow the text (their renderer loads on first use)
        "() => { const shown = [...document.images].filter(i => i.alt.startsWith('Result: '));"
        " return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth > 0); }")


def test_crop_then_search_then_thumbs_up(app_url, photo_url, demo_env, page,  # noqa: F811
                                         tmp_path):
    url, canvas = photo_url
    page.set_default_timeout(START_TIMEOUT_S * 1000)
    page.goto(app_url)
    box = page.get_by_label("Product page or image link")
    box.fill(url)
    box.press("Enter")
    wait_for_results(page)
    page.get_by_text("Crop the photo").click()  # the toggle
    cropper = page.frame_locator('iframe[title="streamlit_cropper.st_cropper"]')
    drawing = cropper.locator("canvas").last
    drawing.wait_for()
    start = default_box(canvas)  # the product's bounds, where the box starts
    frame = drawing.bounding_box()
    centre = (frame["x"] + start.x + start.w / 2, frame["y"] + start.y + start.h / 2)
    page.mouse.move(*centre)  # drag the box 40 px left and 30 px up
    page.mouse.down()
    page.mouse.move(centre[0] - 40, centre[1] - 30, steps=8)
    page.mouse.up()
    caption = page.get_by_text("Box: ")
    page.wait_for_function("t => ![...document.querySelectorAll('p')].some(p => "
                           "p.textContent.startsWith('Box: ' + t + ' '))", arg=start.text())
    drawn = caption.inner_text().split()[1]
    page.get_by_role("button", name="Search this region").click()
    page.wait_for_function("() => new URL(location).searchParams.get('crop')")
    crop = parse_qs(urlsplit(page.url).query)["crop"][0]
    assert crop == drawn and crop != start.text()
    moved = parse_crop(crop)
    assert abs(moved.x - (start.x - 40)) <= 2 and abs(moved.y - (start.y - 30)) <= 2
    assert 0 <= moved.w - start.w <= 3 and 0 <= moved.h - start.h <= 3  # + the box's stroke
    page.get_by_text(f"Searched the region {crop}").wait_for()
    wait_for_results(page)
    shot(page, tmp_path, "crop-search")
    store = JudgmentStore(demo_env.config.paths.judgments_path)
    before = len(store.table())
    up = page.locator("[class*='st-key-s_up_'] button").first
    up.click()
    deadline = time.monotonic() + 30
    while len(store.table()) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    judged = store.table().iloc[-1]
    assert (judged["verdict"], judged["crop"], judged["query_ref"]) == (1, crop, url)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_match_a_small_list(app_url, catalog_images, demo_env, page,  # noqa: F811
                            tmp_path):
    items = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    links = [catalog_images(path) for path in items["image_path"].iloc[:3]]
    links.append(catalog_images("images/no-such-file.jpg"))
    table = tmp_path / "competitors.csv"
    pd.DataFrame({"sku": ["a", "b", "c", "d"], "image_url": links}).to_csv(table, index=False)
    page.set_default_timeout(START_TIMEOUT_S * 1000)
    page.goto(f"{app_url}/list")
    page.locator("input[type=file]").set_input_files(str(table))
    page.get_by_role("button", name="Match 4 rows").click()
    page.get_by_text("3 of 4 rows matched").wait_for()
    page.get_by_text("1 row could not be matched").wait_for()
    page.locator('[data-testid="stDataFrame"]').wait_for()
    download = page.get_by_role("button", name="Download matches (CSV)")
    download.wait_for()  # it renders just after the table
    assert download.is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, tmp_path, "match-a-list")
