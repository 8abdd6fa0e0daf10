"""build_index.py end to end: incremental vectors, bad images, stale index, crash safety, CLIs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from copy import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from build_index import build
from config import load_config
from index_store.base import IndexStaleError
from index_store.store import IndexStore, current_version
from ingest.synthetic import generate_catalog
from search import SearchService
from tests.fixtures_demo import ROOT, write_demo_config
from tests.fixtures_http import sample_images


def catalog_env(folder: Path, demo_env, count: int, **overrides):
    """A config in `folder` that reuses the session's trained model on a new catalog."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = write_demo_config(folder, **overrides)
    config = load_config(config_path)
    config.paths.trained_model_path = demo_env.config.paths.trained_model_path
    if count:
        generate_catalog(Path(config.paths.images_dataframe_path), count, seed=7)
    return config


def test_reruns_reuse_vectors_and_new_products_are_the_only_ones_computed(tmp_path, demo_env):
    config = catalog_env(tmp_path, demo_env, 60)
    assert build(config, quiet=True)["vectors_computed"] == 60
    again = build(config, quiet=True)
    assert (again["vectors_computed"], again["vectors_from_cache"]) == (0, 60)
    config.ann_index.index_time.M = 8
    retuned = build(config, quiet=True)
    assert retuned["vectors_computed"] == 0 and retuned["version"] != again["version"]
    generate_catalog(Path(config.paths.images_dataframe_path), 160, seed=7)
    grown = build(config, quiet=True)
    assert (grown["vectors_computed"], grown["items_indexed"]) == (100, 160)
    assert build(config, rebuild=True, quiet=True)["vectors_computed"] == 160


def test_colour_distributions_are_stored_cached_and_rank_like_computing_them(tmp_path,
                                                                             demo_env):
    config = catalog_env(tmp_path, demo_env, 40)
    build(config, quiet=True)
    service = SearchService.load(config)
    stored = service.store.colours
    assert stored.column == "colour" and stored.values.shape == (40, len(
        service.encoder.classes["colour"]))
    np.testing.assert_allclose(stored.values.sum(axis=1), 1.0, atol=1e-4)
    without = copy(service.store)
    without.colours = None  # an index built before colours were stored: computed on demand
    lazy = SearchService(config, service.encoder, without)
    assert lazy.colours is not service.colours
    for row in (0, 7, 21):
        np.testing.assert_allclose(lazy.colours.of_rows([row]), service.colours.of_rows([row]),
                                   atol=1e-4)
        item_id = service.items["id"].iloc[row]
        assert (service.search_item(item_id, 8, colour="same").results["id"].tolist()
                == lazy.search_item(item_id, 8, colour="same").results["id"].tolist())
    assert build(config, quiet=True)["vectors_computed"] == 0  # both caches answer
    shutil.rmtree(next(Path(config.paths.vectors_path).glob("*.colour")))
    assert build(config, quiet=True)["vectors_computed"] == 40  # vectors alone are not enough
    np.testing.assert_allclose(SearchService.load(config).store.colours.values, stored.values,
                               atol=1e-5)
    config.colour.source = "histogram"
    build(config, quiet=True)
    assert SearchService.load(config).store.colours is None


def test_vectors_of_another_precision_are_never_reused(tmp_path, demo_env):
    config = catalog_env(tmp_path, demo_env, 30, model__precision="fp32")
    assert build(config, quiet=True)["vectors_computed"] == 30
    config.model.precision = "bf16"
    assert build(config, quiet=True)["vectors_computed"] == 30
    config.model.precision = "fp32"
    assert build(config, quiet=True)["vectors_computed"] == 0


def test_every_bad_catalog_image_is_skipped_or_converted_without_shifting_rows(tmp_path,
                                                                                 demo_env):
    config = catalog_env(tmp_path, demo_env, 0)
    images = tmp_path / "images"
    images.mkdir()
    samples = sample_images()
    samples["zero.jpg"] = b""
    samples["notimage.jpg"] = b"<html><body>not an image</body></html>"
    for name, content in samples.items():
        (images / name).write_bytes(content)
    names = [*samples, "missing.jpg"]
    table = pd.DataFrame({"id": [f"p{i}" for i in range(len(names))], "name": names,
                          "garment": "Bag", "colour": "Red", "pattern": "Solid",
                          "gender": "Women", "image_path": [f"images/{n}" for n in names]})
    table.to_csv(config.paths.images_dataframe_path, index=False)
    summary = build(config, quiet=True)
    skipped = pd.read_csv(summary["skipped_file"])
    expected_bad = {"truncated.jpg", "zero.jpg", "notimage.jpg", "missing.jpg", "bomb.png",
                    "big.png"}  # big.png: a 7000x7000 header with no pixel data
    assert set(skipped["image_path"].str.removeprefix("images/")) == expected_bad
    assert skipped["reason"].str.len().gt(3).all()
    assert summary["items_indexed"] == len(names) - len(expected_bad)
    service = SearchService.load(config)
    for row, item in service.items.iterrows():
        image = __import__("vectorizer.images", fromlist=["open_image"]).open_image(
            Path(item["image_file"]), config.download.max_pixels)
        embedded = service.encoder.embed_images([image])
        np.testing.assert_allclose(service.store.vectors[row], embedded.vectors[0], atol=1e-4)
        np.testing.assert_allclose(service.colours.of_rows([row])[0],  # stored at build time
                                   embedded.probabilities["colour"][0], atol=1e-4)


