"""util/: file hashing, atomic writes with unique temporary names, the http(s) check."""

from __future__ import annotations

import hashlib
import threading

import pytest

from tests.fixtures_http import make_test_image
from util.files import atomic_path, atomic_write_bytes, atomic_write_text, sha256_of
from util.urls import is_http_url


def test_sha256_of_bytes_and_file_agree(tmp_path):
    data = make_test_image("red")
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    assert sha256_of(data) == sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    atomic_write_text(path, "old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_two_writers_never_share_a_temporary_name(tmp_path):
    path = tmp_path / "catalog.csv"
    names, barrier = [], threading.Barrier(2)

    def write(text: str) -> None:
        with atomic_path(path) as temporary:
            names.append(temporary.name)
            temporary.write_text(text)
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=write, args=(text,)) for text in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 2 and path.read_text() in ("a", "b")


def test_is_http_url():
    assert is_http_url("https://shop.example/p") and is_http_url("HTTP://x")
    assert not is_http_url("javascript:alert(1)") and not is_http_url("images/1.jpg")
    assert not is_http_url(None)
