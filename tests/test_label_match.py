"""Known catalog labels steer the ranking: type match and the catalog colour source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.schema import AppConfig
from label_match import catalog_distributions
from search import SearchService
from vectorizer.images import open_image


def test_a_catalog_label_is_one_hot_in_the_heads_order():
    items = pd.DataFrame({"kind": ["Shoe", "Dress", "Cape", None, "Shoe"]})
    values = catalog_distributions(items, "kind", ["Dress", "Shoe", "(other)"])
    np.testing.assert_array_equal(values[[0, 1, 2, 4]], [[0, 1, 0], [1, 0, 0], [0, 0, 1],
                                                         [0, 1, 0]])  # Cape: rare -> (other)
    assert np.isnan(values[3]).all()  # no label: no distribution
    without_other = catalog_distributions(items, "kind", ["Dress", "Shoe"])
    assert np.isnan(without_other[2]).all()  # a dropped class: nothing to compare with


def variant(base: SearchService, **settings) -> SearchService:
    """The demo's model and index with other query-time settings ("section__key": value)."""
    config: AppConfig = base.config.model_copy(deep=True)
    for dotted, value in settings.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    config.config_path = base.config.config_path
    return SearchService(config, base.encoder, base.store)


def likelihoods(service: SearchService, column: str, image, results: pd.DataFrame) -> list:
    """How likely the model finds the query image to be of each result's catalog class."""
    probabilities = service.encoder.embed_images([image]).probabilities[column][0]
    labels = catalog_distributions(results, column, service.encoder.checkpoint.tasks[column])
    return [float(p) for p in np.nan_to_num(labels) @ probabilities]


@pytest.mark.parametrize("settings, column, mode", [
    ({"label_match__weights": {"garment": 10.0}}, "garment", "any"),
    ({"label_match__weights": {"pattern": 10.0}}, "pattern", "any"),
    ({"colour__source": "catalog", "colour__same_weight": 10.0}, "colour", "same"),
])
def test_the_most_likely_labels_come_first(demo_env, settings, column, mode):
    """With a heavy weight the ranking follows the query's predicted distribution over each
    result's own catalog label; with none it is the vector's (which mixes them)."""
    base = SearchService.load(demo_env.config)
    steered, items, changed = variant(base, **settings), base.items, 0
    for row in range(0, len(items), 30):
        image = open_image(Path(items["image_file"].iloc[row]), 10**8)
        plain = base.search_image(image, 8, colour="any").results
        ranked = steered.search_image(image, 8, colour=mode).results
        order = likelihoods(base, column, image, ranked)
        assert order == sorted(order, reverse=True), (row, order)
        changed += plain["id"].tolist() != ranked["id"].tolist()
    assert changed


def test_more_like_this_puts_the_products_own_type_first(demo_env):
    base = SearchService.load(demo_env.config)
    steered = variant(base, label_match__weights={"garment": 10.0})
    items = base.items
    for row in range(0, len(items), 40):
        item_id, own = str(items["id"].iloc[row]), items["garment"].iloc[row]
        same_type = (steered.search_item(item_id, 8, colour="any").results["garment"] == own)
        assert same_type.tolist() == sorted(same_type, reverse=True), (item_id, own)
        assert same_type.iloc[0], item_id  # the demo holds 40 of each garment: 60 candidates do


def test_each_weighted_column_adds_its_term(demo_env):
    base = SearchService.load(demo_env.config)
    steered = variant(base, label_match__weights={"garment": 0.2, "pattern": 0.1})
    image = open_image(Path(base.items["image_file"].iloc[0]), 10**8)
    results = steered.search_image(image, 8, colour="any").results
    garment, pattern = results["label_distance_garment"], results["label_distance_pattern"]
    score = results["distance"] + 0.2 * garment + 0.1 * pattern
    assert score.is_monotonic_increasing and garment.between(0, 1).all()


def test_label_match_needs_a_head(tmp_path):
    from config import ConfigError, load_config
    from tests.fixtures_demo import write_demo_config

    with pytest.raises(ConfigError, match=r"label_match\.weights: \['gender'\] have no head"):
        load_config(write_demo_config(tmp_path, label_match__weights={"gender": 0.1}))
    with pytest.raises(ConfigError, match=r"label_match\.weights.*between 0 and 10"):
        load_config(write_demo_config(tmp_path, label_match__weights={"garment": -1}))
    with pytest.raises(ConfigError, match=r"colour\.column: 'gender' has no head"):
        load_config(write_demo_config(tmp_path, colour__column="gender",
                                      colour__source="catalog"))
    assert load_config(write_demo_config(tmp_path, label_match__weights={"garment": 0.2})
                       ).label_match.weights == {"garment": 0.2}


def test_the_results_say_what_orders_them(demo_env, monkeypatch):
    """The results' heading explains the order: distance, then what re-ranks it."""
    import yaml
    from streamlit.testing.v1 import AppTest

    from tests.test_front_end import assert_clean, on_page, use_config

    def heading_help(config_path, item_id) -> str:
        use_config(config_path, monkeypatch)
        at = AppTest.from_function(on_page, kwargs={"name": "search"}, default_timeout=60)
        at.query_params["item"] = item_id  # a shared "More like this" link
        at.run()
        assert_clean(at)
        return next(h.proto.help for h in at.subheader if "similar product" in h.value)

    item_id = str(SearchService.load(demo_env.config).items["id"].iloc[3])
    plain = heading_help(demo_env.config_path, item_id)
    assert plain.startswith("Ordered by visual distance") and "garment" not in plain
    assert "Similar colour: products of the query's colour move up." in plain
    raw = yaml.safe_load(demo_env.config_path.read_text())
    raw["label_match"]["weights"] = {"garment": 0.2}
    steered = demo_env.config_path.with_name("config-label-match.yml")  # same folder, same paths
    steered.write_text(yaml.safe_dump(raw, sort_keys=False))
    text = heading_help(steered, item_id)
    assert "Among the 60 nearest, products whose garment match this product's own move up." \
        in text
