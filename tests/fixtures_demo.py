"""One tiny synthetic catalog, trained model and index per test session, shared by every test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from config import AppConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DemoEnv:
    folder: Path
    config_path: Path
    config: AppConfig

    def fresh_config(self) -> AppConfig:
        return load_config(self.config_path)


def write_demo_config(folder: Path, **overrides) -> Path:
    """The shipped demo config, pointed at `folder`, small and quick for tests."""
    raw = yaml.safe_load((ROOT / "config" / "config.yml").read_text())
    raw["paths"] = {"images_dataframe_path": "catalog.csv", "trained_model_path": "model.pt",
                    "vectors_path": "vectors", "ann_index_path": "index",
                    "image_cache_path": "image_cache"}
    raw["model"].update(input_size=32, batch_size=64, num_workers=0, num_threads=2)
    raw["training"].update(epochs=2)
    raw["ann_index"]["index_time"]["indexThreadQty"] = 1
    raw["evaluation"]["max_queries"] = 60
    raw["download"]["allow_private_networks"] = ["127.0.0.0/8"]
    for dotted, value in overrides.items():
        *parents, last = dotted.split("__")
        section = raw
        for part in parents:
            section = section[part]
        section[last] = value
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_demo(folder: Path, count: int = 240, seed: int = 1, **overrides) -> DemoEnv:
    from build_index import build
    from ingest.synthetic import generate_catalog
    from vectorizer.train import train

    folder.mkdir(parents=True, exist_ok=True)
    config_path = write_demo_config(folder, **overrides)
    config = load_config(config_path)
    generate_catalog(Path(config.paths.images_dataframe_path), count, seed)
    train(config, progress=False)
    build(config, quiet=True)
    return DemoEnv(folder, config_path, config)


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory) -> DemoEnv:
    return make_demo(tmp_path_factory.mktemp("demo"))


def assert_round_trip_identical(model, meta: dict, path: Path, size: int, count: int = 4) -> dict:
    """Save, load, and check both models give identical vectors; returns the loaded meta."""
    import numpy as np
    import torch

    from vectorizer.checkpoint import load_checkpoint, save_checkpoint
    from vectorizer.encoder import Encoder

    save_checkpoint(path, model, meta)
    copy, loaded_meta = load_checkpoint(path)
    images = torch.randint(0, 255, (count, 3, size, size), dtype=torch.uint8)
    first = Encoder(model, meta, "a", "fp32").forward(images)[0]
    second = Encoder(copy, loaded_meta, "b", "fp32").forward(images)[0]
    np.testing.assert_array_equal(first, second)
    return loaded_meta
