"""The Streamlit app driven headlessly with AppTest against the session's demo catalog."""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import exports
import front_end
from app import display
from app.search_page import EXAMPLES_TAB, INPUT_TABS
from app.service_loader import LOADER, Readiness, ServiceLoader
from index_store.store import IndexStore, current_version
from tests.fixtures_demo import ROOT, DemoEnv, write_demo_config
from tests.fixtures_http import make_test_image

APP = str(ROOT / "front_end.py")
DISTANCE = re.compile(r"distance \d+\.\d{3}")


@pytest.fixture()
def demo_app(demo_env: DemoEnv, monkeypatch) -> AppTest:
    """The app on the demo config (chosen with $VSEARCH_CONFIG, as AppTest has no argv)."""
    return app_for(demo_env.config_path, monkeypatch)


def with_examples(at: AppTest) -> AppTest:
    """The app with the "Pick an example" tab open (the gallery is sent only then)."""
    at.session_state["input_tab"] = EXAMPLES_TAB
    return at


def app_for(config_path: Path, monkeypatch) -> AppTest:
    use_config(config_path, monkeypatch)
    return AppTest.from_file(APP, default_timeout=60)


def use_config(config_path: Path, monkeypatch) -> None:
    """The app's config, and its service loaded (a server loads it at start, before visitors)."""
    monkeypatch.setenv(front_end.CONFIG_ENV, str(config_path))
    LOADER.wait(Path(config_path).resolve())


def on_page(name: str) -> None:
    """AppTest script opening another page first (switch_page only knows file pages)."""
    import front_end

    front_end.main(default_page=name)


def variant_config(demo_env: DemoEnv, folder: Path, **overrides) -> Path:
    """A config using the demo's catalog, model and index, with other settings overridden."""
    paths = {"paths__images_dataframe_path": str(demo_env.config.paths.images_dataframe_path),
             "paths__trained_model_path": str(demo_env.config.paths.trained_model_path),
             "paths__vectors_path": str(demo_env.config.paths.vectors_path),
             "paths__ann_index_path": str(demo_env.config.paths.ann_index_path)}
    folder.mkdir(parents=True, exist_ok=True)
    return write_demo_config(folder, **{**paths, **overrides})


def result_ids(at: AppTest, prefix: str = "s") -> list[str]:
    """Ids of the result cards shown, in order (each card has a "More like this" button)."""
    marker = f"{prefix}_more_"
    return [b.key.removeprefix(marker) for b in at.button if b.key and b.key.startswith(marker)]


def distances(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if DISTANCE.search(c.value)]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def search_url(at: AppTest, url: str) -> AppTest:
    at.run()
    return at.text_input(key="url_input").input(url).run()


def catalog(demo_env: DemoEnv) -> pd.DataFrame:
    table = pd.read_csv(demo_env.config.paths.images_dataframe_path, dtype=str)
    return table.set_index("id")


# ---------------------------------------------------------------- search by link


def test_url_search_shows_k_results_with_distances(demo_app, demo_env, http_server):
    url = http_server.url("/img/red.jpg?front-end")
    at = search_url(demo_app, url)
    assert_clean(at)
    k = demo_env.config.ann_index.k
    assert len(result_ids(at)) == k
    assert len(distances(at)) == k
    assert at.query_params["url"] == url
    assert any(m.value.startswith("Predicted: ") and "%" in m.value for m in at.markdown)
    assert at.main.subheader[-1].value == f"{k} similar products"
    hits = http_server.hits["/img/red.jpg?front-end"]
    again = search_url(AppTest.from_file(APP, default_timeout=60), url)
    assert len(result_ids(again)) == k
    assert http_server.hits["/img/red.jpg?front-end"] == hits  # served from the download cache


def test_shared_link_reopens_the_search(demo_app, demo_env, http_server):
    url = http_server.url("/page/og")
    demo_app.query_params["url"] = url
    at = demo_app.run()
    assert_clean(at)
    assert at.text_input(key="url_input").value == url
    assert len(result_ids(at)) == demo_env.config.ann_index.k
    assert any(c.value.startswith("Image found at") for c in at.caption)  # the page's og:image


