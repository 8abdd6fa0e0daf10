"""Save and safely load checkpoints: weights plus all that rebuilds model and preprocessing."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import ValidationError

from config import AppConfig, ConfigError
from contracts import CheckpointMeta, missing_meta
from util.files import atomic_path
from vectorizer.model import MultiTaskNet
from vectorizer.preprocess import Preprocess

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, or does not fit the config."""


def build_model(meta: CheckpointMeta) -> MultiTaskNet:
    preprocess = Preprocess.from_dict(meta.preprocess)
    classes = {task: len(names) for task, names in meta.tasks.items()}
    return MultiTaskNet(meta.backbone, classes, meta.embedding_dim, meta.head_type,
                        preprocess.mean, preprocess.std, meta.head_scale, meta.neck_hidden)


def save_checkpoint(path: Path, model: MultiTaskNet, meta: dict) -> None:
    """Write atomically: a unique temporary file, fsync, then os.replace; meta is checked
    against `CheckpointMeta` first, so every checkpoint carries what loading needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checked = CheckpointMeta.model_validate({**meta, "format": FORMAT_VERSION}).as_dict()
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save({"meta": checked, "state_dict": state}, temporary)


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
    missing = missing_meta(meta)
    if missing or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {missing})")
    try:
        typed = CheckpointMeta.model_validate(meta)
    except ValidationError as error:
        raise CheckpointError(f"{path}: not a checkpoint of this project ({error})") from None
    model = build_model(typed)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), meta


def check_config_matches(config: AppConfig, meta: CheckpointMeta | dict, path: Path) -> None:
    """At indexing and query time the checkpoint decides; a conflicting config value is an error."""
    meta = CheckpointMeta.model_validate(meta)
    pairs = {
        "model.backbone": (config.model.backbone, meta.backbone),
        "model.input_size": (config.model.input_size, meta.preprocess["input_size"]),
        "model.trim_border": (config.model.trim_border, meta.trim_border),
        "model.layer_to_get_input": (config.model.layer_to_get_input, meta.layer_to_get_input),
        "model.embedding_dim": (config.model.embedding_dim, meta.embedding_dim),
        "model.neck_hidden": (config.model.neck_hidden, meta.neck_hidden),
        "model.head_type": (config.model.head_type, meta.head_type),
        "model.head_scale": (config.model.head_scale, meta.head_scale),
        "model.pretrained_weights": (config.model.pretrained_weights, meta.pretrained_weights),
    }
    for key, (configured, trained) in pairs.items():
        if configured != trained:
            raise ConfigError(
                f"{key}: config says {configured!r} but the checkpoint {path} was trained with "
                f"{trained!r}; set {key}: {trained} or retrain with "
                f"`python -m vectorizer.train --config {config.config_path}`")
    check_query_heads(config, meta, path)


def check_query_heads(config: AppConfig, meta: CheckpointMeta, path: Path) -> None:
    """The heads that queries read (the colour control's, label_match's) are in the checkpoint."""
    wanted = {key: column for key, column in (
        ("colour.column", config.colour.column if config.colour.source != "histogram" else None),
        *((f"label_match.weights.{c}", c) for c in config.label_match.weights)) if column}
    for key, column in wanted.items():
        if column not in meta.tasks:
            raise ConfigError(
                f"{key}: the checkpoint {path} has no {column!r} head (its heads: "
                f"{', '.join(meta.tasks)}); retrain with "
                f"`python -m vectorizer.train --config {config.config_path}`")
