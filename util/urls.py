"""The one "is this an http(s) link" check."""

from __future__ import annotations


def is_http_url(value: object) -> bool:
    """True for text starting with http:// or https:// (any case)."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))
