"""Matching a list of links (search.py's bulk path, used by the "Match a list" page)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from config import load_config
from search import QueryListError, SearchService, match_sources, read_query_list
from tests.fixtures_demo import ROOT


@pytest.mark.parametrize(("content", "column", "cap", "message"), [
    (b"", None, None, "The CSV is empty"),
    (b"  \n\n", None, None, "The CSV is empty"),
    (b"image\n", None, None, "a header but no rows"),
    (b"image,sku\nhttp://a/1.jpg,1\n", "link", None, "no column 'link' (its columns: image, sku)"),
    (b"image\n" + b"http://a/x.jpg\n" * 6, None, 5, "6 rows; at most 5 are matched at once "
                                                     "(ui.list_max_rows)"),
    (b"image,sku\nhttp://a/1.jpg,1\nhttp://a/2.jpg,2,extra\n", None, None,
     "line 3 has 3 fields but the header has 2"),
    (b"image\n\xff\xfe\x00bad\n", None, None, "not UTF-8"),
])
def test_bad_lists_say_what_is_wrong(content, column, cap, message):
    with pytest.raises(QueryListError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_query_list(content, column, cap)


def test_the_link_column_defaults_to_image_then_the_first():
    assert read_query_list(b"sku,image\n1,http://a/1.jpg\n")[1] == "image"
    table, column = read_query_list(b"\xef\xbb\xbflink,sku\nhttp://a/1.jpg,1\n")  # BOM
    assert column == "link" and table["link"].tolist() == ["http://a/1.jpg"]


def test_every_row_gets_a_status_and_downloads_run_within_the_limit(demo_env, http_server,
                                                                      tmp_path):
    config = load_config(demo_env.config_path)
    config.download.concurrency = 3
    service = SearchService(config, *_model_and_index(demo_env))
    sources = [http_server.url(f"/slow?s=0.3&n={n}") for n in range(7)]
    sources[2] = http_server.url("/404")
    sources[4] = ""
    sources.append(http_server.url("/page/og"))
    seen = []
    result = match_sources(service, sources, 2, progress=lambda done, total: seen.append(
        (done, total)))
    assert seen == [(n, 8) for n in range(1, 9)]
    status = result.drop_duplicates("row").set_index("row")
    assert status["status"].tolist() == ["ok", "ok", "failed", "ok", "failed", "ok", "ok", "ok"]
    assert "does not exist (HTTP 404)" in status.loc[3, "reason"]
    assert status.loc[5, "reason"] == "empty cell"
    assert (result[result["status"] == "ok"].groupby("row").size() == 2).all()
    assert http_server.peak_slow == 3


def _model_and_index(demo_env):
    loaded = SearchService.load(demo_env.config)
    return loaded.encoder, loaded.store


def test_bulk_cli_uses_the_chosen_column(demo_env, http_server, tmp_path):
    queries = tmp_path / "queries.csv"
    pd.DataFrame({"sku": ["1", "2"], "link": [http_server.url("/img/red.jpg"),
                                              http_server.url("/403")]}).to_csv(queries,
                                                                                 index=False)
    out = tmp_path / "matches.csv"
    done = subprocess.run([sys.executable, "search.py", "--config", str(demo_env.config_path),
                           "--k", "2", "--column", "link", "--bulk-out", str(out), str(queries)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    matches = pd.read_csv(out)
    assert matches.groupby("row")["status"].first().tolist() == ["ok", "failed"]
    missing = subprocess.run([sys.executable, "search.py", "--config",
                              str(demo_env.config_path), "--column", "url", "--bulk-out",
                              str(out), str(queries)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no column 'url'" in missing.stderr
