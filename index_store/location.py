"""Where a config's index lives: a folder of versions (nmslib, exact) or a Milvus deployment
(milvus). Building, saving, loading and watching the version go through here, so the scripts
and the app never branch on the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.schema import AppConfig
from index_store.backends import make_backend
from index_store.base import Backend
from index_store.milvus_store import MilvusStore, publish
from index_store.milvus_store import current_version as milvus_version
from index_store.store import IndexStore, current_version

SearchableStore = IndexStore | MilvusStore


def index_params(config: AppConfig) -> dict[str, Any]:
    """The backend's index-time parameters (what the fingerprint records)."""
    if config.backend == "milvus":
        return {"index_type": config.milvus.index_type, **config.milvus.index_params}
    return config.ann_index.index_time.model_dump()


def query_params(config: AppConfig) -> dict[str, Any]:
    """The backend's query-time parameters (never fingerprinted)."""
    if config.backend == "milvus":
        return {"ef": config.milvus.ef, "nprobe": config.milvus.nprobe}
    return config.ann_index.query_time.model_dump()


def new_backend(config: AppConfig) -> Backend:
    """An unbuilt backend as the config describes it."""
    options = {"settings": config.milvus} if config.backend == "milvus" else {}
    return make_backend(config.backend, config.ann_index.init_time.space, index_params(config),
                        query_params(config), **options)


def index_version(config: AppConfig) -> str | None:
    """The version in use (a cheap read: CURRENT, or the Milvus alias); None when none."""
    if config.backend == "milvus":
        return milvus_version(config.milvus)
    return current_version(Path(config.paths.ann_index_path))


def save_index(store: IndexStore, config: AppConfig) -> str:
    """Publish a built store where the config says (atomic switch, old versions pruned)."""
    if config.backend == "milvus":
        return publish(store, config.milvus)
    return store.save(Path(config.paths.ann_index_path)).name


def load_index(config: AppConfig, expected: dict | None = None) -> SearchableStore:
    """The version in use, checked against `expected` (the fingerprint), query params set."""
    if config.backend == "milvus":
        return MilvusStore.open(config.milvus, expected, config_path=config.config_path,
                                query_params=query_params(config))
    return IndexStore.load(Path(config.paths.ann_index_path), expected,
                           config_path=config.config_path, query_params=query_params(config))
