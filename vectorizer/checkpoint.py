"""Save and safely load checkpoints: weights plus all that rebuilds model and preprocessing."""

from __future__ import annotations

from pathlib import Path

import torch

from config import AppConfig, ConfigError
from util.files import atomic_path
from vectorizer.model import MultiTaskNet
from vectorizer.preprocess import Preprocess

FORMAT_VERSION = 1
REQUIRED_META = ("format", "backbone", "preprocess", "embedding_dim", "head_type",
                 "layer_to_get_input", "tasks", "split", "catalog_checksum")


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, or does not fit the config."""


def build_model(meta: dict) -> MultiTaskNet:
    preprocess = Preprocess.from_dict(meta["preprocess"])
    classes = {task: len(names) for task, names in meta["tasks"].items()}
    return MultiTaskNet(meta["backbone"], classes, meta["embedding_dim"], meta["head_type"],
                        preprocess.mean, preprocess.std)


def save_checkpoint(path: Path, model: MultiTaskNet, meta: dict) -> None:
    """Write atomically: a unique temporary file, fsync, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save({"meta": {**meta, "format": FORMAT_VERSION}, "state_dict": state}, temporary)


def load_checkpoint(path: Path) -> tuple[MultiTaskNet, dict]:
    """Rebuild the model in eval mode from a checkpoint, loaded with weights_only=True."""
    if not Path(path).is_file():
        raise CheckpointError(f"paths.trained_model_path: no checkpoint at {path}; train one with "
                              "`python -m vectorizer.train --config <config>`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {missing})")
    model = build_model(meta)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), meta


def check_config_matches(config: AppConfig, meta: dict, path: Path) -> None:
    """At indexing and query time the checkpoint decides; a conflicting config value is an error."""
    pairs = {
        "model.backbone": (config.model.backbone, meta["backbone"]),
        "model.input_size": (config.model.input_size, meta["preprocess"]["input_size"]),
        "model.trim_border": (config.model.trim_border,
                              bool(meta["preprocess"].get("trim_border", False))),
        "model.layer_to_get_input": (config.model.layer_to_get_input, meta["layer_to_get_input"]),
        "model.embedding_dim": (config.model.embedding_dim, meta["embedding_dim"]),
        "model.head_type": (config.model.head_type, meta["head_type"]),
        "model.pretrained_weights": (config.model.pretrained_weights,
                                     meta.get("pretrained_weights")),
    }
    for key, (configured, trained) in pairs.items():
        if configured != trained:
            raise ConfigError(
                f"{key}: config says {configured!r} but the checkpoint {path} was trained with "
                f"{trained!r}; set {key}: {trained} or retrain with "
                f"`python -m vectorizer.train --config {config.config_path}`")
