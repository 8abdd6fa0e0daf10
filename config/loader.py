"""Read YAML into an AppConfig; every problem becomes a ConfigError naming the key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.schema import AppConfig, PathsConfig

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.yml"


class ConfigError(ValueError):
    """A config mistake; the message names the YAML key and what is wrong with it."""


def load_config(path: str | Path | None = None) -> AppConfig:
    """Load, validate and resolve one config file; relative paths resolve against its folder."""
    config_path = Path(path or DEFAULT_CONFIG_PATH).expanduser().resolve()
    if not config_path.is_file():
        raise ConfigError(f"--config: file not found: {config_path}")
    raw = _read_yaml(config_path)
    try:
        config = AppConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, config_path)) from None
    config.config_path = config_path
    _resolve_paths(config, config_path.parent)
    log.debug("loaded config %s", config_path)
    return config


def require_file(config: AppConfig, key: str) -> Path:
    """Return paths.<key>, raising a ConfigError naming the key if the file does not exist."""
    file_path = getattr(config.paths, key)
    if not Path(file_path).is_file():
        raise ConfigError(f"paths.{key}: file not found: {file_path}")
    return Path(file_path)


def _read_yaml(config_path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{config_path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping of sections at the top level")
    return raw


def _resolve_paths(config: AppConfig, base: Path) -> None:
    for key in PathsConfig.model_fields:
        value = getattr(config.paths, key)
        if not value.is_absolute():
            setattr(config.paths, key, (base / value).resolve())
    uri = config.milvus.uri
    if not uri:  # Milvus Lite beside the index folder's other files
        config.milvus.uri = str(Path(config.paths.ann_index_path) / "milvus.db")
    elif config.milvus.is_lite and not Path(uri).expanduser().is_absolute():
        config.milvus.uri = str((base / Path(uri).expanduser()).resolve())
    weights = config.model.pretrained_weights
    if weights not in (None, "imagenet") and not Path(weights).is_absolute():
        config.model.pretrained_weights = str((base / weights).resolve())


def _format_errors(error: ValidationError, config_path: Path) -> str:
    lines = [_format_one(item) for item in error.errors()]
    return f"{config_path}: invalid config\n  " + "\n  ".join(lines)


def _format_one(item: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in item["loc"]) or "(top level)"
    kind, ctx, value = item["type"], item.get("ctx") or {}, item.get("input")
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        symbol, name = bounds[kind]
        return f"{key}: must be {symbol} {ctx[name]}, got {value!r}"
    if kind == "literal_error":
        return f"{key}: must be one of {ctx.get('expected')}, got {value!r}"
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(item["loc"][:-1]))
        return f"{key}: unknown key; allowed here: {allowed}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "value_error":
        message = str(ctx.get("error", item["msg"]))
        return message if key == "(top level)" else f"{key}: {message}"
    return f"{key}: {item['msg']}, got {value!r}"


def _allowed_keys(parent_loc: tuple) -> list[str]:
    """The keys a section accepts, found by walking the schema along the error's location."""
    model: Any = AppConfig
    for part in parent_loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = getattr(annotation, "__args__", (annotation,))[0]
    return [name for name in model.model_fields if name != "config_path"]