@pytest.mark.parametrize(("path", "text"), [
    ("/404", "does not exist (HTTP 404)"),
    ("/403", "refused access"),
    ("/notimage.txt", "a text file, not an image"),
    ("/page/none", "no product image"),
])
def test_url_failures_are_messages(demo_app, http_server, path, text):
    at = search_url(demo_app, http_server.url(path))
    assert not at.exception
    assert len(at.error) == 1 and text in at.error[0].value
    assert result_ids(at) == []
    at.slider(key="k").set_value(3).run()  # a rerun shows the failure without fetching again
    assert text in at.error[0].value


def test_private_address_is_refused_without_an_allow_list(demo_env, http_server, tmp_path,
                                                         monkeypatch):
    config = variant_config(demo_env, tmp_path, download__allow_private_networks=[])
    at = search_url(app_for(config, monkeypatch), http_server.url("/img/red.jpg?blocked"))
    assert not at.exception
    assert "private or internal network address (127.0.0.1)" in at.error[0].value
    assert "download.allow_private_networks" in at.error[0].value  # how to allow a trusted one
    assert http_server.hits["/img/red.jpg?blocked"] == 0
    assert result_ids(at) == []


def test_slow_site_times_out(demo_env, http_server, tmp_path, monkeypatch):
    config = variant_config(demo_env, tmp_path, download__read_timeout_s=0.5)
    at = search_url(app_for(config, monkeypatch), http_server.url("/slow?s=2"))
    assert not at.exception
    assert "did not answer within 0.5 s" in at.error[0].value


# ---------------------------------------------------------------- other ways to search


def test_upload_of_a_catalog_photo_names_the_product(demo_app, demo_env):
    items = catalog(demo_env)
    item_id = items.index[7]
    photo = (Path(demo_env.config.paths.images_dataframe_path).parent
             / items.loc[item_id, "image_path"]).read_bytes()
    at = demo_app.run()
    at.file_uploader(key="upload").upload("photo.jpg", photo, "image/jpeg").run()
    assert_clean(at)
    assert at.info[0].value.startswith(f"This is product {item_id}")
    ids = result_ids(at)
    assert len(ids) == demo_env.config.ann_index.k and item_id not in ids


def test_upload_of_a_non_image_is_a_message(demo_app):
    at = demo_app.run()
    at.file_uploader(key="upload").upload("notes.png", b"just some text\n", "image/png").run()
    assert not at.exception
    assert "not an image" in at.error[0].value
    assert result_ids(at) == []


def test_upload_png_works(demo_app, demo_env):
    at = demo_app.run()
    at.file_uploader(key="upload").upload("blue.png", make_test_image("blue", fmt="PNG"),
                                          "image/png").run()
    assert_clean(at)
    assert len(result_ids(at)) == demo_env.config.ann_index.k


def test_gallery_example_searches_with_that_product(demo_app, demo_env):
    at = demo_app.run()  # no query yet: the gallery is on the page (its tab closed)
    examples = [b.key for b in at.button if b.key and b.key.startswith("example_")]
    assert len(examples) == demo_env.config.ui.gallery_size
    assert examples == [b.key for b in AppTest.from_file(APP, default_timeout=60).run().button
                        if b.key and b.key.startswith("example_")]  # deterministic
    item_id = examples[0].removeprefix("example_")
    at.button(key=examples[0]).click().run()
    assert_clean(at)
    ids = result_ids(at)
    assert len(ids) == demo_env.config.ann_index.k and item_id not in ids
    assert at.query_params["item"] == item_id
    at.session_state["input_tab"] = INPUT_TABS[0]  # "Paste a link", with these results shown
    at.run()
    assert result_ids(at) == ids
    assert not [b for b in at.button if b.key and b.key.startswith("example_")]  # not re-sent


# ---------------------------------------------------------------- controls and actions


def test_k_slider_changes_the_result_count(demo_app, http_server):
    at = search_url(demo_app, http_server.url("/img/blue.png"))
    for k in (3, 7):
        at.slider(key="k").set_value(k).run()
        assert len(result_ids(at)) == k
        assert len(distances(at)) == k


