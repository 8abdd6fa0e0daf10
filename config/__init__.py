"""Typed, validated configuration: load `config.yml` once and pass the object down."""

from config.loader import ConfigError, load_config
from config.schema import AppConfig

__all__ = ["AppConfig", "ConfigError", "load_config"]
