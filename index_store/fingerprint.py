"""Index fingerprints compared key by key: what changed since the index was built."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from index_store.base import IndexStaleError


def plain(value: Any) -> Any:
    """JSON-normalised value (tuples → lists, Paths → str) so saved and fresh values compare."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def fingerprint_diff(built: Mapping[str, Any], expected: Mapping[str, Any]
                     ) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (built value, expected value)} for every expected key that differs.

    Keys only in `built` are ignored; a key missing from `built` reads as None.
    """
    old, new = _flatten(plain(dict(built))), _flatten(plain(dict(expected)))
    return {key: (old.get(key), value) for key, value in new.items() if old.get(key) != value}


def check_fingerprint(manifest: dict, expected: Mapping[str, Any] | None, root: Path) -> None:
    if expected is None:
        return
    differences = fingerprint_diff(manifest.get("fingerprint") or {}, expected)
    if differences:
        listed = "; ".join(f"{key}: built with {old!r}, now {new!r}"
                           for key, (old, new) in sorted(differences.items()))
        raise IndexStaleError(f"The index at {root} is out of date ({listed}).")
