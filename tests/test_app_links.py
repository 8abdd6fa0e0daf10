"""The app keeps the user's work: share links with k and filters, the saved shortlist, links
without a scheme, the ✓ reference, readable names, the Explore and Report charts (AppTest)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from app import charts, display
from app.shortlists import ShortlistStore
from tests.fixtures_http import make_test_image
from tests.test_front_end import (
    APP,
    app_for,
    assert_clean,
    catalog,
    on_page,
    result_ids,
    search_url,
    use_config,
    variant_config,
    with_examples,
)

FIELDS = ["garment", "colour", "pattern", "gender"]


@pytest.fixture()
def demo_app(demo_env, monkeypatch) -> AppTest:
    return app_for(demo_env.config_path, monkeypatch)


def params(at: AppTest) -> dict[str, list[str]]:
    """The app's query parameters, every value of each."""
    return {key: list(at.query_params.get_all(key)) if hasattr(at.query_params, "get_all")
            else list(values) if isinstance(values, list) else [values]
            for key, values in at.query_params.items()}


def open_link(query: dict[str, list[str]]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, values in query.items():
        at.query_params[key] = values
    return at.run()


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def share_link_shown(at: AppTest) -> str | None:
    """The address of the "Link to this search" caption's link (None when there is none)."""
    for text in captions(at):
        found = re.search(r"Link to this search.*\]\((\S+)\)$", text)
        if found:
            return found.group(1)
    return None


# ---------------------------------------------------------------- share links


def test_share_link_carries_k_and_filters_and_reopens_them(demo_app, demo_env):
    items = catalog(demo_env)
    item_id = items.index[5]
    garment = items["garment"].value_counts().index[0]
    demo_app.query_params["item"] = item_id
    at = demo_app.run()
    at.slider(key="k").set_value(3).run()
    at.multiselect(key="filter_garment").set_value([garment]).run()
    assert_clean(at)
    sent = params(at)
    assert sent == {"item": [item_id], "k": ["3"], "garment": [garment]}
    link = share_link_shown(at)
    assert link.startswith("?") or "?" in link
    assert f"item={item_id}" in link and "k=3" in link and f"garment={garment}" in link
    shared = open_link(sent)
    assert_clean(shared)
    assert shared.slider(key="k").value == 3
    assert shared.multiselect(key="filter_garment").value == [garment]
    assert result_ids(shared) == result_ids(at) and len(result_ids(at)) == 3
    assert set(items.loc[result_ids(shared), "garment"]) == {garment}


def test_shared_link_with_unknown_values_opens_with_defaults(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)
    at = open_link({"item": [catalog(demo_env).index[2]], "k": ["9999"],
                    "garment": ["No such garment"], "colour": ["Red", "Plaid"]})
    assert_clean(at)
    assert at.slider(key="k").value == demo_env.config.ann_index.k
    assert at.multiselect(key="filter_garment").value == []
    assert at.multiselect(key="filter_colour").value == ["Red"]


def test_an_upload_says_it_cannot_be_shared(demo_app):
    at = demo_app.run()
    at.file_uploader(key="upload").upload("blue.png", make_test_image("blue", fmt="PNG"),
                                          "image/png").run()
    assert_clean(at)
    assert any("cannot be shared as a link" in text for text in captions(at))
    assert share_link_shown(at) is None and "url" not in params(at)


def test_a_link_without_scheme_gets_one_and_says_so(demo_app, demo_env, http_server):
    bare = http_server.url("/img/red.jpg?bare").removeprefix("http://")
    at = search_url(demo_app, bare)
    assert_clean(at)
    assert len(result_ids(at)) == demo_env.config.ann_index.k
    assert params(at)["url"] == [f"http://{bare}"]
    assert at.text_input(key="url_input").value == f"http://{bare}"
    assert any("no http:// or https://, so http:// was added" in t for t in captions(at))


# ---------------------------------------------------------------- the saved shortlist


def test_shortlist_is_saved_for_this_browser_only(demo_app, demo_env, http_server):
    at = search_url(demo_app, http_server.url("/img/red.jpg"))
    first, second = result_ids(at)[:2]
    at.button(key=f"s_short_{first}").click().run()
    at.button(key=f"s_short_{second}").click().run()
    assert_clean(at)
    owner = at.session_state["browser_id"]
    saved = ShortlistStore(demo_env.config.paths.shortlists_path).load(owner)
    assert list(saved) == [first, second]
    other = search_url(AppTest.from_file(APP, default_timeout=60), http_server.url("/img/red.jpg"))
    assert other.session_state["browser_id"] != owner
    assert other.session_state["shortlist"] == {}
    assert any(h.value == "Shortlist (0)" for h in other.sidebar.header)
    at.button(key="shortlist_clear").click().run()
    assert ShortlistStore(demo_env.config.paths.shortlists_path).load(owner) == {}


def test_shortlist_that_cannot_be_saved_is_a_message(demo_env, http_server, tmp_path,
                                                     monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the shortlists folder should be")
    config = variant_config(demo_env, tmp_path / "cfg", paths__shortlists_path=str(blocker))
    at = search_url(app_for(config, monkeypatch), http_server.url("/img/red.jpg"))
    first = result_ids(at)[0]
    at.button(key=f"s_short_{first}").click().run()
    assert not at.exception
    assert list(at.session_state["shortlist"]) == [first]  # kept in this tab
    assert "paths.shortlists_path" in at.sidebar.warning[0].value


# ---------------------------------------------------------------- labels and names


def test_ticks_compare_with_the_query_products_own_labels(demo_app, demo_env, http_server):
    items = catalog(demo_env)
    item_id = items.index[4]
    demo_app.query_params["item"] = item_id
    at = demo_app.run()
    assert_clean(at)
    own = {c: items.loc[item_id, c] for c in FIELDS}
    assert any("this product's own catalog labels" in t for t in captions(at))
    for result in result_ids(at):
        expected = display.label_line(items.loc[result].to_dict(), FIELDS, own)
        assert expected in captions(at)
    pasted = search_url(AppTest.from_file(APP, default_timeout=60),
                        http_server.url("/img/blue.png?ticks"))
    assert any("the model's guess above" in t for t in captions(pasted))


def test_filter_labels_are_readable_and_configurable(demo_env, tmp_path, monkeypatch):
    config = variant_config(demo_env, tmp_path, ui__column_names={"garment": "Product type"})
    at = app_for(config, monkeypatch).run()
    assert_clean(at)
    assert [m.label for m in at.sidebar.multiselect] == ["Product type", "Colour", "Pattern",
                                                         "Gender"]


def test_gallery_opens_on_the_most_common_classes(demo_app, demo_env):
    at = with_examples(demo_app).run()
    items = catalog(demo_env)
    shown = [b.key.removeprefix("example_") for b in at.button
             if b.key and b.key.startswith("example_")]
    counts = items["garment"].value_counts()
    common = sorted(counts.index, key=lambda name: (-counts[name], name))
    assert list(items.loc[shown[:len(common)], "garment"]) == common


def test_gallery_opens_on_the_configured_classes(demo_env, tmp_path, monkeypatch):
    items = catalog(demo_env)
    rare = items["garment"].value_counts().index[-1]
    config = variant_config(demo_env, tmp_path, ui__gallery_classes=[rare, "No such class"])
    at = with_examples(app_for(config, monkeypatch)).run()
    assert_clean(at)
    shown = [b.key.removeprefix("example_") for b in at.button
             if b.key and b.key.startswith("example_")]
    assert items.loc[shown[0], "garment"] == rare


# ---------------------------------------------------------------- Explore and Report


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def chart_rows(at: AppTest, index: int) -> pd.DataFrame:
    """The data drawn by the page's index-th chart (Streamlit ships it beside the spec)."""
    chart = at.get("vega_lite_chart")[index].proto
    frames = [convert_arrow_bytes_to_pandas_df(named.data.data) for named in chart.datasets]
    if chart.data.data:
        frames.append(convert_arrow_bytes_to_pandas_df(chart.data.data))
    return pd.concat(frames, ignore_index=True)


def colour_scale(spec: dict) -> dict:
    layers = spec.get("layer") or [spec]
    for layer in layers:
        colour = layer.get("encoding", {}).get("color")
        if colour:
            return colour["scale"]
    raise AssertionError("no colour encoding")


def test_explore_draws_colour_names_in_their_colours(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "explore"}, default_timeout=60).run()
    at.selectbox(key="map_colour").set_value("colour").run()
    assert_clean(at)
    scale = colour_scale(chart_specs(at)[0])
    drawn = dict(zip(scale["domain"], scale["range"], strict=True))
    for name in ("Green", "Pink", "Red"):
        assert drawn[name] == charts.NAMED_COLOURS[name.lower()]
    assert at.selectbox(key="map_colour").format_func("garment") == "Garment"


@pytest.mark.parametrize("top", [3])
def test_explore_groups_rare_classes(demo_env, tmp_path, monkeypatch, top):
    config = variant_config(demo_env, tmp_path, ui__map_top_classes=top)
    use_config(config, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "explore"}, default_timeout=60).run()
    at.selectbox(key="map_colour").set_value("garment").run()
    assert_clean(at)
    scale = colour_scale(chart_specs(at)[0])
    assert len(scale["domain"]) == top + 1 and scale["domain"][-1] == charts.OTHER
    assert any("ui.map_top_classes" in t for t in captions(at))


def test_report_counts_queries_and_lists_every_class(demo_env, monkeypatch):
    use_config(demo_env.config_path, monkeypatch)
    at = AppTest.from_function(on_page, kwargs={"name": "report"}, default_timeout=60).run()
    at.selectbox(key="report_task").set_value("garment").run()
    assert_clean(at)
    from index_store.store import IndexStore

    manifest = IndexStore.load(demo_env.config.paths.ann_index_path).manifest
    per_class = manifest["metrics"]["tasks"]["garment"]["per_class"]
    classes = sorted(catalog(demo_env)["garment"].unique())
    rows = chart_rows(at, -1).set_index("class")
    assert sorted(rows.index) == classes  # every class on the chart, scored or not
    for name in classes:
        queries = per_class.get(name, {}).get("queries", 0)
        expected = "no test queries" if not queries else (
            f"{per_class[name]['map_at_k']:.2f} (n={queries})")
        assert rows.loc[name, "label"] == expected
    unscored = [name for name in classes if not per_class.get(name, {}).get("queries")]
    if unscored:
        assert any(t.startswith("No test queries, so not scored") and all(
            display.md(n) in t for n in unscored) for t in captions(at))
    assert at.selectbox(key="report_task").format_func("garment") == "Garment"
