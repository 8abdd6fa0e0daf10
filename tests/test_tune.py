"""HNSW tuning: the pick reaches the target and is the fastest that does; the --tune CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from index_store.exact import exact_knn
from index_store.tune import tie_aware_hits, tune
from tests.fixtures_demo import ROOT, write_demo_config

SMALL_GRID = {"grid_M": (4, 8, 16), "grid_efConstruction": (50, 100),
              "grid_efSearch": (5, 10, 20, 40, 80)}


def clustered_catalog(n: int = 3000, dim: int = 32, clusters: int = 30, seed: int = 0
                      ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    points = centers[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def report():
    return tune(clustered_catalog(), "cosinesimil", target_recall=0.95, n_queries=200,
                threads=1, **SMALL_GRID)


def test_pick_reaches_the_target_and_is_the_fastest_that_does(report):
    assert len(report.rows) == 3 * 2 * 5
    reaching = [row for row in report.rows if row.recall >= 0.95]
    assert report.best is not None and report.best.recall >= 0.95
    assert report.best.p50_ms == min(row.p50_ms for row in reaching)
    assert any(row.recall < 0.95 for row in report.rows), "grid too easy to test anything"
    assert all(0 <= row.recall <= 1 and row.p99_ms >= row.p50_ms > 0 for row in report.rows)
    assert all(row.build_s > 0 and row.index_bytes > 0 for row in report.rows)


def test_output_holds_the_table_and_the_config_lines(report):
    text = report.text()
    best = report.best
    assert "**fastest at target**" in text and "| M | efConstruction | efSearch |" in text
    assert (f"ann_index:\n  index_time:\n    M: {best.M}\n    efConstruction: "
            f"{best.efConstruction}\n  query_time:\n    efSearch: {best.efSearch}") in text
    assert report.to_dict()["chosen"]["efSearch"] == best.efSearch


def test_unreachable_target_says_so_and_offers_the_best_recall():
    hard = tune(clustered_catalog(n=1500), "l2", grid_M=(2,), grid_efConstruction=(2,),
                grid_efSearch=(1,), target_recall=1.0, n_queries=200, threads=1)
    assert hard.best is None
    assert hard.chosen is hard.best_recall
    assert "No setting reaches" in hard.text() and "efSearch:" in hard.text()


def test_ground_truth_excludes_the_query_row_and_counts_duplicates_as_hits():
    vectors = clustered_catalog(n=200, dim=8)
    vectors[11] = vectors[12] = vectors[10]  # one image three times: equally near row 10
    rows, distances = exact_knn(vectors, vectors[[10]], 1, "cosinesimil", own_rows=np.array([10]))
    assert rows[0, 0] == 11 and distances[0, 0] == pytest.approx(0, abs=1e-6)
    kth = float(distances[0, -1])
    assert tie_aware_hits(vectors, vectors[10], np.array([12]), kth, 1, "cosinesimil") == 1
    assert tie_aware_hits(vectors, vectors[10], np.array([13]), kth, 1, "cosinesimil") == 0


def run_tune_cli(config_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "build_index.py", "--tune", "--quick", "--config",
                           str(config_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_cli_tunes_the_built_demo_index(demo_env):
    result = run_tune_cli(demo_env.config_path)
    assert result.returncode == 0, result.stderr
    assert "efSearch:" in result.stdout and "current config" in result.stdout


def test_cli_without_a_built_index_says_to_build_it_first(tmp_path):
    result = run_tune_cli(write_demo_config(tmp_path))
    assert result.returncode == 2
    assert "No built index" in result.stderr and "build_index.py --config" in result.stderr
    assert "Traceback" not in result.stderr
