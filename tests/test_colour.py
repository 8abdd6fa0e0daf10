"""How much colour matters: colour histograms, the distance, re-ranking, the modes' effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from colour_match import ItemColours, colour_histogram, colour_weight, hellinger, rerank
from config.schema import ColourConfig
from search import SearchService


def product(colour, background=(255, 255, 255)) -> Image.Image:
    image = Image.new("RGB", (60, 80), background)
    image.paste(colour, (15, 20, 45, 60))
    return image


def test_histogram_counts_the_product_not_the_studio_background():
    red, blue = colour_histogram(product((200, 20, 20))), colour_histogram(product((20, 20, 200)))
    assert red.sum() == pytest.approx(1.0) and red.max() == pytest.approx(1.0)
    on_grey = colour_histogram(product((200, 20, 20), background=(128, 128, 128)))
    assert hellinger(red, np.stack([on_grey, blue])) == pytest.approx([0.0, 1.0], abs=1e-6)


def test_histogram_leaves_out_the_grain_of_a_card():
    """A red product on a grey card with sensor grain (a phone photo): the grain's pixels that
    stray past the tolerance one by one are card, not product, so the histogram stays red."""
    rng = np.random.default_rng(0)
    card = np.clip(128 + rng.normal(0, 14, (80, 60, 3)), 0, 255).astype(np.uint8)
    photo = Image.fromarray(card)
    photo.paste((200, 20, 20), (15, 20, 45, 60))
    clean = colour_histogram(product((200, 20, 20)))
    grainy = colour_histogram(photo)
    assert hellinger(clean, grainy[None, :])[0] < 0.1  # before: 0.20, red cell 0.92
    assert grainy.max() > 0.98


def test_weights_per_mode():
    config = ColourConfig(column="colour", similar_weight=0.1, same_weight=0.5)
    assert [colour_weight(config, m) for m in ("any", "similar", "same")] == [0.0, 0.1, 0.5]
    assert colour_weight(ColourConfig(column=None), "same") == 0.0
    with pytest.raises(ValueError, match="expected one of any, similar, same"):
        colour_weight(config, "loud")


def test_rerank_moves_the_right_colour_up_and_keeps_the_visual_distance():
    results = pd.DataFrame({"id": ["a", "b", "c"], "distance": [0.10, 0.12, 0.30]})
    ranked = rerank(results, {"colour_distance": (np.array([0.9, 0.0, np.nan]), 0.5)})
    assert ranked["id"].tolist() == ["b", "c", "a"]  # c: unknown colour gets the mean, 0.45
    assert ranked.set_index("id")["distance"].to_dict() == {"a": 0.10, "b": 0.12, "c": 0.30}
    unweighted = rerank(results, {"colour_distance": (np.array([0.9, 0.0, 0.5]), 0.0)})
    assert unweighted["id"].tolist() == ["a", "b", "c"]


def test_rerank_adds_up_its_terms():
    results = pd.DataFrame({"id": ["a", "b", "c"], "distance": [0.10, 0.12, 0.30]})
    colour, kind = np.array([0.0, 0.4, 0.0]), np.array([0.5, 0.0, 0.0])
    assert rerank(results, {"colour_distance": (colour, 0.5)})["id"].tolist() == ["a", "c", "b"]
    assert rerank(results, {"type_distance": (kind, 0.5)})["id"].tolist() == ["b", "c", "a"]
    both = rerank(results, {"colour_distance": (colour, 0.5), "type_distance": (kind, 0.5)})
    assert both["id"].tolist() == ["c", "b", "a"]  # 0.30 against 0.32 and 0.35
    assert both.set_index("id")["type_distance"].to_dict() == {"a": 0.5, "b": 0.0, "c": 0.0}


def product_files(folder, colours) -> list:
    """One saved product image per colour."""
    files = []
    for n, colour in enumerate(colours):
        files.append(folder / f"{n}.png")
        product(colour).save(files[-1])
    return files


def counted_histograms(calls: list):
    """Histogram features that record how many images each call computed."""
    def features(images):
        calls.append(len(images))
        return np.stack([colour_histogram(image) for image in images])
    return features


def test_item_colours_are_computed_once_and_unreadable_images_are_nan(tmp_path):
    files = product_files(tmp_path, [(200, 20, 20), (20, 20, 200)])
    calls = []
    colours = ItemColours(counted_histograms(calls), [*files, tmp_path / "missing.png"], 10**7)
    first = colours.of_rows([0, 2, 1, 0])
    assert np.isnan(first[1]).all() and np.allclose(first[0], first[3])
    assert hellinger(first[0], first[2:3])[0] == pytest.approx(1.0)
    colours.of_rows([1, 0, 2])
    assert calls == [2]


def test_item_colours_keep_only_the_most_recently_used_rows(tmp_path):
    files = product_files(tmp_path, [(200, 20, 20), (20, 200, 20), (20, 20, 200)])
    computed = []
    colours = ItemColours(counted_histograms(computed), files, 10**7, max_rows=2)
    first = colours.of_rows([0, 1])
    colours.of_rows([0])           # row 0 is now the most recently used
    third = colours.of_rows([2])   # row 1 makes room for it
    assert computed == [2, 1]
    again = colours.of_rows([0, 2])
    assert computed == [2, 1] and np.allclose(again, np.stack([first[0], third[0]]))
    assert np.allclose(colours.of_rows([1]), first[1:2]) and computed == [2, 1, 1]


@pytest.mark.parametrize("queries", ["item", "image"])
def test_same_colour_ranks_more_products_of_the_query_colour_first(demo_env, queries):
    from bench.ranking import evaluate

    settings = ["vector alone", "similar colour (histogram)", "same colour (histogram)"]
    rows = evaluate(SearchService.load(demo_env.config), settings, tasks=["colour", "garment"],
                    k=5, max_queries=40, queries=queries)
    colour = [row["colour"] for row in rows]
    assert colour[0] < colour[1] < colour[2], rows


def test_the_colour_column_is_checked_against_the_labels_and_heads(tmp_path):
    from config import ConfigError, load_config
    from tests.fixtures_demo import write_demo_config

    with pytest.raises(ConfigError, match=r"colour\.column: 'hue' must be listed"):
        load_config(write_demo_config(tmp_path, colour__column="hue"))
    with pytest.raises(ConfigError, match=r"'gender' has no head in training\.tasks"):
        load_config(write_demo_config(tmp_path, colour__column="gender"))
    config = load_config(write_demo_config(tmp_path, colour__column="gender",
                                           colour__source="histogram"))
    assert config.colour.source == "histogram"
