"""What the pages show, as plain functions: names, ✓ reference, gallery, map colours, class bars."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from app import charts, display
from config import ConfigError, load_config
from contracts import ClassScores
from tests.fixtures_demo import write_demo_config


@pytest.mark.parametrize(("column", "title"), [
    ("articleType", "Article type"), ("masterCategory", "Master category"),
    ("baseColour", "Base colour"), ("garment", "Garment"), ("sub_category", "Sub category"),
    ("productDisplayName", "Product display name"), ("SKU", "Sku"),
])
def test_column_titles_are_readable(column, title):
    assert display.column_title(column) == title
    assert display.column_title(column, {column: "Own name"}) == "Own name"


def test_column_names_must_name_label_columns(tmp_path):
    path = write_demo_config(tmp_path, ui__column_names={"nope": "Nope"})
    with pytest.raises(ConfigError, match=r"ui.column_names: \['nope'\]"):
        load_config(path)
    path = write_demo_config(tmp_path, ui__filter_fields=["garment"],
                             dataframe__label_fields=["garment", "colour", "pattern", "k"])
    assert load_config(path).ui.filter_fields == ["garment"]
    path = write_demo_config(tmp_path, ui__filter_fields=["k"],
                             dataframe__label_fields=["garment", "colour", "pattern", "k"])
    with pytest.raises(ConfigError, match="cannot be filters"):
        load_config(path)


def test_ticks_follow_the_query_products_own_labels():
    """Catalog item 100011 'Men red checked tshirt' predicted 'Dotted': checked results get ✓."""
    fields = ["garment", "pattern"]
    product = {"id": "100011", "garment": "Tshirt", "pattern": "Checked"}
    predicted = {"garment": [("Tshirt", 0.9)], "pattern": [("Dotted", 0.45)]}
    reference, why = display.reference_labels(product, predicted, fields)
    assert reference == {"garment": "Tshirt", "pattern": "Checked"}
    assert "this product's own catalog labels (Tshirt · Checked)" in why
    assert display.label_line({"garment": "Tshirt", "pattern": "Checked"}, fields,
                              reference) == "Tshirt ✓ · Checked ✓"
    assert display.label_line({"garment": "Tshirt", "pattern": "Dotted"}, fields,
                              reference) == "Tshirt ✓ · Dotted"
    guessed, why = display.reference_labels(None, predicted, fields)
    assert guessed == {"garment": "Tshirt", "pattern": "Dotted"}
    assert "model's guess" in why


def test_gallery_starts_with_the_most_common_classes_and_is_seeded():
    kinds = ["Tshirts"] * 9 + ["Shoes"] * 7 + ["Watches"] * 5 + ["Bags"] * 4 + [
        "Basketballs", "Bangles", "Ties"]
    items = pd.DataFrame({"id": [str(100 + i) for i in range(len(kinds))], "type": kinds})
    rows = display.gallery_rows(items, 4, "type", seed=0)
    assert list(items.loc[rows, "type"]) == ["Tshirts", "Shoes", "Watches", "Bags"]
    assert display.gallery_rows(items, 4, "type", seed=0) == rows  # deterministic
    picks = {tuple(items.loc[display.gallery_rows(items, 4, "type", seed=s), "id"])
             for s in range(6)}
    assert len(picks) > 1  # the seed chooses which product of each class
    shuffled = items.sample(frac=1, random_state=3).reset_index(drop=True)
    again = display.gallery_rows(shuffled, 4, "type", seed=0)
    assert list(shuffled.loc[again, "id"]) == list(items.loc[rows, "id"])
    assert list(items.loc[display.gallery_rows(items, 9, "type"), "type"])[4:7] == [
        "Bangles", "Basketballs", "Ties"]  # rare classes only once every common one is shown


def test_gallery_shows_the_configured_classes_first_then_the_most_common():
    kinds = ["Tshirts"] * 9 + ["Shoes"] * 7 + ["Watches"] * 5 + ["Dresses"] * 2 + ["Ties"]
    items = pd.DataFrame({"id": [str(100 + i) for i in range(len(kinds))], "type": kinds})
    rows = display.gallery_rows(items, 4, "type", first=["Dresses", "Capes", "Watches"])
    assert list(items.loc[rows, "type"]) == ["Dresses", "Watches", "Tshirts", "Shoes"]
    rows = display.gallery_rows(items, 7, "type", first=["Dresses"])
    assert list(items.loc[rows, "type"])[5:] == ["Dresses", "Tshirts"]  # the second round


def test_colour_names_are_drawn_in_their_colours():
    values = pd.Series(["Green", "Pink", "Red", "Tshirt", "Dress", None])
    assert charts.is_colour_column(values) is False  # 3 of 5 known: below the 80 % share
    values = pd.Series(["Green"] * 5 + ["Pink"] * 4 + ["Red"] * 3 + ["Navy  blue", "Multi"])
    assert charts.is_colour_column(values)
    domain, colours = charts.legend_scale(values.astype(str), colour_names=True)
    drawn = dict(zip(domain, colours, strict=True))
    assert drawn["Green"] == charts.NAMED_COLOURS["green"]
    assert drawn["Pink"] == charts.NAMED_COLOURS["pink"]
    assert drawn["Red"] == charts.NAMED_COLOURS["red"]
    assert drawn["Navy  blue"] == charts.NAMED_COLOURS["navy blue"]
    assert drawn["Multi"] in charts.PALETTE
    assert not charts.is_colour_column(pd.Series(["Tshirt", "Dress", "Red"]))


def test_rare_classes_are_grouped_into_other():
    values = pd.Series([f"type{i}" for i in range(140) for _ in range(140 - i)] + [None])
    grouped = charts.group_rare(values, 12)
    assert grouped.nunique() == 13
    assert (grouped == charts.OTHER).sum() == sum(140 - i for i in range(12, 140)) + 1
    domain, colours = charts.legend_scale(grouped, colour_names=False)
    assert domain[:2] == ["type0", "type1"] and domain[-1] == charts.OTHER
    assert colours[-1] == charts.OTHER_COLOUR and len(set(colours[:12])) == 12


def test_per_class_bars_count_queries_and_keep_classes_without_queries():
    per_class = {"Tshirt": ClassScores(map_at_k=1.0, precision_at_k=1.0, queries=1),
                 "Dress": ClassScores(map_at_k=0.7, precision_at_k=0.6, queries=12)}
    table = charts.per_class_table(per_class, ["Dress", "Scarf", "Tshirt", "Bag"])
    assert list(table["class"]) == ["Tshirt", "Dress", "Bag", "Scarf"]
    assert list(table["label"]) == ["1.00 (n=1)", "0.70 (n=12)", "no test queries",
                                    "no test queries"]
    assert list(table["queries"]) == [1, 12, 0, 0]
    assert math.isnan(table.loc[2, "mAP"])
