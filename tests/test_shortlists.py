"""The server-side shortlist store: one file per browser id, atomic and locked updates."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.shortlists import ShortlistStore, new_owner, valid_owner


def row(item_id: str) -> dict:
    return {"id": item_id, "name": f"Product {item_id}", "image_url": "", "product_url": ""}


def test_each_browser_keeps_its_own_list_across_store_objects(tmp_path):
    alice, bob = new_owner(), new_owner()
    assert alice != bob and valid_owner(alice) == alice
    store = ShortlistStore(tmp_path / "shortlists")
    store.toggle(alice, row("1"))
    store.toggle(alice, row("2"))
    store.toggle(bob, row("3"))
    again = ShortlistStore(tmp_path / "shortlists")  # what a restarted server opens
    assert list(again.load(alice)) == ["1", "2"]
    assert list(again.load(bob)) == ["3"]
    assert again.toggle(alice, row("1")) == {"2": row("2")}  # a second toggle removes it
    assert again.clear(bob) == {} and again.load(bob) == {}
    assert json.loads((tmp_path / "shortlists" / f"{alice}.json").read_text()) == [row("2")]


@pytest.mark.parametrize("owner", ["../../etc/passwd", "short", "", None, "a/b" * 10,
                                   "x" * 65])
def test_ids_that_are_not_ours_are_refused(tmp_path, owner):
    assert valid_owner(owner) is None
    with pytest.raises(ValueError, match="not a shortlist id"):
        ShortlistStore(tmp_path).load(owner)


def test_concurrent_changes_are_never_lost(tmp_path):
    """Many tabs (threads) adding at once: every addition is kept, no file is ever half written."""
    owner = new_owner()
    store = ShortlistStore(tmp_path)
    seen_broken = threading.Event()

    def add(index: int) -> None:
        ShortlistStore(tmp_path).toggle(owner, row(str(index)))
        try:
            json.loads((tmp_path / f"{owner}.json").read_text())
        except ValueError:
            seen_broken.set()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(64)))
    assert sorted(store.load(owner), key=int) == [str(i) for i in range(64)]
    assert not seen_broken.is_set()
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unreadable_file_starts_empty(tmp_path):
    owner = new_owner()
    (tmp_path / f"{owner}.json").write_text("{not json")
    store = ShortlistStore(tmp_path)
    assert store.load(owner) == {}
    assert list(store.toggle(owner, row("5"))) == ["5"]
