"""`backend: milvus` end to end on the session's demo model: build_index.py, search.py (CLI and
bulk), --tune and the app's pages, against Milvus Lite's server in its own process (a real
http:// uri: the build job writes, the app and the CLI read)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import front_end
from build_index import build
from colour_match import hellinger
from config import load_config
from index_store.location import index_version
from index_store.milvus_store import MilvusStore
from ingest.synthetic import generate_catalog
from search import SearchService
from tests.fixtures_demo import write_demo_config
from tests.test_build_index import run_cli
from tests.test_front_end import assert_clean, on_page, result_ids, use_config
from tests.test_label_match import likelihoods, variant
from tests.test_milvus import lite_server  # noqa: F401 - the fixture
from vectorizer.images import open_image

COUNT = 48


@pytest.fixture(scope="module")
def milvus_demo(tmp_path_factory, demo_env, lite_server):  # noqa: F811
    folder = tmp_path_factory.mktemp("milvus_demo")
    config_path = write_demo_config(
        folder, backend="milvus", milvus__uri=lite_server, milvus__collection_prefix="demo",
        milvus__consistency_level="Strong",
        paths__trained_model_path=str(demo_env.config.paths.trained_model_path))
    config = load_config(config_path)
    generate_catalog(Path(config.paths.images_dataframe_path), COUNT, seed=5)
    summary = build(config, quiet=True)
    return config, summary


def test_build_publishes_evaluated_version(milvus_demo):
    config, summary = milvus_demo
    assert summary["items_indexed"] == COUNT
    assert summary["version"] == index_version(config)
    assert summary["metrics"]["recall_at_k"] >= 0.95
    assert not (Path(config.paths.ann_index_path) / "versions").exists()


def test_search_service_holds_no_vectors_and_finds_items(milvus_demo):
    config, _ = milvus_demo
    service = SearchService.load(config)
    assert isinstance(service.store, MilvusStore) and service.size == COUNT
    catalog = pd.read_csv(config.paths.images_dataframe_path, dtype=str).set_index("id")
    item_id = catalog.index[2]
    colour = catalog.loc[item_id, "colour"]
    response = service.search_item(item_id, 5, filters={"colour": [colour]})
    assert item_id not in response.results["id"].tolist()
    assert (response.results["colour"] == colour).all()
    assert len(response.results) == min(5, int((catalog["colour"] == colour).sum()) - 1)
    assert response.same_product["name"] == catalog.loc[item_id, "name"]
    assert set(service.store.filter_options(["colour"])["colour"]) == set(catalog["colour"])


def test_labels_and_colours_steer_milvus_results_too(milvus_demo):
    """label_match and the colour sources read what each Milvus result carries (the app holds
    no item table there): its own labels, its image for the colour head's distribution. The
    results are the candidates with the lowest distance + weight x Hellinger(the query's
    predicted distribution, the candidate's), the candidates' side computed here from the
    catalog file and their images; "More like this" puts the product's own type first."""
    config, _ = milvus_demo
    base = SearchService.load(config)
    steered = variant(base, label_match__weights={"garment": 10.0})
    labelled = variant(base, colour__source="catalog", colour__same_weight=10.0)
    predicted = variant(base, colour__same_weight=10.0)  # the colour head's, on first need
    assert labelled.has_colour and predicted.has_colour
    catalog = pd.read_csv(config.paths.images_dataframe_path, dtype=str).set_index("id")
    folder = Path(config.paths.images_dataframe_path).parent

    def image_of(item_id: str):
        return open_image(folder / catalog.loc[item_id, "image_path"], 10**8)

    def colour_distance(query, ids) -> np.ndarray:
        embedded = base.encoder.embed_images([query, *map(image_of, ids)])
        return hellinger(embedded.probabilities["colour"][0],
                         embedded.probabilities["colour"][1:])

    def label_distance(column):
        return lambda query, ids: np.sqrt(1 - np.sqrt(likelihoods(
            base, column, query, catalog.loc[ids, [column]].reset_index(drop=True))))

    changed = 0
    for item_id in catalog.index[::8]:
        image = image_of(item_id)
        every = base.search_image(image, COUNT, colour="any").results
        for service, mode, distance in ((steered, "any", label_distance("garment")),
                                        (labelled, "same", label_distance("colour")),
                                        (predicted, "same", colour_distance)):
            ranked = service.search_image(image, 8, colour=mode).results
            score = every["distance"] + 10.0 * distance(image, every["id"].tolist())
            expected = every.assign(score=score).sort_values("score", kind="stable")
            assert ranked["id"].tolist() == expected["id"].head(8).tolist(), (item_id, mode)
            changed += every["id"].head(8).tolist() != ranked["id"].tolist()
        own_type = catalog.loc[item_id, "garment"]
        same_type = steered.search_item(item_id, 5, colour="any").results["garment"] == own_type
        assert same_type.tolist() == sorted(same_type, reverse=True), (item_id, own_type)
    assert changed


def test_search_cli_and_tune_read_the_published_index(milvus_demo, tmp_path):
    config, _ = milvus_demo
    image = sorted(Path(config.paths.images_dataframe_path).parent.glob("images/*.jpg"))[3]
    result = run_cli("search.py", "--config", str(config.config_path), "--k", "3", "--json",
                     str(image))
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["results"]) == 3
    result = run_cli("build_index.py", "--config", str(config.config_path), "--tune", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["current_ef"] == config.milvus.ef and report["rows"]
    assert report["config_lines"].startswith("milvus:\n  ef: ")


def test_app_pages_work_on_milvus(milvus_demo, monkeypatch):
    config, _ = milvus_demo
    use_config(config.config_path, monkeypatch)
    catalog = pd.read_csv(config.paths.images_dataframe_path, dtype=str)
    explore = AppTest.from_function(on_page, kwargs={"name": "explore"}, default_timeout=60)
    explore.session_state["explore_item"] = catalog["id"][4]
    explore.run()
    assert_clean(explore)
    ids = result_ids(explore, "x")
    assert len(ids) == config.ann_index.k and catalog["id"][4] not in ids
    assert f"shown of {COUNT:,}" in explore.caption[0].value
    report = AppTest.from_function(on_page, kwargs={"name": "report"}, default_timeout=60).run()
    assert_clean(report)
    search = AppTest.from_function(on_page, kwargs={"name": "search"}, default_timeout=60)
    search.query_params["item"] = catalog["id"][4]  # a shared "more like this" link
    search.run()
    assert_clean(search)
    assert len(result_ids(search)) == config.ann_index.k
    assert "colour_mode" in [radio.key for radio in search.radio]  # from the results' images
    assert {m.label: m.value for m in report.metric}["Indexed"] == str(COUNT)


def test_unreachable_milvus_is_one_message_in_the_app(tmp_path, demo_env, monkeypatch):
    from tests.test_milvus import free_port

    config_path = write_demo_config(
        tmp_path, backend="milvus", milvus__uri=f"http://127.0.0.1:{free_port()}",
        milvus__timeout_s=2,
        paths__trained_model_path=str(demo_env.config.paths.trained_model_path))
    monkeypatch.setenv(front_end.CONFIG_ENV, str(config_path))
    at = AppTest.from_file(str(Path(front_end.__file__)), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and "milvus.uri: cannot" in at.error[0].value
