"""Read and validate the catalog table; import the Kaggle layout (`-m ingest.catalog`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from config import AppConfig, ConfigError, load_config
from util.files import atomic_path
from util.urls import is_http_url

log = logging.getLogger(__name__)

KAGGLE_COLUMNS = [
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", "productDisplayName",
]


class CatalogError(ValueError):
    """The catalog table cannot be used; the message says why and what exists."""


def read_table(table_path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet table with every column as text (ids stay exactly as written)."""
    suffix = table_path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(table_path).astype("string").astype(object)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(table_path, dtype=str, keep_default_na=False, na_values=[""])
    raise ConfigError(
        f"paths.images_dataframe_path: unsupported table type '{suffix}' (use .csv or .parquet)"
    )


def load_catalog(config: AppConfig) -> pd.DataFrame:
    """Load and check the table; add `image_ref`: a resolved local path or a URL."""
    table_path = Path(config.paths.images_dataframe_path)
    if not table_path.is_file():
        raise ConfigError(f"paths.images_dataframe_path: file not found: {table_path}")
    table = read_table(table_path)
    check_columns(table, config)
    if table.empty:
        raise CatalogError(f"{table_path}: the catalog is empty (no rows)")
    items = normalize_items(table, config)
    check_unique_ids(items, table_path)
    items["image_ref"] = [resolve_ref(ref, table_path.parent) for ref in items["image_path"]]
    log.info("catalog %s: %d items", table_path, len(items))
    return items


def check_columns(table: pd.DataFrame, config: AppConfig) -> None:
    frame = config.dataframe
    wanted = {"dataframe.id_field": [frame.id_field],
              "dataframe.name_field": [frame.name_field],
              "dataframe.path_field": [frame.path_field],
              "dataframe.label_fields": frame.label_fields}
    if frame.product_url_field:
        wanted["dataframe.product_url_field"] = [frame.product_url_field]
    for key, columns in wanted.items():
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise CatalogError(
                f"{key}: column(s) {missing} not in the catalog table; its columns are: "
                f"{', '.join(map(str, table.columns))}"
            )


def normalize_items(table: pd.DataFrame, config: AppConfig) -> pd.DataFrame:
    """The item table with canonical column names: id, name, image_path, labels, product_url."""
    frame = config.dataframe
    items = pd.DataFrame({
        "id": table[frame.id_field].astype(str).str.strip(),
        "name": table[frame.name_field].fillna("").astype(str),
        "image_path": table[frame.path_field].fillna("").astype(str).str.strip(),
    })
    for column in frame.label_fields:
        items[column] = table[column].astype(object).where(table[column].notna(), None)
    if frame.product_url_field:
        items["product_url"] = table[frame.product_url_field].fillna("").astype(str)
    return items.reset_index(drop=True)


def check_unique_ids(items: pd.DataFrame, table_path: Path) -> None:
    empty = items["id"].eq("") | items["id"].eq("nan")
    if empty.any():
        raise CatalogError(f"{table_path}: {int(empty.sum())} row(s) have an empty id")
    duplicated = items["id"][items["id"].duplicated()].unique()
    if len(duplicated):
        sample = ", ".join(duplicated[:10])
        raise CatalogError(f"{table_path}: {len(duplicated)} duplicate id(s), e.g. {sample}")


def resolve_ref(image_path: str, table_dir: Path) -> str:
    if not image_path or is_http_url(image_path):
        return image_path
    path = Path(image_path).expanduser()
    return str(path if path.is_absolute() else (table_dir / path).resolve())


def localize_images(items: pd.DataFrame, config: AppConfig) -> tuple[list[str], list[str]]:
    """A local file per item (URLs downloaded once into the cache) and a reason per failure."""
    refs = items["image_ref"].tolist()
    paths, reasons = list(refs), ["" if ref else "no image path" for ref in refs]
    url_rows = [row for row, ref in enumerate(refs) if ref and is_http_url(ref)]
    if url_rows:
        from ingest.bulk import download_catalog_images

        results = download_catalog_images([refs[row] for row in url_rows],
                                          Path(config.paths.image_cache_path), config.download)
        for row, result in zip(url_rows, results, strict=True):
            paths[row] = str(result.path) if result.path else ""
            reasons[row] = "" if result.path else f"download failed: {result.reason}"
    return paths, reasons


@dataclass
class ImportReport:
    rows_read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def read_kaggle_styles(styles_path: Path) -> tuple[pd.DataFrame, ImportReport]:
    """Parse styles.csv, whose last field (the name) may contain unquoted commas."""
    report = ImportReport()
    lines = styles_path.read_text(encoding="utf-8").splitlines()
    header = lines[0].strip().split(",")
    if header != KAGGLE_COLUMNS:
        raise CatalogError(f"{styles_path}: unexpected header {header}, expected {KAGGLE_COLUMNS}")
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        report.rows_read += 1
        fields = line.split(",", len(KAGGLE_COLUMNS) - 1)
        if len(fields) != len(KAGGLE_COLUMNS) or not fields[0].strip().isdigit():
            report.drop("malformed row")
            continue
        rows.append([value.strip() for value in fields])
    return pd.DataFrame(rows, columns=KAGGLE_COLUMNS), report


def import_kaggle(source: Path, out_table: Path) -> ImportReport:
    """Write a catalog table from the Kaggle layout, keeping products whose image exists."""
    styles, report = read_kaggle_styles(source / "styles.csv")
    image_dir = (source / "images").resolve()
    existing = {path.stem for path in image_dir.glob("*.jpg")}
    has_image = styles["id"].isin(existing)
    for _ in range(int((~has_image).sum())):
        report.drop("no image file")
    kept = styles[has_image].copy()
    kept["image_path"] = [str(image_dir / f"{item_id}.jpg") for item_id in kept["id"]]
    kept = kept.mask(kept.eq(""))
    report.kept = len(kept)
    out_table.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_table) as temporary:
        kept.to_csv(temporary, index=False)
    return report


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.catalog", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import-kaggle", help="import the Kaggle fashion layout")
    importer.add_argument("source", type=Path, help="folder with styles.csv and images/")
    importer.add_argument("--config", type=Path, default=None, help="writes its catalog table")
    importer.add_argument("--out", type=Path, default=None, help="table path (overrides config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = args.out or load_config(args.config).paths.images_dataframe_path
        if not (args.source / "styles.csv").is_file():
            raise CatalogError(f"{args.source}: no styles.csv here (expected the Kaggle layout)")
        report = import_kaggle(args.source, Path(out))
    except (ConfigError, CatalogError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"table": str(out), **report.__dict__}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