def test_filters_keep_only_matching_products(demo_app, demo_env, http_server):
    items = catalog(demo_env)
    garment = items["garment"].value_counts().index[0]
    gender = items.loc[items["garment"] == garment, "gender"].value_counts().index[0]
    at = search_url(demo_app, http_server.url("/img/red.jpg"))
    at.multiselect(key="filter_garment").set_value([garment]).run()
    at.multiselect(key="filter_gender").set_value([gender]).run()
    assert_clean(at)
    ids = result_ids(at)
    expected = min(demo_env.config.ann_index.k,
                   int(((items["garment"] == garment) & (items["gender"] == gender)).sum()))
    assert len(ids) == expected > 0
    assert set(items.loc[ids, "garment"]) == {garment}
    assert set(items.loc[ids, "gender"]) == {gender}
    assert any(c.value.startswith("Filtered by") for c in at.caption)


def test_more_like_this_excludes_the_product(demo_app, demo_env, http_server):
    at = search_url(demo_app, http_server.url("/img/red.jpg"))
    chosen = result_ids(at)[2]
    at.button(key=f"s_more_{chosen}").click().run()
    assert_clean(at)
    ids = result_ids(at)
    assert len(ids) == demo_env.config.ann_index.k and chosen not in ids
    assert at.query_params == {"item": chosen}
    assert any(f"id {chosen}" in m.value for m in at.markdown)


def test_shortlist_collects_results_for_download(demo_app, http_server):
    at = search_url(demo_app, http_server.url("/img/red.jpg"))
    assert not [b for b in at.download_button if b.key == "shortlist_csv"]
    first, second = result_ids(at)[:2]
    at.button(key=f"s_short_{first}").click().run()
    at.button(key=f"s_short_{second}").click().run()
    assert_clean(at)
    assert list(at.session_state["shortlist"]) == [first, second]
    assert at.download_button(key="shortlist_csv").label == "Download CSV"
    assert at.button(key=f"s_short_{first}").label == "✓ Shortlisted"
    at.button(key=f"s_short_{first}").click().run()  # a second click removes it
    assert list(at.session_state["shortlist"]) == [second]


def test_shortlist_csv_has_the_columns_and_defuses_formulas():
    rows = [exports.shortlist_row(
        {"id": "7", "name": "=HYPERLINK(\"http://x\")", "distance": 0.123456, "band": "similar",
         "garment": "Tshirt", "colour": None, "image_path": "https://cdn.shop.example/7.jpg",
         "image_file": "/srv/cache/ab12.jpg", "product_url": "https://shop.example/7"},
        ["garment", "colour"], "upload a.jpg"),
        exports.shortlist_row({"id": "8", "name": "Local", "distance": 0.2, "band": "similar",
                              "image_path": "images/8.jpg", "image_file": "/srv/data/images/8.jpg",
                              "product_url": "javascript:alert(1)"}, ["garment", "colour"], "q")]
    table = pd.read_csv(io.BytesIO(exports.shortlist_csv(rows, ["garment", "colour"])),
                        dtype=str, keep_default_na=False)
    assert list(table.columns) == ["id", "name", "distance", "band", "garment", "colour",
                                   "image_url", "product_url", "query"]
    row, local = table.iloc[0].to_dict(), table.iloc[1].to_dict()
    assert row["name"].startswith("'=")
    assert row["distance"] == "0.1235" and row["colour"] == ""
    assert row["image_url"] == "https://cdn.shop.example/7.jpg"
    assert row["product_url"] == "https://shop.example/7"
    assert (local["id"], local["name"], local["image_url"], local["product_url"]) == (
        "8", "Local", "", "")  # a server's file path or a script link is never exported
    assert "/srv/" not in table.to_csv() and "images/8.jpg" not in table.to_csv()


# ---------------------------------------------------------------- errors and other pages


def test_missing_index_names_the_build_command(demo_env, tmp_path, monkeypatch):
    config = variant_config(demo_env, tmp_path,
                            paths__ann_index_path=str(tmp_path / "empty_index"))
    (tmp_path / "empty_index").mkdir()
    at = app_for(config, monkeypatch).run()
    assert not at.exception
    assert len(at.error) == 1
    assert "No index found" in at.error[0].value
    assert f"python build_index.py --config {config}" in at.error[0].value


def rebuild(index: Path) -> None:
    """What build_index.py ends with: a freshly built store saved as a new version."""
    old = IndexStore.load(index)
    fresh = IndexStore.build(old.vectors, old.items, backend=old.manifest["backend"],
                             space=old.space, index_params=old.manifest["index_params"],
                             query_params=old.manifest["query_params"], manifest=old.manifest)
    fresh.save(index)


