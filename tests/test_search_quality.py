"""The search as shown, measured at build (`search_quality`) and on the Report page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from index_store.evaluate import evaluation_queries
from index_store.store import IndexStore
from search import SearchService
from search_quality import describe_settings, found_rows, shown_search_metrics, shown_settings
from tests.test_front_end import assert_clean, on_page, use_config
from tests.test_label_match import variant
from vectorizer.images import open_image


def measure(service: SearchService) -> dict:
    config = service.config
    return shown_search_metrics(service, tasks=config.task_columns, k=config.evaluation.k,
                                test_ids=service.encoder.checkpoint.test_ids,
                                max_queries=config.evaluation.max_queries,
                                seed=config.evaluation.seed)


def test_the_build_measures_the_search_as_configured(demo_env):
    manifest = IndexStore.load(demo_env.config.paths.ann_index_path).manifest
    service = SearchService.load(demo_env.config)
    shown, vector = manifest["metrics"]["shown"], manifest["metrics"]
    assert shown == measure(service)  # what the app, loaded later, does with the same queries
    assert shown["queries"] == vector["queries"] and "own image" in shown["query_source"]
    assert shown["settings"] == {"colour": "Similar colour (head)", "label_match": {}}
    assert set(shown["tasks"]) == set(vector["tasks"])
    for values in shown["tasks"].values():  # per class too, for the Report page
        assert sum(c["queries"] for c in values["per_class"].values()) == values["queries"]


def test_without_re_ranking_an_image_query_scores_as_its_stored_vector(demo_env):
    """Two paths to the same figure: an image embedded at query time (the app's) and the vector
    stored at build (the vector's evaluation)."""
    plain = variant(SearchService.load(demo_env.config), colour__default="any")
    vector = IndexStore.load(demo_env.config.paths.ann_index_path).manifest["metrics"]
    shown = measure(plain)
    assert shown["settings"]["colour"] == "Any colour"
    for task, values in vector["tasks"].items():
        assert shown["tasks"][task]["map_at_k"] == pytest.approx(values["map_at_k"], abs=1e-6)


def test_label_match_shows_in_the_figures(demo_env):
    """With a heavy type weight the shown results are of the type the model predicts for the
    query, so their type precision is the head's accuracy on those queries (the tests' demo
    model trains for seconds: its heads are poor, its vectors less so)."""
    base = variant(SearchService.load(demo_env.config), colour__default="any")
    steered = variant(base, label_match__weights={"garment": 10.0})
    items = base.items
    rows, _ = evaluation_queries(items["id"], base.encoder.checkpoint.test_ids,
                                 base.config.evaluation.max_queries, base.config.evaluation.seed)
    predicted = [base.encoder.embed_images([open_image(Path(items["image_file"].iloc[row]),
                                                       10**8)]).predictions[0]["garment"][0][0]
                 for row in rows]
    accuracy = float(np.mean(np.array(predicted) == items["garment"].iloc[rows].to_numpy()))
    before, after = measure(base)["tasks"]["garment"], measure(steered)["tasks"]["garment"]
    assert after["precision_at_k"] == pytest.approx(accuracy, abs=0.1)
    assert abs(before["precision_at_k"] - accuracy) > 0.1  # the vector alone: another figure
    assert describe_settings(shown_settings(steered)) == "Any colour; label match garment 10"


def test_report_page_shows_both_and_says_when_the_config_changed(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "report"}, default_timeout=60).run()
    assert_clean(at)
    caption = next(c.value for c in at.caption if "Search as shown" in c.value)
    assert "Similar colour \\(head\\); no label match" in caption and "rebuild" not in caption
    measure = at.get("button_group")[0]  # the per-class chart: the search as shown, or the vector
    assert measure.options == ["search as shown", "vector"]
    assert measure.value == "search as shown"
    measure.set_value("vector").run()
    assert_clean(at)
    raw = yaml.safe_load(demo_env.config_path.read_text())
    raw["colour"]["default"] = "any"
    changed = demo_env.config_path.with_name("config-any-colour.yml")  # same folder: same paths
    changed.write_text(yaml.safe_dump(raw, sort_keys=False))
    use_config(changed, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "report"}, default_timeout=60).run()
    assert_clean(at)
    caption = next(c.value for c in at.caption if "Search as shown" in c.value)
    assert "re-ranks differently now (Any colour; no label match): rebuild" in caption


def test_queries_can_be_altered_first(demo_env):
    """bench/robustness.py --shown: each query image is altered before it is searched."""
    service = SearchService.load(demo_env.config)
    rows = [0, 50, 100]
    plain = found_rows(service, rows, "any", 5)
    blank = found_rows(service, rows, "any", 5,
                       alter=lambda image: Image.new("RGB", image.size, "white"))
    white = service.search_image(Image.new("RGB", (60, 80), "white"), 8, colour="any").results
    for position, row in enumerate(rows):
        expected = [r for r in white["row"] if r != row][:5]
        assert blank[position].tolist() == expected
    assert (plain != blank).any()
