"""Judgments: the SQLite store (WAL, 8 concurrent writers, locked / read-only databases), judged
precision per index version, and re-scoring approved matches against a new index."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from build_index import build
from judgments.scores import judged_precision, rescore
from judgments.store import Judgment, JudgmentStore, JudgmentsUnavailable
from tests.fixtures_demo import ROOT, write_demo_config

WRITERS = 8
EACH = 40


def verdict(result: str, value: int, version: str = "v1", rank: int = 1, query: str = "q",
            **fields) -> Judgment:
    return Judgment(query_kind="url", query_ref=query, result_id=result, rank=rank,
                    distance=0.1 * rank, verdict=value, index_version=version, **fields)


def test_verdicts_are_stored_with_every_field_and_wal_is_on(tmp_path):
    store = JudgmentStore(tmp_path / "sub" / "judgments.sqlite")
    assert store.table().empty  # no file yet: no judgments, no error
    store.add(verdict("a", 1, query_hash="abc", crop="1,2,30,40", filters={"colour": ["red"]}),
              query_image=b"jpeg")
    table = store.table()
    row = table.iloc[0].to_dict()
    assert (row["query_kind"], row["query_ref"], row["query_hash"], row["crop"]) == (
        "url", "q", "abc", "1,2,30,40")
    assert (row["result_id"], row["rank"], row["verdict"], row["index_version"]) == (
        "a", 1, 1, "v1")
    assert row["filters"] == '{"colour": ["red"]}' and row["judged_at"].endswith("+00:00")
    assert store.query_image("abc|1,2,30,40") == b"jpeg"
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_judged_precision_per_version_counts_the_latest_verdict_within_k(tmp_path):
    store = JudgmentStore(tmp_path / "j.sqlite")
    for judgment in [verdict("a", 1), verdict("b", -1, rank=2), verdict("b", 1, rank=2),
                     verdict("c", -1, rank=3), verdict("far", -1, rank=9),
                     verdict("a", -1, version="v2"), verdict("b", 1, version="v2", rank=2)]:
        store.add(judgment)
    scores = judged_precision(store.table(), k=5).set_index("index_version")
    assert scores.loc["v1", ["judged", "up", "down"]].tolist() == [3, 2, 1]  # b: up wins
    assert scores.loc["v1", "precision_at_5"] == pytest.approx(2 / 3)
    assert scores.loc["v2", "precision_at_5"] == pytest.approx(1 / 2)
    assert list(scores.index) == ["v1", "v2"]


def test_rescore_counts_approved_matches_the_new_index_still_returns():
    import pandas as pd

    rows = [dict(verdict(r, v, query=q).row("t"), id=i)
            for i, (q, r, v) in enumerate([("q1", "a", 1), ("q1", "b", 1), ("q1", "c", -1),
                                           ("q2", "d", 1), ("q2", "d", -1),  # changed mind
                                           ("q3", "e", 1), ("gone", "f", 1)])]
    answers = {"q1": ["a", "x", "y"], "q3": ["z"], "gone": None}
    asked = []

    def top_k(query: dict, k: int):
        asked.append((query["query_ref"], k))
        return answers[query["query_ref"]]

    scores = rescore(pd.DataFrame(rows), top_k, k=3)
    assert scores == {"k": 3, "approved": 4, "asked": 3, "retained": 1, "share": 1 / 3,
                      "unanswerable": 1}
    assert sorted(asked) == [("gone", 3), ("q1", 3), ("q3", 3)]


WRITER = """
import sys
from judgments.store import Judgment, JudgmentStore
store = JudgmentStore(sys.argv[1], busy_timeout_s=30)
for n in range(int(sys.argv[3])):
    store.add(Judgment(query_kind="url", query_ref=f"writer {sys.argv[2]}", result_id=str(n),
                       rank=1, distance=0.1, verdict=1, index_version="v"), b"img" * 100)
"""


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "judgments.sqlite"
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(EACH)],
                                  cwd=ROOT, stderr=subprocess.PIPE)
                 for n in range(WRITERS)]
    store = JudgmentStore(path, busy_timeout_s=30)
    threads = [threading.Thread(target=lambda n=n: [store.add(verdict(str(i), 1, query=f"t{n}"))
                                                   for i in range(EACH)])
               for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read().decode()
    table = store.table()
    assert len(table) == 2 * WRITERS * EACH
    assert table.groupby("query_ref").size().eq(EACH).all()
    assert table["id"].is_unique


def test_a_locked_database_is_a_message_not_a_crash(tmp_path):
    store = JudgmentStore(tmp_path / "j.sqlite", busy_timeout_s=0.2)
    store.add(verdict("a", 1))
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JudgmentsUnavailable, match=r"locked by another program.*") as error:
            JudgmentStore(store.path, busy_timeout_s=0.2).add(verdict("b", 1))
        assert "paths.judgments_path" in str(error.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(store.table()) == 1


def make_read_only(path: Path) -> None:
    """Read-only for this process: chmod, and for root (whom modes do not stop) chattr +i."""
    for target in (path, path.parent):
        target.chmod(0o555 if target.is_dir() else 0o444)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path), str(path.parent)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot make a file read-only as root here: {done.stderr.decode()}")


def undo_read_only(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path), str(path.parent)], capture_output=True)
    for target in (path.parent, path):
        target.chmod(0o755 if target.is_dir() else 0o644)


def test_a_read_only_or_unopenable_database_is_a_message(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    store = JudgmentStore(folder / "j.sqlite")
    store.add(verdict("a", 1))
    with sqlite3.connect(store.path) as connection:  # fold the WAL in: a plain file remains
        connection.execute("PRAGMA journal_mode=DELETE")
    make_read_only(store.path)
    try:
        with pytest.raises(JudgmentsUnavailable, match=r"read-only|cannot be opened"):
            JudgmentStore(store.path).add(verdict("b", 1))
    finally:
        undo_read_only(store.path)
    (tmp_path / "a-folder.sqlite").mkdir()
    with pytest.raises(JudgmentsUnavailable, match="cannot be opened"):
        JudgmentStore(tmp_path / "a-folder.sqlite").add(verdict("c", 1))


def test_build_rescores_the_judgments_against_the_new_index(tmp_path, demo_env):
    import pandas as pd

    config_path = write_demo_config(
        tmp_path, paths__images_dataframe_path=str(demo_env.config.paths.images_dataframe_path),
        paths__trained_model_path=str(demo_env.config.paths.trained_model_path),
        paths__vectors_path=str(demo_env.config.paths.vectors_path))
    from config import load_config
    from search import SearchService

    config = load_config(config_path)
    build(config, quiet=True)
    service = SearchService.load(config)
    items = pd.read_csv(config.paths.images_dataframe_path, dtype=str)
    store = JudgmentStore(config.paths.judgments_path)
    for item_id in items["id"][:4]:
        results = service.search_item(item_id, 5, colour="any").results
        store.add(Judgment(query_kind="item", query_ref=item_id, result_id=results["id"][0],
                           rank=1, distance=float(results["distance"][0]), verdict=1,
                           index_version=service.store.version, colour="any"))
    store.add(Judgment(query_kind="item", query_ref="no-such-product", result_id="x", rank=1,
                       distance=0.5, verdict=1, index_version=service.store.version))
    summary = build(config, quiet=True)
    judged = summary["judgments"]
    assert (judged["approved"], judged["asked"], judged["unanswerable"]) == (5, 4, 1)
    assert judged["retained"] == 4 and judged["share"] == 1.0  # same model: all still there
    manifest = SearchService.load(config).manifest
    assert manifest.judgments.retained == 4
