"""Config loading: every mistake is a ConfigError naming the YAML key; relative paths resolve."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "config.yml"


def write_config(folder: Path, changes: dict) -> Path:
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        section = raw
        for part in parents:
            section = section[part]
        if value is DELETE:
            del section[last]
        else:
            section[last] = value
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


DELETE = object()


def error_for(tmp_path: Path, changes: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, changes))
    return str(caught.value)


def test_shipped_configs_load():
    for name in ("config.yml", "fashion.yml"):
        config = load_config(ROOT / "config" / name)
        assert config.paths.trained_model_path.is_absolute()


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    config = load_config(write_config(tmp_path, {"paths.vectors_path": "sub/vectors"}))
    assert config.paths.vectors_path == tmp_path / "sub" / "vectors"


@pytest.mark.parametrize(("changes", "expected"), [
    ({"ann_index.index_time.M": 0}, "ann_index.index_time.M: must be >= 2, got 0"),
    ({"ann_index.init_time.space": "cosine"},
     "ann_index.init_time.space: must be one of 'cosinesimil' or 'l2', got 'cosine'"),
    ({"backend": "faiss"}, "backend: must be one of 'nmslib', 'exact' or 'milvus', got 'faiss'"),
    ({"model.batch_size": "big"}, "model.batch_size: Input should be a valid integer"),
    ({"model.input_size": 8}, "model.input_size: must be >= 16, got 8"),
    ({"paths.images_dataframe_path": DELETE},
     "paths.images_dataframe_path: required key is missing"),
    ({"ann_index.query_time.ef_search": 10}, "ann_index.query_time.ef_search: unknown key; "
                                             "allowed here: efSearch"),
    ({"training.tasks": [{"column": "nope"}]},
     "training.tasks: columns ['nope'] must also be listed in dataframe.label_fields"),
    ({"training.tasks": [{"column": "colour", "min_count": 0}]},
     "training.tasks.0.min_count: must be >= 1, got 0"),
    ({"ui.bands": {"near_duplicate": 0.5, "similar": 0.1}},
     "ui.bands: similar must be >= near_duplicate"),
])
def test_errors_name_the_key(tmp_path, changes, expected):
    assert expected in error_for(tmp_path, changes)


def test_augment_is_a_switch_or_a_list_of_named_augmentations(tmp_path):
    every = ["flip", "warp", "background", "lighting", "blur"]
    assert load_config(write_config(tmp_path, {"training.augment": True})).training.augment == every
    assert load_config(write_config(tmp_path, {"training.augment": False})).training.augment == []
    chosen = load_config(write_config(tmp_path, {"training.augment": ["flip", "background"]}))
    assert chosen.training.augment == ["flip", "background"]
    message = error_for(tmp_path, {"training.augment": ["flip", "colour"]})
    assert "training.augment.1: must be one of" in message and "'colour'" in message


def test_warp_share_is_a_share_of_the_images(tmp_path):
    assert load_config(write_config(tmp_path, {})).training.warp_share == 1.0
    assert load_config(write_config(tmp_path, {"training.warp_share": 0.3})).training.warp_share \
        == 0.3
    assert "training.warp_share" in error_for(tmp_path, {"training.warp_share": 0})
    assert "training.warp_share" in error_for(tmp_path, {"training.warp_share": 1.5})


def test_unknown_top_level_section(tmp_path):
    path = write_config(tmp_path, {})
    path.write_text(path.read_text() + "\nsurprise: 1\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "surprise: unknown key; allowed here: paths, dataframe" in message


def test_missing_config_file_and_bad_yaml(tmp_path):
    assert "--config: file not found" in str(
        pytest.raises(ConfigError, load_config, tmp_path / "none.yml").value)
    broken = tmp_path / "broken.yml"
    broken.write_text("paths: [unclosed\n")
    assert "not valid YAML" in str(pytest.raises(ConfigError, load_config, broken).value)


def test_cli_reports_config_error_without_traceback(tmp_path):
    path = write_config(tmp_path, {"ann_index.index_time.M": 0})
    result = subprocess.run([sys.executable, "-m", "ingest.synthetic", "--config", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "ann_index.index_time.M: must be >= 2, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_milvus_uri_defaults_beside_the_index_and_resolves_relative_paths(tmp_path):
    config = load_config(write_config(tmp_path, {"backend": "milvus"}))
    assert config.milvus.uri == str(Path(config.paths.ann_index_path) / "milvus.db")
    assert config.milvus.is_lite
    config = load_config(write_config(tmp_path, {"milvus.uri": "lite/index.db"}))
    assert config.milvus.uri == str(tmp_path / "lite" / "index.db")
    config = load_config(write_config(tmp_path, {"milvus.uri": "https://milvus.internal:19530"}))
    assert config.milvus.uri == "https://milvus.internal:19530" and not config.milvus.is_lite


@pytest.mark.parametrize(("changes", "expected"), [
    ({"milvus.uri": "milvus.sqlite"}, "milvus.uri: 'milvus.sqlite' is neither a Milvus Lite "
                                      "file (a path ending in .db)"),
    ({"milvus.index_type": "HNSWX"}, "milvus.index_type: must be one of"),
    ({"milvus.collection_prefix": "my-shop"}, "milvus.collection_prefix"),
    ({"milvus.token_env": "MY TOKEN"}, "milvus.token_env"),
    ({"milvus.ef": 0}, "milvus.ef: must be >= 1"),
    ({"milvus.consistency_level": "Weak"}, "milvus.consistency_level: must be one of"),
    ({"backend": "milvusx"}, "backend: must be one of"),
])
def test_milvus_errors_name_the_key(tmp_path, changes, expected):
    assert expected in error_for(tmp_path, changes)
