"""contracts.py: typed checkpoint meta and index manifest read older files; one fingerprint."""

from __future__ import annotations

import math
from pathlib import Path

from config import load_config
from contracts import (
    CheckpointMeta,
    IndexFingerprint,
    IndexManifest,
    index_fingerprint,
    missing_meta,
)
from tests.fixtures_demo import write_demo_config


def test_an_old_minimal_manifest_reads_with_defaults():
    manifest = IndexManifest.model_validate({"format": 1, "backend": "exact", "n_items": 7,
                                             "note": "kept"})
    assert (manifest.version, manifest.built_at, manifest.model.backbone) == ("?", "?", "?")
    assert manifest.items_indexed == manifest.items_in_catalog == 7
    assert manifest.metrics.tasks == {} and manifest.metrics.recall_at_k is None
    assert manifest.as_dict() == {"format": 1, "backend": "exact", "n_items": 7, "note": "kept"}


def test_manifest_metrics_round_trip():
    metrics = {"k": 5, "queries": 3, "query_source": "x", "split": "none", "recall_k": 10,
               "recall_at_k": 0.9, "latency": {"p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.5},
               "tasks": {"colour": {"map_at_k": math.nan, "precision_at_k": 0.5, "queries": 3,
                                    "per_class": {"Red": {"map_at_k": 1.0,
                                                          "precision_at_k": 1.0,
                                                          "queries": 1}}}}}
    manifest = IndexManifest.model_validate({"metrics": metrics, "counts": {"items_indexed": 3}})
    assert manifest.metrics.tasks["colour"].per_class["Red"].queries == 1
    assert manifest.items_indexed == 3
    dumped = manifest.as_dict()["metrics"]
    assert dumped["latency"] == metrics["latency"] and dumped["recall_at_k"] == 0.9


def test_checkpoint_meta_names_missing_keys_and_keeps_unknown_ones():
    assert missing_meta({"backbone": "x"})[:1] == ["format"]
    assert missing_meta(None) == missing_meta({})
    meta = CheckpointMeta.model_validate(
        {"format": 1, "backbone": "b", "preprocess": {"input_size": 32}, "embedding_dim": 0,
         "head_type": "cosine", "layer_to_get_input": "heads", "tasks": {"t": ["a"]},
         "split": {"test": [1, "2"], "strategy": "s"}, "catalog_checksum": "c", "extra": 1})
    assert meta.test_ids == {"1", "2"} and meta.split_strategy == "s" and not meta.trim_border
    assert meta.as_dict()["extra"] == 1 and "vector_mean" not in meta.as_dict()


def test_the_fingerprint_holds_index_time_settings_only(tmp_path):
    config = load_config(write_demo_config(tmp_path))
    Path(config.paths.images_dataframe_path).write_text("id\n1\n")

    class Model:
        checksum = "m"
        checkpoint = CheckpointMeta.model_validate(
            {"backbone": "b", "preprocess": {"input_size": 32}, "embedding_dim": 0,
             "head_type": "cosine", "layer_to_get_input": "heads", "tasks": {}})
        preprocess_signature = checkpoint.preprocess

    printed = index_fingerprint(config, Model())
    assert set(printed) == set(IndexFingerprint.model_fields)
    assert "indexThreadQty" not in printed["index_time"] and "efSearch" not in str(printed)