def test_manifest_mismatch_names_what_changed_but_query_settings_do_not(tmp_path, demo_env):
    config = catalog_env(tmp_path, demo_env, 30)
    build(config, quiet=True)
    config.ann_index.query_time.efSearch = 7
    config.ann_index.k = 3
    config.ui.gallery_size = 2
    assert SearchService.load(config).store.size == 30
    table_path = Path(config.paths.images_dataframe_path)
    table_path.write_text(table_path.read_text().replace("Women", "Ladies"))
    with pytest.raises(IndexStaleError) as caught:
        SearchService.load(config)
    assert "catalog_checksum" in str(caught.value) and "build_index.py" in str(caught.value)
    config.ann_index.init_time.space = "l2"
    with pytest.raises(IndexStaleError, match="space"):
        SearchService.load(config)


def test_a_crash_while_saving_leaves_the_previous_index_serving(tmp_path, demo_env, monkeypatch):
    config = catalog_env(tmp_path, demo_env, 30)
    build(config, quiet=True)
    root = Path(config.paths.ann_index_path)
    before = current_version(root)
    query = SearchService.load(config).store.vectors[3]
    expected = IndexStore.load(root).search(query, 5)["id"].tolist()

    def crash(self, folder, name):
        (folder / "vectors.npy").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(IndexStore, "_write_version", crash)
    config.ann_index.index_time.M = 8
    with pytest.raises(KeyboardInterrupt):
        build(config, quiet=True)
    assert current_version(root) == before
    assert IndexStore.load(root).search(query, 5)["id"].tolist() == expected


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_dry_run_validates_and_builds_nothing(tmp_path, demo_env):
    config = catalog_env(tmp_path / "dry", demo_env, 12)
    result = run_cli("build_index.py", "--config", str(config.config_path), "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["items"] == 12 and plan["current_version"] is None
    assert not Path(config.paths.ann_index_path).exists()


def test_build_cli_reports_config_errors_without_traceback(tmp_path):
    config_path = write_demo_config(tmp_path, ann_index__index_time__M=0)
    result = run_cli("build_index.py", "--config", str(config_path))
    assert result.returncode == 2
    assert "ann_index.index_time.M: must be >= 2, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_search_cli_json_and_bulk_matching(tmp_path, demo_env, http_server):
    image = sorted((demo_env.folder / "images").glob("*.jpg"))[4]
    result = run_cli("search.py", "--config", str(demo_env.config_path), "--k", "3",
                     "--filter", "colour=Red", "--json", str(image))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert len(payload["results"]) == 3
    assert all(row["colour"] == "Red" for row in payload["results"])
    assert set(payload["predicted"]) == {"garment", "colour", "pattern"}
    queries = tmp_path / "queries.csv"
    pd.DataFrame({"image": [str(image), http_server.url("/404"),
                            http_server.url("/img/red.jpg")]}).to_csv(queries, index=False)
    result = run_cli("search.py", "--config", str(demo_env.config_path), "--k", "2",
                     "--bulk-out", str(tmp_path / "matches.csv"), str(queries))
    assert result.returncode == 0, result.stderr
    matches = pd.read_csv(tmp_path / "matches.csv")
    assert matches.groupby("query")["status"].first().tolist().count("failed") == 1
    assert (matches["status"] == "ok").sum() == 4
    assert "HTTP 404" in matches.loc[matches["status"] == "failed", "reason"].iloc[0]


def test_url_images_are_downloaded_once_and_failures_retried(tmp_path, demo_env, http_server):
    config = catalog_env(tmp_path, demo_env, 0)
    names = ["red.jpg", "blue.png", "palette.png"]
    table = pd.DataFrame({"id": ["u1", "u2", "u3", "u4"], "name": ["a", "b", "c", "d"],
                          "garment": "Bag", "colour": "Red", "pattern": "Solid",
                          "gender": "Women",
                          "image_path": [http_server.url(f"/img/{n}") for n in names]
                          + [http_server.url("/404")]})
    table.to_csv(config.paths.images_dataframe_path, index=False)
    summary = build(config, quiet=True)
    assert summary["items_indexed"] == 3 and summary["items_skipped"] == 1
    hits = {name: http_server.hits[f"/img/{name}"] for name in names}
    build(config, quiet=True)
    assert {name: http_server.hits[f"/img/{name}"] for name in names} == hits
    shutil.rmtree(config.paths.ann_index_path)


def test_an_exact_build_never_imports_nmslib(tmp_path, demo_env):
    config = catalog_env(tmp_path, demo_env, 24, backend="exact")
    script = ("import sys; from build_index import build; from config import load_config; "
              f"config = load_config({str(config.config_path)!r}); "
              f"config.paths.trained_model_path = {str(config.paths.trained_model_path)!r}; "
              "summary = build(config, quiet=True); "
              "print(summary['items_indexed'], 'nmslib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["24", "False"]
