"""Crop the query: boxes, their checks, the default box, `search.py --crop`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from query_crop import Box, CropError, crop_image, default_box, parse_crop
from tests.fixtures_demo import ROOT


def test_parse_and_crop():
    box = parse_crop(" 10, 20,30,40")
    assert box == Box(10, 20, 30, 40) and box.text() == "10,20,30,40"
    image = Image.new("RGB", (100, 80), "white")
    assert crop_image(image, box).size == (30, 40)
    assert crop_image(image, None) is image


@pytest.mark.parametrize(("text", "message"), [
    ("1,2,3", "four whole numbers"), ("a,b,c,d", "four whole numbers"),
    ("0,0,0,10", "zero size"), ("90,0,20,20", "outside the image"),
    ("-1,0,20,20", "outside the image"), ("0,0,4,4", "smaller than 8x8"),
])
def test_bad_boxes_say_why(text, message):
    with pytest.raises(CropError, match=message):
        crop_image(Image.new("RGB", (100, 80)), parse_crop(text))


def test_default_box_is_the_product_inside_a_plain_border_else_everything():
    canvas = Image.new("RGB", (400, 300), (240, 240, 240))
    canvas.paste((200, 20, 20), (150, 100, 250, 220))
    box = default_box(canvas)
    assert box.x < 150 <= box.x + 10 and box.y < 100 <= box.y + 10
    assert 250 <= box.x + box.w <= 260 and 220 <= box.y + box.h <= 230
    busy = Image.linear_gradient("L").convert("RGB")
    assert default_box(busy) == Box(0, 0, 256, 256)


def run_search(demo_env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "search.py", "--config", str(demo_env.config_path),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_search_cli_crops_and_refuses_a_bad_box(demo_env, tmp_path):
    canvas = Image.new("RGB", (300, 200), (250, 250, 250))
    item = Image.open(next((demo_env.folder / "images").iterdir())).convert("RGB")
    canvas.paste(item, (200, 100))
    photo = tmp_path / "outfit.png"
    canvas.save(photo)
    whole = run_search(demo_env, "--json", "--k", "3", "--colour", "any", str(photo))
    cropped = run_search(demo_env, "--json", "--k", "3", "--colour", "any",
                         "--crop", f"200,100,{item.width},{item.height}", str(photo))
    assert whole.returncode == 0 and cropped.returncode == 0, whole.stderr + cropped.stderr
    answer = json.loads(cropped.stdout)
    assert answer["same_product"] is not None  # the boxed product itself
    assert isinstance(answer["no_confident_match"], bool)
    outside = run_search(demo_env, "--crop", "250,150,100,100", str(photo))
    assert outside.returncode == 2
    assert "reaches outside the image (300x200 pixels)" in outside.stderr
    assert "Traceback" not in outside.stderr