def test_rebuilt_index_and_edited_config_are_used_without_restart(demo_env, tmp_path,
                                                                  monkeypatch):
    index = tmp_path / "index"
    shutil.copytree(demo_env.config.paths.ann_index_path, index)
    config = variant_config(demo_env, tmp_path, paths__ann_index_path=str(index))
    use_config(config, monkeypatch)
    report = AppTest.from_function(on_page, kwargs={"name": "report"}, default_timeout=60).run()
    old_version = current_version(index)
    assert display.md(old_version) in report.caption[0].value
    rebuild(index)
    report.run()  # the old version serves while the new one loads in the background
    assert_clean(report)
    LOADER.wait(config.resolve())
    report.run()
    assert current_version(index) != old_version
    assert display.md(current_version(index)) in report.caption[0].value
    config.write_text(config.read_text().replace("title: Visual similarity search",
                                                 "title: Edited title"))
    LOADER.wait(config.resolve())
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.title[0].value.startswith("Edited title")


def starting_page() -> None:
    """AppTest script: the page a visitor sees while the service is still loading."""
    import front_end
    from app.service_loader import Loading as NotReady

    front_end.show_starting(NotReady("config|digest|version"))


def test_a_visitor_during_start_up_sees_a_loading_state():
    at = AppTest.from_function(starting_page, default_timeout=60).run()
    assert not at.exception
    assert at.info[0].value.startswith("Starting up: loading the model and the index")


def test_loader_serves_the_old_version_while_a_rebuilt_one_loads(demo_env, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(demo_env.config.paths.ann_index_path, index)
    config = variant_config(demo_env, tmp_path, paths__ann_index_path=str(index)).resolve()
    first = LOADER.wait(config)
    assert first.service is not None and first.loading is None
    rebuild(index)
    during = LOADER.request(config)
    after = LOADER.wait(config)
    assert after.service is not None and after.service is not first.service
    assert after.key.endswith(current_version(index)) and after.key != first.key
    assert during.loading is not None  # the rebuilt version is loading in the background...
    assert during.service is first.service  # ...while the old one serves: never a blank page
    assert during.readiness.ready and "loading" in during.readiness.detail


def test_readiness_says_loading_then_ready_and_names_an_error(demo_env, tmp_path):
    config = variant_config(demo_env, tmp_path / "good").resolve()
    loader = ServiceLoader()
    started = loader.request(config)  # the first request starts the load: nothing serves yet
    assert started.service is None
    assert started.readiness.status == "loading" and not started.readiness.ready
    done = loader.wait(config).readiness
    indexed = IndexStore.load(Path(demo_env.config.paths.ann_index_path)).size
    assert done.ready and done.detail == f"serving {indexed:,} items"
    (tmp_path / "no_index").mkdir()
    broken = variant_config(demo_env, tmp_path / "broken",
                            paths__ann_index_path=str(tmp_path / "no_index")).resolve()
    failed = loader.wait(broken).readiness
    assert failed.status == "error" and not failed.ready
    assert "No index found" in failed.detail


def test_ready_only_after_the_warm_up(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)  # the service is loaded
    monkeypatch.setattr(front_end, "WARMED_UP", threading.Event())
    assert front_end.readiness() == Readiness("loading", "preparing the pages")
    front_end.warm_up()  # what the server runs at start, in a thread
    assert front_end.WARMED_UP.is_set() and front_end.readiness().ready


def test_an_unchanged_config_is_parsed_once_and_an_edited_one_again(demo_env, tmp_path):
    config = variant_config(demo_env, tmp_path).resolve()
    old = time.time() - 600
    os.utime(config, (old, old))
    loader = ServiceLoader()
    first = loader.request(config).key
    parsed = loader._configs[str(config)][1][0]
    assert loader.request(config).key == first
    assert loader._configs[str(config)][1][0] is parsed  # not parsed again
    config.write_text(config.read_text().replace("title: Visual similarity search",
                                                 "title: Edited"))
    assert loader.request(config).key != first  # just written: read again, not from the cache


def test_missing_config_is_a_message(tmp_path, monkeypatch):
    at = app_for(tmp_path / "nowhere.yml", monkeypatch).run()
    assert not at.exception
    assert "file not found" in at.error[0].value


def test_report_page_shows_the_manifest(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "report"}, default_timeout=60).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    manifest = IndexStore.load(demo_env.config.paths.ann_index_path).manifest
    assert metrics["Catalog items"] == metrics["Indexed"] == str(len(catalog(demo_env)))
    assert metrics["Skipped items"] == "0"
    assert metrics["Model"] == demo_env.config.model.backbone
    assert manifest["model"]["checksum"][:12] in at.caption[0].value
    assert metrics["Index recall@10"] == f"{manifest['metrics']['recall_at_k']:.3f}"
    assert metrics["Search latency p50"].endswith(" ms")
    assert at.selectbox(key="report_task").options == [  # readable names of the task columns
        display.column_title(c) for c in demo_env.config.task_columns]


