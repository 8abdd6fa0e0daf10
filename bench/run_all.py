"""Runs every benchmark script in bench/ in turn, saving each one's JSON under docs/benchmarks/."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import OUT_DIR

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"common.py", "run_all.py", "baselines.py"}


def discover(names: list[str] | None = None) -> list[Path]:
    """bench/*.py except the helpers (and files starting with _), optionally only `names`."""
    scripts = sorted(p for p in HERE.glob("*.py")
                     if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))
    if names:
        scripts = [p for p in scripts if p.stem in names]
    return scripts


def accepts(script: Path, option: str) -> bool:
    """Whether the script defines a command-line option (read from its source, no import)."""
    return f'"{option}"' in script.read_text()


def command(script: Path, args: argparse.Namespace) -> list[str]:
    line = [sys.executable, str(script), "--json"]
    if args.quick:
        line.append("--quick")
    if args.config and accepts(script, "--config"):
        line += ["--config", str(args.config)]
    if accepts(script, "--out"):
        line += ["--out", str(args.out)]
    if args.config and accepts(script, "--vectors"):
        line += catalog_index_args(args.config)
    return line


def catalog_index_args(config_path: Path) -> list[str]:
    """--vectors/--items/--label of the config's current index (none if it has no index yet)."""
    from config import load_config
    from index_store.store import current_version

    config = load_config(config_path)
    root = Path(config.paths.ann_index_path)
    version = current_version(root) if root.exists() else None
    if not version or not config.training.tasks:
        return []
    folder = root / "versions" / version
    return ["--vectors", str(folder / "vectors.npy"), "--items", str(folder / "items.parquet"),
            "--label", config.training.tasks[0].column]


def run_one(script: Path, args: argparse.Namespace) -> dict:
    """Run one script (its stderr shows as progress) and save its JSON as <out>/<name>.json."""
    print(f"=== {script.stem}: {' '.join(command(script, args)[1:])}", file=sys.stderr,
          flush=True)
    began = time.perf_counter()
    done = subprocess.run(command(script, args), stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - began
    entry = {"name": script.stem, "seconds": round(seconds, 1), "returncode": done.returncode}
    try:
        result = json.loads(done.stdout)
    except ValueError:
        return {**entry, "ok": False, "error": "did not print JSON with --json"}
    path = args.out / f"{script.stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return {**entry, "ok": done.returncode == 0, "json": str(path),
            "summary": result.get("summary", []) if isinstance(result, dict) else []}


def print_summary(entries: list[dict]) -> None:
    print("\nbenchmark summary")
    for entry in entries:
        state = "ok" if entry["ok"] else f"FAILED (exit {entry['returncode']})"
        where = entry.get("json") or entry.get("error", "")
        print(f"- {entry['name']}: {state} in {entry['seconds']:.0f} s → {where}")
        lines = entry.get("summary") or []
        for line in [lines] if isinstance(lines, str) else lines:
            print(f"    {line}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="passed to the scripts that take --config")
    parser.add_argument("--quick", action="store_true", help="passed to every script")
    parser.add_argument("--only", type=lambda s: s.split(","), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where the JSON files go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scripts = discover(args.only)
    if not scripts:
        print("no benchmark scripts found", file=sys.stderr)
        return 1
    entries = [run_one(script, args) for script in scripts]
    print_summary(entries)
    return 0 if all(entry["ok"] for entry in entries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
