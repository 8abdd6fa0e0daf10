"""Distance bands calibrated on held-out queries, and "no confident match" on a generated photo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from index_store.bands import calibrate_bands
from search import SearchService
from vectorizer.images import open_image

CALIBRATION = {"column": "type", "confident_share": 0.9, "no_match_share": 0.5,
               "min_queries": 5}


def test_bands_come_from_where_the_best_match_stops_being_the_right_type():
    distances = np.linspace(0.01, 0.60, 60)
    correct = np.ones(60, bool)
    correct[30:40] = np.arange(10) % 2 == 0     # 0.31-0.40: right half the time
    correct[40:] = np.arange(20) % 5 == 0       # beyond 0.41: right one time in five
    shuffled = np.random.default_rng(0).permutation(60)
    bands = calibrate_bands(distances[shuffled], correct[shuffled], **CALIBRATION)
    below = np.array([correct[: i + 1].mean() for i in range(60)])
    confident_at = np.flatnonzero((below >= 0.9) & (np.arange(1, 61) >= 5))[-1]
    assert bands["confident"] == pytest.approx(distances[confident_at])
    assert bands["confident_share_seen"] >= 0.9
    assert bands["no_match_basis"] == "share"
    farther = distances > bands["no_match"]
    assert correct[farther].mean() < 0.5
    assert correct[~farther][-10:].mean() >= 0.5 or bands["no_match"] < distances[-6]
    assert bands["top1_share"] == pytest.approx(correct.mean())
    assert bands["confident"] <= bands["no_match"]


def test_a_model_mostly_right_everywhere_flags_only_what_lies_beyond_its_queries():
    distances = np.linspace(0.0, 0.3, 200)
    correct = np.ones(200, bool)
    correct[100:] = np.arange(100) % 3 != 0        # the farther half: right 2 times in 3
    bands = calibrate_bands(distances, correct, **CALIBRATION)
    assert bands["no_match_basis"] == "percentile 99"
    assert bands["no_match"] == pytest.approx(np.percentile(distances, 99))
    assert 0.15 < bands["confident"] < bands["no_match"]


def test_no_queries_give_empty_bands():
    bands = calibrate_bands(np.array([]), np.array([], bool), **CALIBRATION)
    assert bands["queries"] == 0 and bands["no_match_basis"] == "no queries"


def generated_photo() -> Image.Image:
    """A product of a kind the catalog does not have: a green disc (its garments are shirts,
    dresses, trousers, skirts, shoes, bags, caps and shorts)."""
    image = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(image).ellipse((40, 40, 160, 160), fill=(30, 160, 60))
    return image


def photo_bytes() -> bytes:
    buffer = io.BytesIO()
    generated_photo().save(buffer, "PNG")
    return buffer.getvalue()


def test_the_build_stores_its_bands_and_a_wrong_kind_of_photo_is_no_confident_match(demo_env):
    service = SearchService.load(demo_env.config)
    bands = service.manifest.metrics.bands
    assert bands is not None and bands.column == "garment" and bands.queries > 0
    assert 0 <= bands.confident <= bands.no_match
    photo = service.search_image(generated_photo(), 5)
    assert photo.no_match, (photo.results["distance"].min(), bands)
    assert set(photo.results["band"]) == {"unlikely match"}
    assert not set(photo.results["garment"]) & {"Disc"}  # every result: the wrong kind
    item = service.search_item(str(service.items["id"].iloc[0]), 5)
    assert not item.no_match
    assert item.results["band"].iloc[0] in ("near-duplicate", "similar", "loosely similar")


def test_a_photo_of_a_catalog_product_is_never_no_confident_match(demo_env):
    service = SearchService.load(demo_env.config)
    item = service.items.iloc[3]
    photo = open_image(Path(item["image_file"]), 10**7)
    service.bands = service.bands.model_copy(update={"no_match": 0.0})  # any distance is past it
    found = service.search_image(photo, 5)
    assert found.same_product["id"] == item["id"] and not found.no_match
    assert service.search_image(generated_photo(), 5).no_match