def test_explore_page_searches_with_the_picked_product(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "explore"}, default_timeout=60)
    item_id = catalog(demo_env).index[3]
    at.session_state["explore_item"] = item_id  # what a click on the map's point sets
    at.run()
    assert_clean(at)
    ids = result_ids(at, "x")
    assert len(ids) == demo_env.config.ann_index.k and item_id not in ids


# ---------------------------------------------------------------- pure helpers


def test_catalog_text_is_escaped_for_markdown():
    text = display.md("<img src=x onerror=alert(1)> **bold** [link](javascript:x) :red[hi]")
    assert not re.search(r"(?<!\\)[<>*\[\]():]", text)  # every markup character escaped
    assert re.sub(r"\\(.)", r"\1", text) == \
        "<img src=x onerror=alert(1)> **bold** [link](javascript:x) :red[hi]"
    assert display.safe_link("javascript:alert(1)") is None
    assert display.safe_link(" https://shop.example/p ") == "https://shop.example/p"


def test_markdown_links_cannot_be_ended_early_or_marked_up():
    link = display.markdown_link("a*b", "http://h/p (1)?q=<x>&r=[y]")
    assert link == r"[a\*b](http://h/p%20%281%29?q=%3Cx%3E&r=%5By%5D)"
    assert display.markdown_link("s", "http://h/?k=3&url=x") == "[s](http://h/?k=3&url=x)"


def test_labels_marked_where_they_match_the_prediction():
    predicted = {"garment": [("Tshirt", 0.92), ("Dress", 0.05)], "colour": [("Blue", 0.71)]}
    assert display.predicted_line(predicted) == "Tshirt 92% · Blue 71%"
    row = {"garment": "Tshirt", "colour": "Red", "gender": "Men"}
    line = display.label_line(row, ["garment", "colour", "gender"],
                                display.top_classes(predicted))
    assert line == "Tshirt ✓ · Red · Men"


def test_gallery_rows_are_deterministic_and_varied():
    items = pd.DataFrame({"id": [str(i) for i in range(12)],
                          "garment": ["a", "a", "a", "b", "b", "c"] * 2})
    rows = display.gallery_rows(items, 3, "garment")
    assert sorted(items.loc[rows, "garment"]) == ["a", "b", "c"]
    shuffled = items.sample(frac=1, random_state=3).reset_index(drop=True)
    again = display.gallery_rows(shuffled, 3, "garment")
    assert list(shuffled.loc[again, "id"]) == list(items.loc[rows, "id"])  # same products
    assert display.gallery_rows(items, 0, "garment") == []


def test_map_selection_event_gives_the_product_id():
    assert display.picked_id({"selection": {"pick": [{"id": "42", "map_x": 1.0}]}}) == "42"
    assert display.picked_id({"selection": {"pick": []}}) is None
    assert display.picked_id(None) is None


def test_config_path_from_argv_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(front_end.CONFIG_ENV, str(tmp_path / "env.yml"))
    assert front_end.config_path_from_args(["--config", str(tmp_path / "arg.yml")]) == \
        tmp_path / "arg.yml"
    assert front_end.config_path_from_args(["--co"]) == tmp_path / "env.yml"
    monkeypatch.delenv(front_end.CONFIG_ENV)
    assert front_end.config_path_from_args([]) == front_end.DEFAULT_CONFIG
