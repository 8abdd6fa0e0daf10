"""The merchandiser tools in the app (AppTest): thumbs up / down, crop, "no confident match",
the colour control, the Report page's bands and judgments, and the "Match a list" page."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from index_store.store import current_version
from judgments.store import JudgmentStore
from tests.test_bands import photo_bytes
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


@pytest.fixture()
def demo_app(demo_env, monkeypatch) -> AppTest:
    return app_for(demo_env.config_path, monkeypatch)


@pytest.fixture()
def own_app(demo_env, tmp_path, monkeypatch):
    """The demo app with its own judgments database (and any other override)."""
    def make(**overrides) -> tuple[AppTest, JudgmentStore]:
        config = variant_config(demo_env, tmp_path / "cfg", **overrides)
        use_config(config, monkeypatch)
        store = JudgmentStore(tmp_path / "cfg" / "judgments.sqlite")
        return AppTest.from_file(APP, default_timeout=60), store
    return make


def page(name: str) -> AppTest:
    return AppTest.from_function(on_page, kwargs={"name": name}, default_timeout=60)


# ---------------------------------------------------------------- judgments


def test_a_thumbs_up_is_stored_with_the_query_and_the_index_version(own_app, demo_env,
                                                                    http_server):
    at, store = own_app()
    url = http_server.url("/img/blue.png?judge")
    at = search_url(at, url)
    first = result_ids(at)[0]
    at.button(key=f"s_up_{first}").click().run()
    assert_clean(at)
    table = store.table()
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["query_kind"], row["query_ref"], row["result_id"], row["verdict"],
            row["rank"]) == ("url", url, first, 1, 1)
    assert len(row["query_hash"]) == 64 and row["colour"] == "similar"
    assert row["index_version"] == current_version(demo_env.config.paths.ann_index_path)
    assert store.query_image(f"{row['query_hash']}|") is not None  # kept for re-scoring
    assert at.button(key=f"s_up_{first}").proto.type == "primary"
    at.button(key=f"s_down_{first}").click().run()
    assert store.table()["verdict"].tolist() == [1, -1]


def test_a_locked_database_keeps_search_working_and_says_judgments_are_not_saved(
        own_app, http_server):
    at, store = own_app(judgments__busy_timeout_s=0.2)
    at = search_url(at, http_server.url("/img/red.jpg?locked"))
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        ids = result_ids(at)
        at.button(key=f"s_up_{ids[0]}").click().run()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not at.exception and not at.error
    assert any("Judgments are not saved" in w.value and "locked" in w.value for w in at.warning)
    assert result_ids(at) == ids  # the results are still there
    at.slider(key="k").set_value(4).run()  # and searching goes on
    assert len(result_ids(at)) == 4


# ---------------------------------------------------------------- crop


def test_a_shared_link_with_a_crop_searches_the_region(demo_app, http_server):
    url = http_server.url("/img/noisy.jpg?crop")
    demo_app.query_params["url"] = url
    demo_app.query_params["crop"] = "10,20,100,120"
    at = demo_app.run()
    assert_clean(at)
    assert len(result_ids(at)) > 0
    assert any("Searched the region 10,20,100,120" in c.value.replace("\\", "")
               for c in at.caption)
    assert at.query_params["crop"] == "10,20,100,120"


@pytest.mark.parametrize(("crop", "text"), [("0,0,0,50", "zero size"),
                                            ("150,150,100,100", "reaches outside the image"),
                                            ("a,b", "four whole numbers")])
def test_a_bad_crop_is_a_message(demo_app, http_server, crop, text):
    demo_app.query_params["url"] = http_server.url("/img/noisy.jpg")
    demo_app.query_params["crop"] = crop
    at = demo_app.run()
    assert not at.exception
    assert len(at.error) == 1 and text in at.error[0].value.replace("\\", "")
    assert result_ids(at) == []


def test_search_this_region_puts_the_box_in_the_link(demo_app, demo_env, http_server):
    at = search_url(demo_app, http_server.url("/img/noisy.jpg?region"))
    whole = result_ids(at)
    assert "crop_search" not in [b.key for b in at.button]  # the tool opens on demand
    at.toggle(key="crop_open").set_value(True).run()
    at.button(key="crop_search").click().run()  # the box as drawn (here: its default)
    assert_clean(at)
    assert at.query_params["crop"] == "0,0,200,200"  # a busy photo: the default is all of it
    assert len(result_ids(at)) == len(whole)
    at.button(key="crop_reset").click().run()
    assert "crop" not in at.query_params and result_ids(at) == whole


# ---------------------------------------------------------------- no confident match


def test_a_photo_of_the_wrong_kind_of_product_says_no_confident_match(demo_app, demo_env):
    at = demo_app.run()
    at.file_uploader(key="upload").upload("street.png", photo_bytes(), "image/png").run()
    assert_clean(at)
    warning = next(w.value for w in at.warning if "No confident match" in w.value)
    assert "in this catalog" in warning
    at.button(key="s_way_crop").click().run()
    assert at.toggle(key="crop_open").value  # the crop tool is open
    only = at.button(key="s_way_only")
    garment = only.label.removeprefix("Only ").removesuffix("?")
    only.click().run()
    assert_clean(at)
    items = catalog(demo_env)
    ids = result_ids(at)
    assert ids and set(items.loc[ids, "garment"]) == {garment}


# ---------------------------------------------------------------- colour


def test_the_colour_control_reranks(demo_app, demo_env):
    items = catalog(demo_env)
    at = with_examples(demo_app).run()
    example = next(b.key for b in at.button if b.key and b.key.startswith("example_"))
    at.button(key=example).click().run()
    assert at.radio(key="colour_mode").value == "similar"
    shares = {}
    for mode in ("any", "same"):
        at.radio(key="colour_mode").set_value(mode).run()
        assert_clean(at)
        colours = items.loc[result_ids(at), "colour"]
        shares[mode] = (colours == items.loc[example.removeprefix("example_"), "colour"]).mean()
    assert shares["same"] >= shares["any"]


# ---------------------------------------------------------------- report page


def test_the_report_page_shows_the_bands_and_the_judged_precision(own_app, demo_env,
                                                                  http_server):
    at, _ = own_app()
    at = search_url(at, http_server.url("/img/red.jpg?report"))
    ids = result_ids(at)
    at.button(key=f"s_up_{ids[0]}").click().run()
    at.button(key=f"s_down_{ids[1]}").click().run()
    report = page("report").run()
    assert_clean(report)
    metrics = {m.label: m.value for m in report.metric}
    assert float(metrics["No confident match beyond"]) >= float(metrics["Similar up to distance"])
    judged = report.dataframe[0].value
    assert judged.iloc[0]["judged"] == 2 and judged.iloc[0]["precision_at_5"] == 0.5
    download = report.get("download_button")[0]
    assert download.proto.label == "Download judgments (CSV)"


# ---------------------------------------------------------------- match a list


def list_csv(rows: list[str], column: str = "link") -> bytes:
    return pd.DataFrame({"sku": [str(n) for n in range(len(rows))], column: rows}).to_csv(
        index=False).encode()


def test_the_list_page_matches_every_row_with_a_status(own_app, http_server):
    at, _ = own_app()
    at = page("list")
    at.run()
    links = [http_server.url("/img/red.jpg?list"), http_server.url("/404"),
             http_server.url("/page/og")]
    at.file_uploader(key="list_upload").upload("links.csv", list_csv(links), "text/csv").run()
    assert at.selectbox(key="list_column").value == "link"  # the column that holds links
    at.button(key="list_run").click().run()
    assert_clean(at)
    assert at.subheader[-1].value == "2 of 3 rows matched"
    table = at.dataframe[0].value
    assert set(table["status"]) == {"ok", "failed"}
    assert table["picture"].dropna().str.startswith("data:image/jpeg;base64,").all()
    assert at.get("download_button")[0].proto.label == "Download matches (CSV)"


@pytest.mark.parametrize(("content", "text"), [
    (b"", "The CSV is empty"),
    (b"link\n", "a header but no rows"),
    (b"link,sku\nhttp://a/1.jpg,1\nhttp://a/2.jpg,2,3\n", "line 3 has 3 fields"),
    (b"link\n" + b"http://a/1.jpg\n" * 4, "4 rows; at most 3 are matched at once"),
])
def test_bad_lists_are_messages(own_app, content, text):
    _, _ = own_app(ui__list_max_rows=3)
    at = page("list")
    at.run()
    at.file_uploader(key="list_upload").upload("links.csv", content, "text/csv").run()
    assert not at.exception
    assert len(at.error) == 1 and text in at.error[0].value.replace("\\", "")
