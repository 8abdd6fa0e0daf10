"""Backend registry: config names (`backend: nmslib | exact | milvus`) to classes; factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from index_store.base import Backend
from index_store.exact import ExactBackend
from index_store.milvus_backend import MilvusBackend
from index_store.nmslib_hnsw import NmslibHnswBackend

BACKENDS: dict[str, type[Backend]] = {
    ExactBackend.name: ExactBackend,
    NmslibHnswBackend.name: NmslibHnswBackend,
    MilvusBackend.name: MilvusBackend,
}


def backend_class(name: str) -> type[Backend]:
    """The class registered under name; ValueError listing the allowed names otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown index backend {name!r}; allowed: "
                         f"{', '.join(sorted(BACKENDS))}") from None


def make_backend(name: str, space: str, index_params: Mapping[str, Any] | None = None,
                 query_params: Mapping[str, Any] | None = None, **options: Any) -> Backend:
    """An unbuilt backend; call `build(vectors)` (or use `IndexStore.build`). options: the
    backend's own settings (milvus: `settings=MilvusConfig(...)`)."""
    return backend_class(name)(space, dict(index_params or {}), dict(query_params or {}),
                               **options)
